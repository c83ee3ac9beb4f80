"""Studies on a real single-node SLURM (tests/slurm_cluster.py) and --print-commands.

* ``study.sh A B --seeds 0 --slurm``: 2 array tasks, then the comparison job writes the table and
  the PNG; every .mat equals the local study's bit for bit; the same command again submits nothing.
  The tasks start together on a fresh data root: each generates the synthetic dataset and
  decodes into the same cache at the same moment.
* ``scontrol requeue`` of one task mid-epoch, and the time-limit warning (SIGUSR1) to the other: each
  stops at a step boundary, is requeued, resumes and ends with the .mat and weights of the
  uninterrupted run.
  A task that fails otherwise is not requeued.
* The ``--print-commands`` lines run by a plain shell loop call the trainer as the study does.

The local study (the oracle) is conftest's ``demo_study``, shared with tests/test_preemption.py.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from helpers import assert_same_run, stub_calls

REPO = Path(__file__).resolve().parents[1]
STUDY = REPO / "scripts" / "study.sh"
DEMO = [REPO / "configs" / "demo_standard.yaml", REPO / "configs" / "demo_soft.yaml"]
RUNS = ["demo_standard_s0", "demo_soft_s0"]
STOP_LINE = re.compile(r"stopped at epoch 1, step (\d): checkpoint written; continue with --resume auto")
# the parameters of conftest's synthetic_root: a fresh root generated with them holds the same images
SYNTHETIC = "data.synthetic={ids: 8, images_per_id: 6, cameras: 6, distractors: 4, junk: 3, seed: 0}"


def sets(overrides: list[str]) -> list[str]:
    return [a for o in overrides for a in ("--set", o)]


def env(**extra: str) -> dict:
    return dict(os.environ, PYTHON=sys.executable, OMP_NUM_THREADS="1", **extra)


def study(args: list, environ: dict, timeout: float = 300) -> subprocess.CompletedProcess:
    r = subprocess.run(["bash", str(STUDY), *map(str, args)], env=environ, capture_output=True, text=True,
                       timeout=timeout, cwd=REPO)
    assert r.returncode == 0, r.stdout + r.stderr
    return r


def study_here(args: list, environ: dict, monkeypatch, capsys) -> tuple[int, str, str]:
    """The study command called in this process (no interpreter start-up), with the checkout's train.py as
    study.sh passes it: (exit status, stdout, stderr)."""
    from reid.launch.study import main

    for key, value in environ.items():
        if os.environ.get(key) != value:
            monkeypatch.setenv(key, value)
    capsys.readouterr()
    status = main(["--trainer", str(REPO / "train.py"), *map(str, args)])
    out, err = capsys.readouterr()
    return status, out, err


SLOW_PYTHON = """
import os, runpy, signal, sys, time
if sys.argv[1] == "-m":  # the comparison job: python -m reid.launch.study ...
    sys.argv = sys.argv[2:]
    runpy.run_module(sys.argv[0], run_name="__main__", alter_sys=True)
    raise SystemExit(0)
name = next((a.split("=", 1)[1] for a in sys.argv if a.startswith("output.name=")), "")
if os.environ.get("SLURM_RESTART_COUNT", "0") == "0":  # the first life only; the numbers are unchanged
    from reid.engine import trainer

    def mark():
        open(os.path.join(os.environ["MARKS"], name), "w").close()

    def wait_for_the_stop():
        deadline = time.time() + 120
        while not signal.getsignal(signal.SIGTERM).requested and time.time() < deadline:
            time.sleep(0.05)

    if name == "demo_standard_s0":  # epoch 1's step 3 waits until it is requeued
        real_step, calls = trainer.Trainer.train_step, [0]

        def step(self, images, labels):
            calls[0] += 1
            if calls[0] == 3:
                mark()
                wait_for_the_stop()
            return real_step(self, images, labels)

        trainer.Trainer.train_step = step
    if name == "demo_soft_s0":  # a long evaluation: epoch 1's query features wait for the time-limit warning
        from reid.evaluation import model as evaluation_model

        real_extract, calls = evaluation_model.extract_features, [0]

        def extract(*args, **kwargs):
            calls[0] += 1
            if calls[0] == 1:
                mark()
                wait_for_the_stop()
            return real_extract(*args, **kwargs)

        evaluation_model.extract_features = extract
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


