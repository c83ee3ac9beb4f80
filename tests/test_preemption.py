"""Stop signals and Ctrl-C in train.py: SIGTERM/SIGUSR1 stop at a step boundary with a checkpoint and
exit 75, loses no step and damages nothing (mid-epoch, during evaluation, during a checkpoint write);
the resumed run equals the uninterrupted one. Ctrl-C says where the last checkpoint is.
The same under torchrun (all processes stop at one step; --max-restarts continues a group from the last
checkpoint after a worker dies) is tested in tests/test_distributed.py, in the launch its tests share."""

from __future__ import annotations

import os
import runpy
import signal
from pathlib import Path

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


def stopped_then_resumed(reference: Path, overrides: list[str], name: str, capsys, at: tuple[int, int], stopped,
                         undo) -> Path:
    """Run ``name`` (a stop signal patched in), which must stop with exit 75 and its checkpoint at (epoch, step)
    ``at``, neither the epoch's phases done nor the run finished; ``stopped(run)`` checks the stopped run,
    ``undo()`` takes the patch away, and the resumed run must end as ``reference``. Returns the run directory."""
    assert TRAIN(argv(overrides, name)) == 75
    assert STOP_LINE.format(*at) in capsys.readouterr().err
    run = out_dir(overrides, name)
    state = checkpoint(run)
    assert (state["epoch"], state["step"], state["epoch_done"], state["finished"]) == (*at, False, False)
    stopped(run)
    undo()
    assert TRAIN(argv(overrides, name)) == 0
    assert_same_run(reference, run)
    return run


def test_sigterm_mid_epoch_stops_at_the_step_boundary_and_resumes_exactly(reference, overrides, monkeypatch, capsys):
    """SIGTERM in the middle of epoch 1's third step: the step ends, its checkpoint and .mat are written, exit 75.
    (Real processes stopped from outside: the SLURM tasks of tests/test_slurm.py and the torchrun workers of
    tests/test_distributed.py.)"""
    from reid.engine import trainer

    real, calls = trainer.Trainer.train_step, []

    def step(self, images, labels):
        calls.append(1)
        if len(calls) == 3:
            os.kill(os.getpid(), signal.SIGTERM)
        return real(self, images, labels)

    monkeypatch.setattr(trainer.Trainer, "train_step", step)
    assert TRAIN(argv(overrides, "sigterm")) == 75
    assert STOP_LINE.format(1, 3) in capsys.readouterr().err.splitlines()
    run = out_dir(overrides, "sigterm")
    state = checkpoint(run)
    # no step lost: every step begun before the signal is in the checkpoint, and in the .mat
    assert (state["epoch"], state["step"], state["epoch_done"], state["finished"]) == (1, 3, False, False)
    assert loadmat(run / "mini_batch_data.mat")["train_loss"][0].size == 3
    monkeypatch.setattr(trainer.Trainer, "train_step", real)
    assert TRAIN(argv(overrides, "sigterm")) == 0
    assert f"resumed from {run / 'checkpoints' / 'last.pt'} at epoch 1, step 3" in (run / "log.txt").read_text()
    assert_same_run(reference, run)


def test_stop_signal_during_validation_stops_without_it_and_the_resumed_run_redoes_it(
        reference, overrides, monkeypatch, capsys):
    """The time-limit warning during epoch 1's val phase: the run stops at once with the checkpoint of the epoch's
    7 training steps, nothing of the phase recorded; the resumed run validates again and ends as the uninterrupted
    one. (The same warning during an evaluation: the SLURM task of tests/test_slurm.py; the final evaluation: the
    next test.)"""
    from reid.engine import trainer

    real = trainer.Trainer.val_epoch

    def warned(self, epoch):
        if epoch == 1:
            os.kill(os.getpid(), signal.SIGUSR1)  # the cluster's time-limit warning, as the phase begins
        return real(self, epoch)

    def nothing_of_the_phase(run: Path) -> None:
        mat = loadmat(run / "mini_batch_data.mat")
        assert mat["train_loss"][0].size == 7 and mat["val_loss"][0].size == 0 and mat["eval_epoch"][0].size == 0

    monkeypatch.setattr(trainer.Trainer, "val_epoch", warned)
    run = stopped_then_resumed(reference, overrides, "during_val", capsys, (1, 7), nothing_of_the_phase,
                               undo=lambda: monkeypatch.setattr(trainer.Trainer, "val_epoch", real))
    assert f"resumed from {run / 'checkpoints' / 'last.pt'} at epoch 1, step 7" in (run / "log.txt").read_text()


def test_stop_signal_during_the_last_evaluation_stops_and_the_resumed_run_finishes_it(reference, overrides,
                                                                                      monkeypatch, capsys):
    """Between the query and the gallery extraction of the final evaluation: no results.json, not finished;
    the resumed run evaluates and finishes as the uninterrupted one."""
    from reid.evaluation import model as evaluation_model

    real = evaluation_model.extract_features
    calls = []

    def extract(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:  # epoch 2's query extraction (epoch 1: query, gallery)
            os.kill(os.getpid(), signal.SIGTERM)
        return real(*args, **kwargs)

    def no_results(run: Path) -> None:
        assert not (run / "results.json").exists() and len(calls) == 3  # the gallery of epoch 2 was not extracted

    monkeypatch.setattr(evaluation_model, "extract_features", extract)
    run = stopped_then_resumed(reference, overrides, "during_last_eval", capsys, (2, 7), no_results,
                               undo=lambda: monkeypatch.setattr(evaluation_model, "extract_features", real))
    assert (run / "results.json").is_file() and (run / "features.mat").is_file()


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
