"""Studies on a real single-node SLURM (tests/slurm_cluster.py) and --print-commands.

* ``study.sh A B --seeds 0,1 --slurm``: 4 array tasks, then the comparison job writes the table and
  the PNG; every .mat equals the local study's bit for bit; the same command again submits nothing.
  The four tasks start together on a fresh data root: each generates the synthetic dataset and
  decodes into the same cache at the same moment.
* ``scontrol requeue`` of a task mid-epoch: it stops at a step boundary, is requeued, resumes and
  ends with the .mat and weights of the uninterrupted run.
* The ``--print-commands`` lines run by a plain shell loop make the same runs as the study.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.io import loadmat

REPO = Path(__file__).resolve().parents[1]
STUDY = REPO / "scripts" / "study.sh"
DEMO = [REPO / "configs" / "demo_standard.yaml", REPO / "configs" / "demo_soft.yaml"]
RUNS = ["demo_standard_s0", "demo_soft_s0", "demo_standard_s1", "demo_soft_s1"]
STOP_LINE = re.compile(r"stopped at epoch 1, step (\d): checkpoint written; continue with --resume auto")
# the parameters of conftest's synthetic_root: a fresh root generated with them holds the same images
SYNTHETIC = "data.synthetic={ids: 8, images_per_id: 6, cameras: 6, distractors: 4, junk: 3, seed: 0}"


def common(synthetic_root: Path, cache: Path) -> list[str]:
    return [f"data.root={synthetic_root}", "data.synthetic=null", f"data.cache_dir={cache}", "data.size=[32,16]",
            "data.val_per_id=1", "model.name=resnet18", "model.pretrained=none", "train.batch_size=6",
            "train.epochs=2", "eval.every_epochs=0"]


def sets(overrides: list[str]) -> list[str]:
    return [a for o in overrides for a in ("--set", o)]


def env(**extra: str) -> dict:
    return dict(os.environ, PYTHON=sys.executable, OMP_NUM_THREADS="1", **extra)


def study(args: list, environ: dict, timeout: float = 300) -> subprocess.CompletedProcess:
    r = subprocess.run(["bash", str(STUDY), *map(str, args)], env=environ, capture_output=True, text=True,
                       timeout=timeout, cwd=REPO)
    assert r.returncode == 0, r.stdout + r.stderr
    return r


def assert_same_mat(a: Path, b: Path) -> None:
    """Every array of the two .mat files bit-identical (the config text names its own paths)."""
    ma, mb = loadmat(a / "mini_batch_data.mat"), loadmat(b / "mini_batch_data.mat")
    assert sorted(ma) == sorted(mb)
    for key in ma:
        if not key.startswith("__") and key != "config":
            assert ma[key].dtype == mb[key].dtype and np.array_equal(ma[key], mb[key]), (a, key)


@pytest.fixture(scope="module")
def local_study(tmp_path_factory, synthetic_root) -> tuple[Path, list[str]]:
    """The study of demo_standard and demo_soft, seeds 0 and 1, trained here: the oracle. (root, overrides)"""
    tmp = tmp_path_factory.mktemp("local_study")
    overrides = common(synthetic_root, tmp / "cache")
    study([*DEMO, "--seeds", "0,1", "--device", "cpu", "--jobs", "2",
           *sets([*overrides, f"output.root={tmp / 'outputs'}"])], env())
    return tmp / "outputs", overrides


SLOW_PYTHON = """
import os, runpy, sys, time
if sys.argv[1] == "-m":  # the comparison job: python -m reid.launch.study ...
    sys.argv = sys.argv[2:]
    runpy.run_module(sys.argv[0], run_name="__main__", alter_sys=True)
    raise SystemExit(0)
name = next((a.split("=", 1)[1] for a in sys.argv if a.startswith("output.name=")), "")
if name in ("demo_standard_s0", "demo_soft_s0"):  # these runs' steps are slow; their numbers are unchanged
    from reid.engine import trainer

    real_step, calls = trainer.Trainer.train_step, [0]

    def step(self, images, labels):
        calls[0] += 1
        if calls[0] == 3 and os.environ.get("SLURM_RESTART_COUNT", "0") == "0":
            open(os.path.join(os.environ["MARKS"], name), "w").close()  # the first life is in epoch 1's step 3
        time.sleep(0.4)
        return real_step(self, images, labels)

    trainer.Trainer.train_step = step
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