@pytest.fixture(scope="module")
def slurm_study(slurm_cluster, demo_study, tmp_path_factory) -> dict:
    """conftest's demo_study as a study on SLURM, on a fresh data root and cache (the two tasks generate
    and decode the same files at the same moment). In the middle of epoch 1, task 0 is requeued with
    ``scontrol requeue`` (SIGTERM); task 1 gets the time-limit warning (SIGUSR1 to its batch shell) during
    epoch 1's evaluation, which waits for it (an evaluation longer than the warning's margin); both are
    then let start again at once. What the test saw, as a dict."""
    local, overrides = demo_study
    tmp = tmp_path_factory.mktemp("slurm_study")
    out, marks, driver, python = tmp / "outputs", tmp / "marks", tmp / "slow.py", tmp / "python"
    marks.mkdir()
    driver.write_text(SLOW_PYTHON)
    python.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{driver}" "$@"\n')  # the study's PYTHON
    python.chmod(0o755)
    fresh = [o for o in overrides if not o.startswith(("data.root=", "data.synthetic=", "data.cache_dir="))]
    fresh += [f"data.root={tmp / 'data' / 'market'}", SYNTHETIC, f"data.cache_dir={tmp / 'cache'}"]
    args = [*DEMO, "--seeds", "0", "--device", "cpu", "--slurm", *sets([*fresh, f"output.root={out}"])]
    environ = dict(env(SLURM_CONF=slurm_cluster.env["SLURM_CONF"], MARKS=str(marks)), PYTHON=str(python))
    r = study(args, environ)
    m = re.search(r"submitted job array (\d+) \(2 tasks\) and comparison job (\d+)", r.stdout)
    assert m, r.stdout + r.stderr
    array, compare = m.groups()
    stopped = {f"{array}_0": ("demo_standard_s0", ["scontrol", "requeue", f"{array}_0"]),
               f"{array}_1": ("demo_soft_s0", ["scancel", "--batch", "--signal=USR1", f"{array}_1"])}
    deadline = time.time() + 300
    for task, (name, command) in stopped.items():
        asked = 0.0
        while not (marks / name).exists():  # files are polled often, the controller seldom (each call costs CPU)
            if time.time() > asked + 2:
                asked = time.time()
                assert asked < deadline and slurm_cluster.job_state(task) in ("PENDING", "RUNNING"), \
                    (slurm_cluster.job_state(task), (out / f"{name}.log").read_text()[-2000:])
            time.sleep(0.05)
        slurm_cluster.run(*command)
    seen = {}
    for task, (name, _) in stopped.items():
        log = out / f"{name}.log"
        while not STOP_LINE.search(log.read_text()) or slurm_cluster.job_state(task) != "PENDING":
            assert time.time() < deadline, (slurm_cluster.job_state(task), log.read_text()[-2000:])
            time.sleep(0.3)
        seen[name] = dict(step=int(STOP_LINE.search(log.read_text()).group(1)),
                          state=torch.load(out / name / "checkpoints" / "last.pt", weights_only=True))
    compare_while_requeued = slurm_cluster.job_state(compare)
    for task in stopped:
        # Skip most of the requeue delay, not all of it: slurmd refuses to launch a job whose credential was
        # revoked (at the requeue) in the same second ("Job N already killed, do not launch batch job").
        slurm_cluster.run("scontrol", "update", f"JobId={task}", "StartTime=now+1")
    slurm_cluster.wait_idle()
    return dict(args=args, env=environ, out=out, stdout=r.stdout, array=array, compare=compare, stopped=seen,
                compare_while_requeued=compare_while_requeued,
                states={j: slurm_cluster.job_state(j) for j in [f"{array}_{i}" for i in range(2)] + [compare]})


