"""Exact resume: a run killed with SIGKILL at any moment (mid-epoch, during a checkpoint
write) and resumed with ``--resume auto`` ends with the same .mat arrays and weights as
the uninterrupted run."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
from pathlib import Path

from helpers import assert_same_run

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "configs" / "demo_standard.yaml"


def run_overrides(overrides: list[str], name: str) -> list[str]:
    return [*overrides, "train.epochs=2", "checkpoint.every_steps=1", f"output.name={name}"]


def command(overrides: list[str], name: str) -> list[str]:
    sets = [a for o in run_overrides(overrides, name) for a in ("--set", o)]
    return [sys.executable, str(REPO / "train.py"), "--config", str(CONFIG), "--device", "cpu", "--resume", "auto",
            "--no-progress", *sets]


def run_dir(overrides: list[str], name: str) -> Path:
    root = next(o.split("=", 1)[1] for o in overrides if o.startswith("output.root="))
    return Path(root) / name


def env() -> dict:
    return dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")


KILLER = """
import io, os, runpy, signal, sys, torch
import scipy.io
from reid.engine import trainer

where, target = os.environ["KILL_WHERE"], int(os.environ["KILL_AT"])
calls = [0]

def die():
    os.kill(os.getpid(), signal.SIGKILL)

def count():
    calls[0] += 1
    return calls[0] == target

def half_written(real):
    # write half of the bytes to the (temporary) file, then die: a kill in the middle of a write
    def save(obj, f, *args, **kwargs):
        if count() and hasattr(f, "write"):
            buffer = io.BytesIO()
            real(obj, buffer, *args, **kwargs)
            f.write(buffer.getvalue()[: len(buffer.getvalue()) // 2])
            f.flush()
            die()
        return real(obj, f, *args, **kwargs)
    return save

def before(real):
    def call(*args, **kwargs):
        if count():
            die()
        return real(*args, **kwargs)
    return call

if where == "checkpoint":
    torch.save = half_written(torch.save)
elif where == "mat":
    real_savemat = scipy.io.savemat
    scipy.io.savemat = lambda f, arrays, *a, **k: half_written(lambda o, g: real_savemat(g, o, *a, **k))(arrays, f)
elif where == "train_step":
    trainer.Trainer.train_step = before(trainer.Trainer.train_step)
elif where == "val":
    trainer.Trainer.val_epoch = before(trainer.Trainer.val_epoch)
elif where == "eval":
    trainer.Trainer.evaluate = before(trainer.Trainer.evaluate)
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""

# (where, the latest call of it to kill at): small, so that each process life moves the run on by only a
# few steps (a checkpoint after every step) and six kills fit in 2 epochs of 7 steps.
MOMENTS = [("train_step", 3), ("checkpoint", 3), ("mat", 3)]


def test_sigkill_at_seeded_random_moments_then_resume_gives_the_uninterrupted_run(demo_study, tmp_path):
    # the uninterrupted run: the session's demo_study run demo_standard_s0, the same experiment (seed 0, 2 epochs
    # of 7 steps, evaluated every epoch) checkpointed once per epoch instead of every step
    study_root, study_overrides = demo_study
    overrides = [*study_overrides, f"output.root={tmp_path / 'outputs'}"]
    driver = tmp_path / "killer.py"
    driver.write_text(KILLER)
    rng = random.Random(1234)
    kills, finished = [], False
    # Four moments are fixed: the first checkpoint write (no previous.pt yet), a mid-epoch step, the val
    # phase and the evaluation; two more are drawn.
    plan = [("checkpoint", 1), ("train_step", 3), ("val", 1), ("eval", 1)] + [
        (where, rng.randint(1, most)) for where, most in (rng.choice(MOMENTS) for _ in range(2))]
    for where, at in plan:
        proc = subprocess.run([sys.executable, str(driver), *command(overrides, "killed")[1:]],
                              env=dict(env(), KILL_WHERE=where, KILL_AT=str(at)), capture_output=True, text=True,
                              timeout=300)
        if proc.returncode == 0:  # the moment lay beyond what was left of the run: it finished
            finished = True
            break
        assert proc.returncode == -signal.SIGKILL, proc.stderr
        kills.append((where, at))
    if not finished:
        final = subprocess.run(command(overrides, "killed"), env=env(), capture_output=True, text=True,
                               timeout=300)
        assert final.returncode == 0, final.stderr
    assert kills == plan, (kills, plan, (run_dir(overrides, "killed") / "log.txt").read_text())
    log = (run_dir(overrides, "killed") / "log.txt").read_text()
    assert "resumed from" in log
    assert_same_run(study_root / "demo_standard_s0", run_dir(overrides, "killed"))