@pytest.fixture(scope="module")
def slurm_study(slurm_cluster, local_study, tmp_path_factory) -> dict:
    """The local study's runs as a study on SLURM, on a fresh data root and cache (the four tasks generate
    and decode the same files at the same moment). In the middle of epoch 1, task 0 is requeued with
    ``scontrol requeue`` (SIGTERM) and task 1 gets the time-limit warning (SIGUSR1 to its batch shell);
    both are then let start again at once. What the test saw, as a dict."""
    local, overrides = local_study
    tmp = tmp_path_factory.mktemp("slurm_study")
    out, marks, driver, python = tmp / "outputs", tmp / "marks", tmp / "slow.py", tmp / "python"
    marks.mkdir()
    driver.write_text(SLOW_PYTHON)
    python.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{driver}" "$@"\n')  # the study's PYTHON
    python.chmod(0o755)
    fresh = [o for o in overrides if not o.startswith(("data.root=", "data.synthetic=", "data.cache_dir="))]
    fresh += [f"data.root={tmp / 'data' / 'market'}", SYNTHETIC, f"data.cache_dir={tmp / 'cache'}"]
    args = [*DEMO, "--seeds", "0,1", "--device", "cpu", "--slurm", *sets([*fresh, f"output.root={out}"])]
    environ = dict(env(SLURM_CONF=slurm_cluster.env["SLURM_CONF"], MARKS=str(marks)), PYTHON=str(python))
    r = study(args, environ)
    m = re.search(r"submitted job array (\d+) \(4 tasks\) and comparison job (\d+)", r.stdout)
    assert m, r.stdout + r.stderr
    array, compare = m.groups()
    stopped = {f"{array}_0": ("demo_standard_s0", ["scontrol", "requeue", f"{array}_0"]),
               f"{array}_1": ("demo_soft_s0", ["scancel", "--batch", "--signal=USR1", f"{array}_1"])}
    deadline = time.time() + 300
    for task, (name, command) in stopped.items():
        while not (marks / name).exists():
            assert time.time() < deadline and slurm_cluster.job_state(task) in ("PENDING", "RUNNING"), \
                (slurm_cluster.job_state(task), (out / f"{name}.log").read_text()[-2000:])
            time.sleep(0.05)
        slurm_cluster.run(*command)
    seen = {}
    for task, (name, _) in stopped.items():
        log = out / f"{name}.log"
        while not STOP_LINE.search(log.read_text()) or slurm_cluster.job_state(task) != "PENDING":
            assert time.time() < deadline, (slurm_cluster.job_state(task), log.read_text()[-2000:])
            time.sleep(0.1)
        seen[name] = dict(step=int(STOP_LINE.search(log.read_text()).group(1)),
                          state=torch.load(out / name / "checkpoints" / "last.pt", weights_only=True))
    compare_while_requeued = slurm_cluster.job_state(compare)
    for task in stopped:
        slurm_cluster.run("scontrol", "update", f"JobId={task}", "StartTime=now")  # skip the requeue delay
    slurm_cluster.wait_idle()
    return dict(args=args, env=environ, out=out, stdout=r.stdout, array=array, compare=compare, stopped=seen,
                compare_while_requeued=compare_while_requeued,
                states={j: slurm_cluster.job_state(j) for j in [f"{array}_{i}" for i in range(4)] + [compare]})


def test_study_on_slurm_matches_the_local_study_and_a_rerun_submits_nothing(slurm_cluster, slurm_study, local_study):
    local, _ = local_study
    out, array, compare = slurm_study["out"], slurm_study["array"], slurm_study["compare"]
    script = out / "study_demo_standard_vs_demo_soft.sbatch"
    assert f"wrote {script}" in slurm_study["stdout"]
    for i, name in enumerate(RUNS):
        assert f"task {array}_{i}: {name}, log {out / name}.log" in slurm_study["stdout"], slurm_study["stdout"]
    assert "#SBATCH --signal=B:USR1@" in script.read_text()
    assert set(slurm_study["states"].values()) == {"COMPLETED"}, \
        (slurm_study["states"], [(out / f"{n}.log").read_text()[-2000:] for n in RUNS])
    for name in RUNS:
        assert_same_mat(local / name, out / name)
    for suffix in (".png", ".md"):
        assert (out / f"study_demo_standard_vs_demo_soft{suffix}").stat().st_size > 0
    assert "| demo_soft − demo_standard |" in (out / "study_demo_standard_vs_demo_soft.md").read_text()

    jobs_before = slurm_cluster.jobs()
    (out / "study_demo_standard_vs_demo_soft.md").unlink()
    again = study(slurm_study["args"], slurm_study["env"])
    assert "study: every run has finished; nothing submitted" in again.stdout, again.stdout
    assert slurm_cluster.jobs() == jobs_before  # no job submitted
    assert (out / "study_demo_standard_vs_demo_soft.md").is_file()  # the comparison, written again


