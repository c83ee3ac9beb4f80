"""Stop signals and Ctrl-C in train.py: SIGTERM/SIGUSR1 stop at a step boundary with a checkpoint and
exit 75, loses no step and damages nothing (mid-epoch, during evaluation, during a checkpoint write);
the resumed run equals the uninterrupted one. Ctrl-C says where the last checkpoint is.
torchrun --max-restarts continues a group from the last checkpoint after a worker dies; the .mat of a
torchrun run holds global mini-batches."""

from __future__ import annotations

import os
import runpy
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import assert_same_run
from scipy.io import loadmat

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "configs" / "demo_standard.yaml"
TRAIN = runpy.run_path(str(REPO / "train.py"))["main"]
STOP_LINE = "stopped at epoch {}, step {}: checkpoint written; continue with --resume auto"


@pytest.fixture(scope="module")
def one_thread():
    """One intra-op thread in this process, as in the trainer subprocesses (OMP_NUM_THREADS=1): the number
    of threads changes the order of float sums, so exact-resume comparisons need the same count everywhere."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def overrides(demo_study, tmp_path_factory, one_thread) -> list[str]:
    """The overrides of conftest's demo_study run demo_standard_s0, writing under a folder of this module."""
    _, common = demo_study
    return [*common, "seed=0", f"output.root={tmp_path_factory.mktemp('preemption') / 'outputs'}"]


def out_dir(overrides: list[str], name: str) -> Path:
    return Path(next(o.split("=", 1)[1] for o in overrides if o.startswith("output.root="))) / name


def argv(overrides: list[str], name: str, *extra: str) -> list[str]:
    return ["--config", str(CONFIG), "--device", "cpu", "--no-progress", "--resume", "auto",
            *(a for o in [*overrides, f"output.name={name}", *extra] for a in ("--set", o))]


@pytest.fixture(scope="module")
def reference(demo_study) -> Path:
    """The uninterrupted run (conftest's demo_study)."""
    return demo_study[0] / "demo_standard_s0"


def checkpoint(run: Path, name: str = "last.pt") -> dict:
    return torch.load(run / "checkpoints" / name, weights_only=True)


