"""scripts/paired.sh.

Two parts:

* Launcher logic (fast, always runs): ``PYTHON`` points at a stub interpreter
  (tests/stub_trainer.py, fixture ``stub_env`` in conftest.py) that stands in for ``train.py``
  only (it records each call, writes a contract-3
  ``mini_batch_data.mat`` or fails on request) and runs everything else - the launcher
  itself - with the real Python. This checks argument forwarding, exit
  codes, which run is named as failed, the two-GPU mode and where the comparison goes;
  it says nothing about the trainer. Runs that compare call the launcher's ``main`` in this process
  (its trainers are still processes); the failure and usage-error cases run ``bash scripts/paired.sh``.
* With the real ``train.py``: the launchers share reid/launch/runs.py and jobs.py, whose one launch of the
  real trainer is tests/test_study.py's killed-then-resumed study (a finished run untouched, the
  interrupted one continued). That paired runs of one seed see the same batches is
  tests/test_trainer.py's; that paired.sh passes ``--resume auto`` and the seed to both is below.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from helpers import launch_in_process, stub_calls

REPO = Path(__file__).resolve().parents[1]
PAIRED = REPO / "scripts" / "paired.sh"

pytestmark = pytest.mark.skipif(shutil.which("bash") is None, reason="paired.sh needs bash")


def run_paired(args, env, timeout=120):
    return subprocess.run(["bash", str(PAIRED), *map(str, args)], env=env, capture_output=True, text=True,
                          timeout=timeout, cwd=REPO)


def launch(args, env) -> subprocess.CompletedProcess:
    """paired.sh ARGS with the launcher in this process (tests/helpers.py); its trainers are processes."""
    from reid.launch.paired import main

    return launch_in_process(main, args, env)


def test_paired_both_succeed_forwards_args_and_compares(stub_env):
    tmp_path, env, a, b = stub_env
    r = launch([a, b, "--seed", "7", "--set", "train.epochs=2", "--device", "cpu"], env)
    assert r.returncode == 0, r.stderr
    c = stub_calls(tmp_path)
    assert [Path(x["config"]).stem for x in c] == ["standard", "soft"]  # A then B
    for x in c:
        assert x["resume"] == "auto" and x["device"] == "cpu" and x["cuda"] is None
        assert x["set"] == ["train.epochs=2", "seed=7"]
    out = tmp_path / "outputs"
    png = out / "compare_standard_vs_soft.png"
    assert png.is_file() and png.with_suffix(".md").is_file()
    assert "| standard | standard |" in png.with_suffix(".md").read_text()
    assert f"run A: {out / 'standard'}" in r.stdout and f"run B: {out / 'soft'}" in r.stdout
    assert f"comparison: {png}" in r.stdout


@pytest.mark.parametrize("fail,named", [("soft", ["B"]), ("standard", ["A"]), ("standard,soft", ["A", "B"])])
def test_paired_names_the_failed_runs_and_still_trains_the_other(stub_env, fail, named):
    tmp_path, env, a, b = stub_env
    r = run_paired([a, b, "--seed", "1"], dict(env, STUB_FAIL=fail))
    assert r.returncode == 1
    assert len(stub_calls(tmp_path)) == 2  # the other run is trained even when the first failed
    for label, cfg in (("A", a), ("B", b)):
        msg = f"run {label} ({cfg}) failed with exit code 3"
        assert (msg in r.stderr) == (label in named), r.stderr
    assert "no comparison written" in r.stderr
    assert not list((tmp_path / "outputs").glob("compare_*"))


def test_paired_two_gpus_trains_both_at_once(stub_env):
    tmp_path, env, a, b = stub_env
    rv = tmp_path / "rendezvous"
    rv.mkdir()
    r = launch([a, b, "--gpus", "0,1"], dict(env, STUB_RENDEZVOUS=str(rv)))
    assert r.returncode == 0, r.stdout + r.stderr
    cuda = {Path(x["config"]).stem: x["cuda"] for x in stub_calls(tmp_path)}
    assert cuda == {"standard": "0", "soft": "1"}
    assert "[A] trained standard" in r.stdout and "[B] trained soft" in r.stdout
    assert (tmp_path / "outputs" / "compare_standard_vs_soft.png").is_file()

    # A failure in parallel mode is reported the same way.
    for f in rv.iterdir():
        f.unlink()
    r = launch([a, b, "--gpus", "0,1"], dict(env, STUB_FAIL="soft"))
    assert r.returncode == 1 and f"run B ({b}) failed with exit code 3" in r.stderr
    assert "run A" not in r.stderr


def test_paired_usage_errors(stub_env):
    tmp_path, env, a, b = stub_env
    r = run_paired([a], env)
    assert r.returncode == 2 and "exactly two configs" in r.stderr
    r = run_paired([a, tmp_path / "missing.yaml"], env)
    assert r.returncode == 2 and "missing.yaml not found" in r.stderr
    r = run_paired([a, b, "--set", "output.name=same"], env)
    assert r.returncode == 2 and "both resolve to the run directory" in r.stderr
    r = run_paired([a, b, "--gpus", "0,1,2"], env)
    assert r.returncode == 2 and "one or two ids" in r.stderr
    assert stub_calls(tmp_path) == []  # nothing was trained
