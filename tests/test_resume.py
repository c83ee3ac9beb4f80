"""Exact resume: a run killed with SIGKILL at any moment (mid-epoch, during a checkpoint
write) and resumed with ``--resume auto`` ends with the same .mat arrays and weights as
the uninterrupted run. Each life takes over the run lock of the SIGKILLed one before it."""

from __future__ import annotations

import json
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


# One process imports torch and the trainer once, then forks a fresh process for each life of the run
# (nothing has run in it yet, so the children start clean): each child arms its kill, runs train.py as
# ``__main__`` and is SIGKILLed by it at that moment, or exits when the moment lay beyond the end of
# the run. Prints one exit status per life (as subprocess reports them: -9 for a SIGKILL).
KILLER = """
import io, json, os, runpy, signal, sys, torch
import scipy.io
from reid.engine import trainer

def die():
    os.kill(os.getpid(), signal.SIGKILL)

def arm(where, target):
    calls = [0]

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

def life(moment, argv):
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            if moment:
                arm(*moment)
            sys.argv = argv
            runpy.run_path(argv[0], run_name="__main__")
            code = 0
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
    status = os.waitpid(pid, 0)[1]
    return -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)

plan, argv = json.loads(sys.argv[1]), sys.argv[2:]
codes = []
for where, at in plan:
    codes.append(life((where, at), argv))
    if codes[-1] != -signal.SIGKILL:
        break
if codes[-1] == -signal.SIGKILL:
    codes.append(life(None, argv))  # the last life: no kill, the run finishes
print(json.dumps(codes))
"""

# (where, the latest call of it to kill at): small, so that each process life moves the run on by only a
# few steps (a checkpoint after every step) and five kills fit in 2 epochs of 7 steps.
MOMENTS = [("train_step", 3), ("checkpoint", 3), ("mat", 3)]


def test_sigkill_at_seeded_random_moments_then_resume_gives_the_uninterrupted_run(demo_study, tmp_path):
    # the uninterrupted run: the session's demo_study run demo_standard_s0, the same experiment (seed 0, 2 epochs
    # of 7 steps, evaluated every epoch) checkpointed once per epoch instead of every step
    study_root, study_overrides = demo_study
    overrides = [*study_overrides, f"output.root={tmp_path / 'outputs'}"]
    driver = tmp_path / "killer.py"
    driver.write_text(KILLER)
    rng = random.Random(1234)
    # Four moments are fixed: the first checkpoint write (no previous.pt yet), a mid-epoch step, the val
    # phase and the evaluation; one more is drawn.
    plan = [("checkpoint", 1), ("train_step", 3), ("val", 1), ("eval", 1)] + [
        (where, rng.randint(1, most)) for where, most in (rng.choice(MOMENTS) for _ in range(1))]
    proc = subprocess.run([sys.executable, str(driver), json.dumps(plan), *command(overrides, "killed")[1:]],
                          env=env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    codes = json.loads(proc.stdout.splitlines()[-1])
    assert codes[-1] == 0, proc.stderr  # the run finished in its last life
    assert all(code == -signal.SIGKILL for code in codes[:-1]), (codes, proc.stderr)
    kills = plan[:len(codes) - 1]
    assert kills == plan, (kills, plan, (run_dir(overrides, "killed") / "log.txt").read_text())
    log = (run_dir(overrides, "killed") / "log.txt").read_text()
    assert "resumed from" in log
    assert_same_run(study_root / "demo_standard_s0", run_dir(overrides, "killed"))


def test_a_finished_run_keeps_last_pt_alone_and_evaluate_embed_export_and_resume_still_read_it(
        demo_study, synthetic_root, tmp_path, capsys):
    """previous.pt is there for a resume whose last.pt a crash damaged: a finished run drops it (half its disk),
    and every tool that reads a finished run reads last.pt: the evaluation gives the run's own results, the
    query features of reid.embed are those of its features.mat, the ONNX export is written, and --resume auto
    has nothing to do."""
    import json
    import runpy
    import shutil

    import numpy as np
    from scipy.io import loadmat

    from reid.embed import main as embed
    from reid.evaluate import main as evaluate
    from reid.export import main as export

    root, overrides = demo_study
    assert sorted(p.name for p in (root / "demo_standard_s0" / "checkpoints").iterdir()) == ["last.pt"]
    run = tmp_path / "demo_standard_s0"
    shutil.copytree(root / "demo_standard_s0", run)  # the session's run stays as it is for the other tests
    trained = json.loads((run / "results.json").read_text())

    assert evaluate([str(run), "--device", "cpu"]) == 0
    again = json.loads((run / "results.json").read_text())
    assert again["mAP"] == trained["mAP"] and again["cmc"][:10] == trained["cmc"][:10]
    assert embed([str(run), str(synthetic_root / "query"), "--out", str(tmp_path / "q.npy"), "--device", "cpu"]) == 0
    np.testing.assert_allclose(np.load(tmp_path / "q.npy"), loadmat(run / "features.mat")["query_f"], atol=2e-6,
                               rtol=0)
    assert export([str(run), "--onnx", str(tmp_path / "m.onnx")]) == 0 and (tmp_path / "m.onnx").stat().st_size > 0
    capsys.readouterr()
    train = runpy.run_path(str(REPO / "train.py"))["main"]
    sets = [a for o in [*overrides, "seed=0", f"output.root={tmp_path}", "output.name=demo_standard_s0"]
            for a in ("--set", o)]
    assert train(["--config", str(CONFIG), "--device", "cpu", "--resume", "auto", "--no-progress", *sets]) == 0
    assert f"{run}: already finished (2 epochs); nothing to do" in capsys.readouterr().out