SLOW_STEPS = """
import os, runpy, sys, time
from reid.engine import trainer

real_step = trainer.Trainer.train_step

def step(self, images, labels):
    with open(os.environ["STEPS_FILE"], "a") as f:
        f.write("started\\n")
    time.sleep(0.3)  # a step long enough for a signal to arrive in the middle of it
    return real_step(self, images, labels)

trainer.Trainer.train_step = step
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def test_sigterm_mid_epoch_stops_at_the_step_boundary_and_resumes_exactly(reference, overrides, tmp_path):
    driver, steps = tmp_path / "slow.py", tmp_path / "steps.txt"
    driver.write_text(SLOW_STEPS)
    run = out_dir(overrides, "sigterm")
    proc = subprocess.Popen([sys.executable, str(driver), str(REPO / "train.py"), *argv(overrides, "sigterm")],
                            env=dict(os.environ, STEPS_FILE=str(steps), OMP_NUM_THREADS="1"),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not (steps.exists() and len(steps.read_text().splitlines()) >= 3):  # in epoch 1's third step
        assert proc.poll() is None and time.time() < deadline, proc.communicate()
        time.sleep(0.02)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    started = len(steps.read_text().splitlines())
    assert proc.returncode == 75, out + err
    assert STOP_LINE.format(1, started) in err.splitlines(), err
    state = checkpoint(run)
    # no step lost: every step begun before the signal is in the checkpoint, and in the .mat
    assert (state["epoch"], state["step"], state["epoch_done"], state["finished"]) == (1, started, False, False)
    assert loadmat(run / "mini_batch_data.mat")["train_loss"][0].size == started
    assert TRAIN(argv(overrides, "sigterm")) == 0
    assert f"resumed from {run / 'checkpoints' / 'last.pt'} at epoch 1, step {started}" in (run / "log.txt").read_text()
    assert_same_run(reference, run)


def test_stop_signal_during_evaluation_ends_the_epoch_first(reference, overrides, monkeypatch, capsys):
    from reid.engine import trainer

    real = trainer.Trainer.evaluate

    def evaluate(self, epoch, write_files):
        if epoch == 1:
            os.kill(os.getpid(), signal.SIGUSR1)  # the cluster's time-limit warning, mid-evaluation
        return real(self, epoch, write_files)

    monkeypatch.setattr(trainer.Trainer, "evaluate", evaluate)
    assert TRAIN(argv(overrides, "during_eval")) == 75
    assert STOP_LINE.format(1, 7) in capsys.readouterr().err
    run = out_dir(overrides, "during_eval")
    state = checkpoint(run)
    assert (state["epoch"], state["step"], state["epoch_done"]) == (1, 7, True)
    assert loadmat(run / "mini_batch_data.mat")["eval_epoch"][0].tolist() == [1]  # the evaluation was recorded
    monkeypatch.setattr(trainer.Trainer, "evaluate", real)
    assert TRAIN(argv(overrides, "during_eval")) == 0
    assert_same_run(reference, run)


def test_stop_signal_during_a_checkpoint_write_leaves_both_checkpoints_whole(reference, overrides,
                                                                             monkeypatch, capsys):
    real_save, calls = torch.save, []

    def save(obj, f, *a, **k):
        calls.append(1)
        if len(calls) == 1:
            os.kill(os.getpid(), signal.SIGTERM)  # arrives while the first checkpoint is being written
        return real_save(obj, f, *a, **k)

    monkeypatch.setattr(torch, "save", save)
    name = "during_write"
    assert TRAIN(argv(overrides, name, "checkpoint.every_steps=2")) == 75
    assert STOP_LINE.format(1, 3) in capsys.readouterr().err  # the write at step 2 completed, step 3 trained
    run = out_dir(overrides, name)
    assert (checkpoint(run, "previous.pt")["step"], checkpoint(run)["step"]) == (2, 3)
    assert not [p for p in (run / "checkpoints").iterdir() if p.name.endswith(".tmp")]
    monkeypatch.setattr(torch, "save", real_save)
    assert TRAIN(argv(overrides, name, "checkpoint.every_steps=2")) == 0
    assert_same_run(reference, run)


@pytest.mark.parametrize("at_call, expected", [
    (6, "interrupted at epoch 1, step 5; the last checkpoint ({last}) is at epoch 1, step 4: continue with "
        "--resume auto, which redoes 1 training step"),
    (1, "interrupted at epoch 1, step 0, before the first checkpoint: nothing is saved, so --resume auto starts "
        "the run over"),
])
def test_ctrl_c_says_where_the_last_checkpoint_is_and_what_is_redone(overrides, monkeypatch, capsys,
                                                                     at_call, expected):
    from reid.engine import trainer

    real, calls = trainer.Trainer.train_step, []

    def step(self, images, labels):
        calls.append(1)
        if len(calls) == at_call:
            raise KeyboardInterrupt  # Ctrl-C before this step
        return real(self, images, labels)

    monkeypatch.setattr(trainer.Trainer, "train_step", step)
    name = f"ctrl_c_{at_call}"
    assert TRAIN(argv(overrides, name, "checkpoint.every_steps=2")) == 130
    last = out_dir(overrides, name) / "checkpoints" / "last.pt"
    assert capsys.readouterr().err.strip().splitlines()[-1] == expected.format(last=last)


STOPPED_THEN_KILLED = """
import os, runpy, signal, sys
from reid.engine import distributed, trainer

main = runpy.run_path(sys.argv[1])["main"]
argv, attempt = sys.argv[2:], os.environ["TORCHELASTIC_RESTART_COUNT"]
if attempt == "0":  # first the uninterrupted run, in these processes and process group (no torch start of its own)
    shutdown, distributed.shutdown_distributed = distributed.shutdown_distributed, lambda: None
    assert main([*argv, "--set", "output.name=ddp_reference"]) == 0
    distributed.shutdown_distributed = shutdown