def test_study_on_slurm_matches_the_local_study_and_a_rerun_submits_nothing(slurm_cluster, slurm_study, demo_study,
                                                                              monkeypatch, capsys):
    local, _ = demo_study
    out, array = slurm_study["out"], slurm_study["array"]
    script = out / "study_demo_standard_vs_demo_soft.sbatch"
    assert f"wrote {script}" in slurm_study["stdout"]
    for i, name in enumerate(RUNS):
        assert f"task {array}_{i}: {name}, log {out / name}.log" in slurm_study["stdout"], slurm_study["stdout"]
    assert "#SBATCH --signal=B:USR1@" in script.read_text()
    assert set(slurm_study["states"].values()) == {"COMPLETED"}, \
        (slurm_study["states"], [(out / f"{n}.log").read_text()[-2000:] for n in RUNS])
    for name in RUNS:
        assert_same_run(local / name, out / name)
    for suffix in (".png", ".md"):
        assert (out / f"study_demo_standard_vs_demo_soft{suffix}").stat().st_size > 0
    assert "| demo_soft_s0 | soft_cross_entropy | 2 |" in (out / "study_demo_standard_vs_demo_soft.md").read_text()

    jobs_before = slurm_cluster.jobs()
    (out / "study_demo_standard_vs_demo_soft.md").unlink()
    status, again, err = study_here(slurm_study["args"], slurm_study["env"], monkeypatch, capsys)
    assert status == 0 and "study: every run has finished; nothing submitted" in again, again + err
    assert slurm_cluster.jobs() == jobs_before  # no job submitted
    assert (out / "study_demo_standard_vs_demo_soft.md").is_file()  # the comparison, written again


@pytest.mark.parametrize("task, name", [(0, "demo_standard_s0"), (1, "demo_soft_s0")],
                         ids=["scontrol requeue mid-epoch", "time-limit warning during the evaluation"])
def test_a_stopped_task_is_requeued_and_resumes_exactly(slurm_study, demo_study, task, name):
    local, _ = demo_study
    out, seen = slurm_study["out"], slurm_study["stopped"][name]
    text = (out / f"{name}.log").read_text()
    state = seen["state"]
    if task == 0:  # stopped after the step it was in (the third), its checkpoint at that boundary
        assert seen["step"] == 3, text[-3000:]
        assert (state["epoch"], state["step"], state["finished"]) == (1, seen["step"], False)
    else:  # stopped in the evaluation at once, with the checkpoint of epoch 1's training steps; no evaluation kept
        assert (state["epoch"], state["step"], state["epoch_done"], state["finished"]) == (1, 7, False, False)
        assert state["history"]["columns"]["eval_epoch"] == [] and "requeueing" in text, text[-3000:]
    assert slurm_study["compare_while_requeued"] == "PENDING"  # the comparison waits for the requeued tasks
    assert slurm_study["states"][f"{slurm_study['array']}_{task}"] == "COMPLETED", text[-3000:]
    assert "restart 1" in text, text[-3000:]
    last = out / name / "checkpoints" / "last.pt"
    assert f"resumed from {last} at epoch 1, step {seen['step']}" in text, text[-3000:]
    assert_same_run(local / name, out / name)  # the .mat and the weights