@pytest.mark.parametrize("task, name", [(0, "demo_standard_s0"), (1, "demo_soft_s0")],
                         ids=["scontrol requeue", "time-limit warning"])
def test_a_task_stopped_mid_epoch_is_requeued_and_resumes_exactly(slurm_study, local_study, task, name):
    local, _ = local_study
    out, seen = slurm_study["out"], slurm_study["stopped"][name]
    text = (out / f"{name}.log").read_text()
    # stopped after the step it was in (the third or a later one), its checkpoint at that step boundary
    assert seen["step"] >= 3, text[-3000:]
    assert (seen["state"]["epoch"], seen["state"]["step"], seen["state"]["finished"]) == (1, seen["step"], False)
    assert slurm_study["compare_while_requeued"] == "PENDING"  # the comparison waits for the requeued tasks
    assert slurm_study["states"][f"{slurm_study['array']}_{task}"] == "COMPLETED", text[-3000:]
    assert "restart 1" in text, text[-3000:]
    last = out / name / "checkpoints" / "last.pt"
    assert f"resumed from {last} at epoch 1, step {seen['step']}" in text, text[-3000:]
    assert_same_mat(local / name, out / name)
    a = torch.load(local / name / "checkpoints" / "last.pt", weights_only=True)["model"]
    b = torch.load(last, weights_only=True)["model"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_a_task_that_fails_otherwise_is_not_requeued(slurm_cluster, local_study, tmp_path):
    _, overrides = local_study
    out = tmp_path / "outputs"
    broken = [o for o in overrides if not o.startswith("data.root=")] + [f"data.root={tmp_path / 'missing'}"]
    r = study([DEMO[0], "--seeds", "0", "--device", "cpu", "--slurm", *sets([*broken, f"output.root={out}"])],
              env(SLURM_CONF=slurm_cluster.env["SLURM_CONF"]))
    array, compare = re.search(r"submitted job array (\d+) \(1 tasks\) and comparison job (\d+)", r.stdout).groups()
    slurm_cluster.wait_idle()
    info = slurm_cluster.run("scontrol", "-o", "show", "job", f"{array}_0")
    assert "JobState=FAILED" in info and "Restarts=0" in info and "ExitCode=2:0" in info, info
    assert "dataset root does not exist" in (out / "demo_standard_s0.log").read_text()
    assert slurm_cluster.job_state(compare) == "FAILED"  # no comparison: a run has not finished
    assert "no comparison written: 1 run(s) have not finished: demo_standard_s0" in \
        "".join(p.read_text() for p in (out / "slurm").glob("*compare*"))


def test_print_commands_run_by_a_shell_loop_make_the_study_runs(local_study, tmp_path):
    local, overrides = local_study
    out = tmp_path / "outputs"
    shutil.copytree(local, out)  # three runs finished, one to train
    shutil.rmtree(out / "demo_soft_s1")
    args = [*DEMO, "--seeds", "0,1", "--device", "cpu", "--print-commands", *sets([*overrides, f"output.root={out}"])]
    r = study(args, env())
    lines = r.stdout.splitlines()
    assert len(lines) == 1 and "--set output.name=demo_soft_s1" in lines[0] and "--resume auto" in lines[0], r.stdout
    (tmp_path / "commands.txt").write_text(r.stdout)
    loop = subprocess.run(["bash", "-c", 'while IFS= read -r line; do eval "$line" || exit 1; done < commands.txt'],
                          cwd=tmp_path, env=env(), capture_output=True, text=True, timeout=300)
    assert loop.returncode == 0, loop.stdout + loop.stderr
    assert_same_mat(local / "demo_soft_s1", out / "demo_soft_s1")
    assert study(args, env()).stdout == ""  # nothing left to run
