"""scripts/paired.sh.

Two parts:

* Shell logic (fast, always runs): ``PYTHON`` points at a stub interpreter that stands in
  for ``train.py`` only (it answers ``--print-run-dir``, records each call, writes a
  contract-3 ``mini_batch_data.mat`` or fails on request) and runs everything else -
  ``scripts/compare.py`` - with the real Python. This checks argument forwarding, exit
  codes, which run is named as failed, the two-GPU mode and where the comparison goes;
  it says nothing about the trainer.
* ``test_paired_real_trainer_resumes_only_the_unfinished_run``: the real ``train.py`` on
  the demo configs and synthetic data. It is skipped until ``train.py`` exists; once it
  does (with ``--print-run-dir``), it must pass.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PAIRED = REPO / "scripts" / "paired.sh"

pytestmark = pytest.mark.skipif(shutil.which("bash") is None, reason="paired.sh needs bash")

STUB = textwrap.dedent('''\
    #!{python}
    """Stub interpreter for paired.sh tests: fakes train.py, runs anything else for real."""
    import argparse, json, os, sys, time
    from pathlib import Path

    if len(sys.argv) < 2 or not sys.argv[1].endswith("train.py"):
        os.execv(sys.executable, [sys.executable] + sys.argv[1:])

    p = argparse.ArgumentParser()
    p.add_argument("--config", required=True)
    p.add_argument("--set", action="append", default=[])
    p.add_argument("--resume")
    p.add_argument("--device")
    p.add_argument("--print-run-dir", action="store_true")
    a = p.parse_args(sys.argv[2:])
    sets = dict(s.split("=", 1) for s in a.set)
    stem = Path(a.config).stem
    run_dir = Path(sets.get("output.root", os.environ["STUB_ROOT"])) / sets.get("output.name", stem)
    if a.print_run_dir:
        print("some log line the trainer might print")
        print(run_dir)
        sys.exit(0)
    with open(os.environ["STUB_LOG"], "a") as f:
        f.write(json.dumps({{"config": a.config, "set": a.set, "resume": a.resume, "device": a.device,
                            "cuda": os.environ.get("CUDA_VISIBLE_DEVICES")}}) + "\\n")
    if stem in os.environ.get("STUB_FAIL", "").split(","):
        print(f"error: stub failure of {{stem}}", file=sys.stderr)
        sys.exit(3)
    rendezvous = os.environ.get("STUB_RENDEZVOUS")
    if rendezvous:  # both trainers must be running at the same time
        Path(rendezvous, "started_" + stem).touch()
        deadline = time.time() + 20
        while len(list(Path(rendezvous).glob("started_*"))) < 2:
            if time.time() > deadline:
                print("stub: the other run never started", file=sys.stderr)
                sys.exit(4)
            time.sleep(0.05)
    import numpy as np
    from scipy.io import savemat
    n, v = 20, 6
    rows = dict(train_loss=np.linspace(5, 1, n), train_acc=np.linspace(0, 0.9, n), train_epoch=np.repeat([1., 2.], n // 2),
                train_lr=np.full(n, 0.1), train_batch_size=np.full(n, 8.), val_loss=np.linspace(4, 2, v),
                val_acc=np.linspace(0.2, 0.6, v), val_epoch=np.repeat([1., 2.], v // 2), val_batch_size=np.full(v, 5.))
    run_dir.mkdir(parents=True, exist_ok=True)
    savemat(run_dir / "mini_batch_data.mat",
            {{**{{k: r.reshape(1, -1) for k, r in rows.items()}}, "criterion": stem, "config": "stub"}})
    print("trained", stem)
''')


@pytest.fixture
def stub_env(tmp_path):
    stub = tmp_path / "bin" / "python"
    stub.parent.mkdir()
    stub.write_text(STUB.format(python=sys.executable))
    stub.chmod(0o755)
    cfg = tmp_path / "configs"
    cfg.mkdir()
    for name in ("standard", "soft"):
        (cfg / f"{name}.yaml").write_text(f"# {name}\n")
    fake_train = tmp_path / "train.py"  # only its name matters: the stub never runs it
    fake_train.write_text("raise SystemExit('not to be run')\n")
    env = dict(os.environ, PYTHON=str(stub), REID_TRAIN_PY=str(fake_train), STUB_ROOT=str(tmp_path / "outputs"), STUB_LOG=str(tmp_path / "calls.jsonl"))
    env.pop("CUDA_VISIBLE_DEVICES", None)
    return tmp_path, env, cfg / "standard.yaml", cfg / "soft.yaml"


def run_paired(args, env, timeout=120):
    return subprocess.run(["bash", str(PAIRED), *map(str, args)], env=env, capture_output=True, text=True,
                          timeout=timeout, cwd=REPO)


def calls(tmp_path):
    log = tmp_path / "calls.jsonl"
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


def test_paired_both_succeed_forwards_args_and_compares(stub_env):
    tmp_path, env, a, b = stub_env
    r = run_paired([a, b, "--seed", "7", "--set", "train.epochs=2", "--device", "cpu"], env)
    assert r.returncode == 0, r.stderr
    c = calls(tmp_path)
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
    assert len(calls(tmp_path)) == 2  # the other run is trained even when the first failed
    for label, cfg in (("A", a), ("B", b)):
        msg = f"run {label} ({cfg}) failed with exit code 3"
        assert (msg in r.stderr) == (label in named), r.stderr
    assert "no comparison written" in r.stderr
    assert not list((tmp_path / "outputs").glob("compare_*"))


def test_paired_two_gpus_trains_both_at_once(stub_env):
    tmp_path, env, a, b = stub_env
    rv = tmp_path / "rendezvous"
    rv.mkdir()
    r = run_paired([a, b, "--gpus", "0,1"], dict(env, STUB_RENDEZVOUS=str(rv)))
    assert r.returncode == 0, r.stdout + r.stderr
    cuda = {Path(x["config"]).stem: x["cuda"] for x in calls(tmp_path)}
    assert cuda == {"standard": "0", "soft": "1"}
    assert "[A] trained standard" in r.stdout and "[B] trained soft" in r.stdout
    assert (tmp_path / "outputs" / "compare_standard_vs_soft.png").is_file()

    # A failure in parallel mode is reported the same way.
    for f in rv.iterdir():
        f.unlink()
    r = run_paired([a, b, "--gpus", "0,1"], dict(env, STUB_FAIL="soft"))
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
    assert calls(tmp_path) == []  # nothing was trained


# ---------------------------------------------------------------------------------------------
# REAL TRAINER (lead: run this once train.py with --print-run-dir exists):
#   .venv/bin/python -m pytest tests/test_paired.py -q -k real_trainer
# ---------------------------------------------------------------------------------------------


def _snapshot(run_dir: Path) -> dict[str, tuple[int, str]]:
    """mtime (ns) and sha256 of every file of a run except log.txt (a resumed finished run may
    append a line saying so) and .lock (it names the process holding the run); its artefacts must not change."""
    return {str(p.relative_to(run_dir)): (p.stat().st_mtime_ns, hashlib.sha256(p.read_bytes()).hexdigest())
            for p in sorted(run_dir.rglob("*")) if p.is_file() and p.name not in ("log.txt", ".lock")}


@pytest.mark.skipif(not (REPO / "train.py").is_file(), reason="REAL TRAINER test: needs train.py (lead)")
def test_paired_real_trainer_resumes_only_the_unfinished_run(tmp_path, synthetic_root):
    cfg_a, cfg_b = REPO / "configs" / "demo_standard.yaml", REPO / "configs" / "demo_soft.yaml"
    out = tmp_path / "outputs"
    sets = [f"data.root={synthetic_root}", "data.synthetic=null", f"data.cache_dir={tmp_path / 'cache'}",
            "data.size=[32,16]", "train.epochs=1", "model.name=resnet18",
            "model.pretrained=none", f"output.root={out}", "seed=0"]
    set_args = [arg for s in sets for arg in ("--set", s)]
    env = dict(os.environ, PYTHON=sys.executable)
    env.pop("REID_TRAIN_PY", None)

    # 1. Run A alone, as a crashed-then-restarted pair would have left it: A finished, B not started.
    r = subprocess.run([sys.executable, str(REPO / "train.py"), "--config", str(cfg_a), "--resume", "auto",
                        "--device", "cpu", *set_args], capture_output=True, text=True, timeout=600, cwd=REPO)
    assert r.returncode == 0, r.stdout + r.stderr
    run_a = Path(subprocess.run([sys.executable, str(REPO / "train.py"), "--config", str(cfg_a), *set_args,
                                 "--print-run-dir"], capture_output=True, text=True, check=True,
                                cwd=REPO).stdout.strip().splitlines()[-1])
    assert (run_a / "mini_batch_data.mat").is_file()
    before = _snapshot(run_a)

    # 2. The pair: A must be recognised as finished (files untouched), B trained, then compared.
    r = subprocess.run(["bash", str(PAIRED), str(cfg_a), str(cfg_b), "--seed", "0", "--device", "cpu",
                        *set_args[:-2]], env=env, capture_output=True, text=True, timeout=900, cwd=REPO)
    assert r.returncode == 0, r.stdout + r.stderr
    assert _snapshot(run_a) == before, "the finished run A was modified by the paired re-run"
    lines = r.stdout.splitlines()
    run_b = Path(next(line for line in lines if line.startswith("run B: ") and "->" not in line)[len("run B: "):])
    assert (run_b / "mini_batch_data.mat").is_file() and run_b != run_a
    png = run_a.parent / f"compare_{run_a.name}_vs_{run_b.name}.png"
    assert png.is_file() and png.with_suffix(".md").is_file()
    assert f"comparison: {png}" in r.stdout

    # Same seed, different criteria: same number of mini-batches seen.
    from scipy.io import loadmat
    ma, mb = loadmat(run_a / "mini_batch_data.mat"), loadmat(run_b / "mini_batch_data.mat")
    assert ma["train_loss"].shape == mb["train_loss"].shape