def test_a_task_that_fails_otherwise_is_not_requeued(slurm_cluster, demo_study, tmp_path, monkeypatch, capsys):
    _, overrides = demo_study
    out, config = tmp_path / "outputs", tmp_path / "gone.yaml"
    config.write_text(f"_base_: {DEMO[0]}\n")
    args = [config, "--seeds", "0", "--device", "cpu", "--slurm", "--sbatch", "--hold --time=10",
            *sets([*overrides, f"output.root={out}"])]
    status, stdout, err = study_here(args, env(SLURM_CONF=slurm_cluster.env["SLURM_CONF"]), monkeypatch, capsys)
    assert status == 0, stdout + err
    array, compare = re.search(r"submitted job array (\d+) \(1 tasks\) and comparison job (\d+)", stdout).groups()
    assert "TimeLimit=00:10:00" in slurm_cluster.run("scontrol", "-o", "show", "job", compare)  # --sbatch, as given
    config.unlink()  # the task fails: its config is gone (and not from a signal)
    slurm_cluster.run("scontrol", "release", f"{array}_0", compare)  # submitted held by --sbatch --hold
    slurm_cluster.wait_idle()
    info = slurm_cluster.run("scontrol", "-o", "show", "job", f"{array}_0")
    assert "JobState=FAILED" in info and "Restarts=0" in info and "ExitCode=2:0" in info, info
    assert "config file not found" in (out / "gone_s0.log").read_text()
    assert slurm_cluster.job_state(compare) == "FAILED"  # and no comparison


def test_print_commands_run_by_a_shell_loop_make_the_study_runs(demo_study, stub_env, monkeypatch, capsys):
    """The lines of --print-commands, run by a plain ``while read`` loop, call the trainer exactly as the local
    study calls it (an override with spaces and braces included): the stub trainer (tests/stub_trainer.py)
    logs both. Finished runs get no line. (The local study with the real train.py: tests/test_study.py.)"""
    local, overrides = demo_study
    tmp_path, environ, _, _ = stub_env
    out = tmp_path / "outputs"
    shutil.copytree(local, out, copy_function=os.link)  # seed 0's runs finished (linked, never written)
    # spaces and braces; a setting a finished run may change (eval.*), so seed 0's runs stay this study's
    spaced = "eval.datasets=[{name: market1501, root: data/other market}]"

    def study_of(seeds: str, *extra: str) -> tuple[int, str, str]:
        args = [*DEMO, "--seeds", seeds, "--device", "cpu", *sets([*overrides, spaced, f"output.root={out}"])]
        return study_here([*args, *extra], environ, monkeypatch, capsys)

    def calls() -> list[tuple]:
        return [(c["config"], c["name"], c["set"], c["resume"], c["device"]) for c in stub_calls(tmp_path)]

    status, stdout, err = study_of("0,1", "--print-commands")
    lines = stdout.splitlines()
    assert status == 0 and len(lines) == 2, stdout + err  # seed 1's runs only
    assert all("--resume auto" in line for line in lines), stdout
    (tmp_path / "commands.txt").write_text(stdout)
    loop = subprocess.run(["bash", "-c", 'while IFS= read -r line; do eval "$line" || exit 1; done < commands.txt'],
                          cwd=tmp_path, env=environ, capture_output=True, text=True, timeout=300)
    assert loop.returncode == 0, loop.stdout + loop.stderr
    printed = calls()
    assert [name for _, name, *_ in printed] == ["demo_standard_s1", "demo_soft_s1"]
    assert all(spaced in sets_given for _, _, sets_given, *_ in printed)
    (tmp_path / "calls.jsonl").unlink()
    study_of("1")  # the local study of those runs
    assert calls() == printed
    status, stdout, err = study_of("0", "--print-commands")
    assert status == 0 and stdout == "" and "every run has finished" in err  # nothing left to run


@pytest.mark.parametrize("given", [["--sbatch", "--cpus-per-task=2"], ["--sbatch", "--partition=test --time=10"],
                                   ["--sbatch=--time=10"]], ids=["one option", "several options", "--sbatch=..."])