real_step, calls = trainer.Trainer.train_step, [0]

def step(self, images, labels):
    calls[0] += 1
    if os.environ["RANK"] == "1" and (attempt, calls[0]) == ("0", 2):
        os.kill(os.getpid(), signal.SIGTERM)  # rank 1 alone is told to stop, in epoch 1's second step
    if os.environ["RANK"] == "1" and (attempt, calls[0]) == ("1", 7):
        os.kill(os.getpid(), signal.SIGKILL)  # then dies in epoch 2's third step, after epoch 1's evaluation
    return real_step(self, images, labels)

trainer.Trainer.train_step = step
sys.exit(main(argv))
"""


def test_torchrun_stops_every_process_at_one_step_restarts_from_the_last_checkpoint_and_logs_global_batches(
        tiny_overrides, tmp_path):
    """2 gloo processes, 2 epochs of global batches of 5, a checkpoint every 2 steps, under torchrun
    --max-restarts: a SIGTERM to one process stops all of them after the same step (checkpoint written, exit 75);
    torchrun restarts the group, which resumes there; a worker then SIGKILLed mid-epoch 2 makes torchrun restart
    the group again from the last checkpoint. The run ends with the .mat and weights of an uninterrupted 2-process
    run (trained first, in the same processes) and its .mat holds global mini-batches: the last train batch (2 =
    1 image each) and the last val batch (1 image) are merged into the batch before, so that no process gets fewer
    than two train images or no val image. (2 processes, not 3: with 3, a resumed run's weights
    differ from an uninterrupted one's in the last bits from the first step after a restart on.)"""
    driver = tmp_path / "stop_then_kill.py"
    driver.write_text(STOPPED_THEN_KILLED)
    root = out_dir(tiny_overrides, "")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "--max-restarts=2",
           str(driver), str(REPO / "train.py"),
           *argv(tiny_overrides, "ddp_restarted", "checkpoint.every_steps=2", "train.epochs=2", "train.batch_size=5",
                 "data.val_per_id=2")]
    restarted = subprocess.run(cmd, env=dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1"),
                               capture_output=True, text=True, timeout=300)
    assert restarted.returncode == 0, restarted.stdout + restarted.stderr
    err = restarted.stderr
    assert err.count(STOP_LINE.format(1, 2)) == 1, err  # printed once, by rank 0, after the step in progress
    assert "(exitcode: 75)" in err and "(exitcode: -9)" in err, err
    run = root / "ddp_restarted"
    log = (run / "log.txt").read_text()
    last = run / "checkpoints" / "last.pt"
    # the kill in epoch 2's third step loses that step: the group resumes from the checkpoint of step 2
    assert f"resumed from {last} at epoch 1, step 2" in log and f"resumed from {last} at epoch 2, step 2" in log, log
    assert_same_run(root / "ddp_reference", run)
    m = loadmat(run / "mini_batch_data.mat")
    # global mini-batches: 32 train images in batches of 5 -> 5 + 5 + 5 + 5 + 5 + (5 + 2) per epoch;
    # 16 val images -> 5 + 5 + (5 + 1) per epoch
    assert m["train_batch_size"][0].tolist() == [5, 5, 5, 5, 5, 7] * 2
    assert m["val_batch_size"][0].tolist() == [5, 5, 6] * 2
    assert m["train_epoch"][0].tolist() == [1] * 6 + [2] * 6
    acc = m["train_acc"][0] * m["train_batch_size"][0]
    assert np.allclose(acc, np.round(acc))  # a global count of correct images, not one rank's fraction
    assert np.isfinite(m["train_loss"]).all() and np.isfinite(m["val_loss"]).all()
    assert m["eval_epoch"][0].tolist() == [1, 2]
    assert sorted(p.name for p in run.iterdir() if not p.name.startswith(".")) == [
        "checkpoints", "config.yaml", "features.mat", "log.txt", "mini_batch_data.mat", "results.json"]