def test_sbatch_options_reach_sbatch_in_every_form_a_user_types(slurm_cluster, demo_study, tmp_path, monkeypatch,
                                                                 capsys, given):
    """A lone option value starting with -- is not taken for an option of the study's; the jobs are submitted
    held (SBATCH_HOLD) and cancelled once their settings are read."""
    _, overrides = demo_study
    args = [DEMO[0], "--seeds", "0", "--device", "cpu", "--slurm", *given, *sets([*overrides, f"output.root={tmp_path}"])]
    status, stdout, err = study_here(args, env(SLURM_CONF=slurm_cluster.env["SLURM_CONF"], SBATCH_HOLD="1"),
                                     monkeypatch, capsys)
    assert status == 0, stdout + err
    array, compare = re.search(r"submitted job array (\d+) \(1 tasks\) and comparison job (\d+)", stdout).groups()
    try:
        for job in (f"{array}_0", compare):
            info = slurm_cluster.run("scontrol", "-o", "show", "job", job)
            if "--cpus-per-task=2" in given:
                assert "NumCPUs=2" in info, info
            else:
                assert "TimeLimit=00:10:00" in info and "Partition=test" in info, info
    finally:
        slurm_cluster.run("scancel", array, compare)
        slurm_cluster.wait_idle(timeout=30)  # gone from the queue: the next study of this name may submit


def test_a_submission_sbatch_refuses_shows_what_sbatch_said(slurm_cluster, demo_study, tmp_path, monkeypatch,
                                                            capsys):
    """A mistyped option: the line that says what is wrong is sbatch's own, not its "Try sbatch --help" hint."""
    _, overrides = demo_study
    args = [DEMO[0], "--seeds", "0", "--device", "cpu", "--slurm", "--sbatch", "--tme=20",
            *sets([*overrides, f"output.root={tmp_path}"])]
    status, stdout, err = study_here(args, env(SLURM_CONF=slurm_cluster.env["SLURM_CONF"]), monkeypatch, capsys)
    assert status == 2 and "submitted" not in stdout
    (line,) = err.splitlines()
    # sbatch names itself as it was called (getopt's argv[0]: /usr/bin/sbatch here)
    said = r"\S*sbatch: unrecognized option '--tme=20'"
    assert re.match(rf"error: sbatch --array=0 --tme=20 \S+ failed: {said}", line), err


CAPPED_PYTHON = """#!/bin/sh
# train.py never gets to a checkpoint: each life waits until the time-limit warning ends it
case "$1" in *train.py) touch "$MARKS/life_${{SLURM_RESTART_COUNT:-0}}"; exec sleep 300 ;; esac
exec "{python}" "$@"
"""


def test_the_requeue_cap_stops_a_task_that_never_checkpoints_and_the_study_names_it(slurm_cluster, demo_study,
                                                                                     tmp_path, monkeypatch, capsys):
    """--max-requeues 1: warned in its first life, the task requeues itself; warned again, it says why it is not
    requeued, ends FAILED, and the comparison job names the run and the cap."""
    _, overrides = demo_study
    out, marks, python = tmp_path / "outputs", tmp_path / "marks", tmp_path / "python"
    marks.mkdir()
    python.write_text(CAPPED_PYTHON.format(python=sys.executable))
    python.chmod(0o755)
    args = [DEMO[0], "--seeds", "0", "--device", "cpu", "--slurm", "--max-requeues", "1",
            *sets([*overrides, f"output.root={out}"])]
    environ = dict(env(SLURM_CONF=slurm_cluster.env["SLURM_CONF"], MARKS=str(marks)), PYTHON=str(python))
    status, stdout, err = study_here(args, environ, monkeypatch, capsys)
    assert status == 0, stdout + err
    array, compare = re.search(r"submitted job array (\d+) \(1 tasks\) and comparison job (\d+)", stdout).groups()
    task, log = f"{array}_0", out / "demo_standard_s0.log"
    deadline = time.time() + 120
    for life in (0, 1):
        while not (marks / f"life_{life}").exists():
            assert time.time() < deadline, (slurm_cluster.job_state(task), log.read_text()[-2000:])
            time.sleep(0.1)
        slurm_cluster.run("scancel", "--batch", "--signal=USR1", task)
        if life == 0:
            while "requeueing" not in log.read_text() or slurm_cluster.job_state(task) != "PENDING":
                assert time.time() < deadline, (slurm_cluster.job_state(task), log.read_text()[-2000:])
                time.sleep(0.2)
            slurm_cluster.run("scontrol", "update", f"JobId={task}", "StartTime=now+1")
    slurm_cluster.wait_idle()
    text = log.read_text()
    capped = (f"error: run demo_standard_s0 (task {task}) was requeued 1 times (--max-requeues 1) and has not "
              "finished; it is not requeued again")
    assert "requeueing" in text and capped in text, text
    info = slurm_cluster.run("scontrol", "-o", "show", "job", task)
    assert "JobState=FAILED" in info and "Restarts=1" in info, info
    assert slurm_cluster.job_state(compare) == "FAILED"
    said = next((out / "slurm").glob(f"*_compare_{compare}.out")).read_text()
    assert "no comparison written: 1 run(s) have not finished: demo_standard_s0 (run demo_standard_s0 (task" in said
    assert "(--max-requeues 1)" in said, said


def test_until_decided_on_slurm_submits_round_after_round_then_writes_the_decisions(slurm_cluster, stub_env,
                                                                                    monkeypatch, capsys):
    """--until-decided --slurm with the stub trainer (tests/stub_trainer.py: an evaluation whose mAP is set per
    config, a finished checkpoint): round 1 (seeds 0-2) is a job array and a follow-up job, which finds the
    comparison not decided, writes the table so far and submits round 2 (seed 3) with its own follow-up, which
    writes the table with the decision at --max-seeds 4. The same command again submits nothing and writes it again."""
    tmp_path, environ, standard, soft = stub_env
    finished = tmp_path / "finished.pt"
    torch.save({"finished": True, "epoch": 60}, finished)  # the stub configs' 60 epochs (base.yaml)
    environ = dict(environ, SLURM_CONF=slurm_cluster.env["SLURM_CONF"], STUB_CHECKPOINT=str(finished),
                   STUB_MAP=json.dumps({"standard": [0.0, 0.001], "soft": [0.0, 0.01]}))
    args = [standard, soft, "--until-decided", "--max-seeds", "4", "--slurm"]
    known = set(slurm_cluster.jobs())
    status, stdout, err = study_here(args, environ, monkeypatch, capsys)
    assert status == 0 and "study: look 1 of 2: seeds 0..2" in stdout, stdout + err
    assert re.search(r"submitted job array \d+ \(6 tasks\) and comparison job \d+", stdout), stdout
    slurm_cluster.wait_idle(timeout=120)
    out = tmp_path / "outputs"
    assert sorted(c["name"] for c in stub_calls(tmp_path)) == sorted(f"{v}_s{s}" for v in ("standard", "soft")
                                                                     for s in range(4))
    md = (out / "study_standard_vs_soft.md").read_text()
    line = re.search(r"^- soft vs standard: (.*)$", md, re.M)
    assert line and line.group(1).startswith("undecided at 4 seeds, mAP "), md
    said = "".join(p.read_text() for p in sorted((out / "slurm").glob("*_compare_*.out")))
    assert "soft vs standard: not decided yet, mAP " in said and "study: look 2 of 2" in said, said  # round 1's
    states = {job: slurm_cluster.job_state(job) for job in set(slurm_cluster.jobs()) - known}
    # round 1: 6 array tasks and a follow-up; round 2: 2 tasks (seed 3 of both) and a follow-up
    assert len(states) == 6 + 1 + 2 + 1 and set(states.values()) == {"COMPLETED"}, states
    status, again, err = study_here(args, environ, monkeypatch, capsys)
    assert status == 0 and f"- soft vs standard: {line.group(1)}" in again, again + err
    assert set(slurm_cluster.jobs()) - known == set(states)  # nothing submitted
