"""Checkpoints written in the background (CheckpointStore.save_in_background): the call returns while a thread
writes a host copy of the state; a second checkpoint starts only once the first is on disk; a write's error
reaches the training thread; a run's stop and end wait for the write. (A crash at any moment leaving the last
complete checkpoint: tests/test_resume.py and tests/test_preemption.py, unchanged.)"""

from __future__ import annotations

import os
import runpy
import signal
import threading
import time
from pathlib import Path

import pytest
import torch

from reid.engine import checkpoint as checkpoint_module
from reid.engine.checkpoint import CheckpointStore, load_checkpoint
from reid.errors import OutputError

REPO = Path(__file__).resolve().parents[1]
TRAIN = runpy.run_path(str(REPO / "train.py"))["main"]


class GatedWrites:
    """``atomic_torch_save`` that waits for ``release`` before each write, recording ("start"/"end", epoch)."""

    def __init__(self, monkeypatch) -> None:
        self.events: list[tuple[str, int]] = []
        self.release = threading.Event()
        real = checkpoint_module.atomic_torch_save

        def write(state, path):
            self.events.append(("start", state["epoch"]))
            assert self.release.wait(10)
            real(state, path)
            self.events.append(("end", state["epoch"]))

        monkeypatch.setattr(checkpoint_module, "atomic_torch_save", write)


def state(epoch: int, weights: torch.Tensor) -> dict:
    return {"model": {"w": weights}, "epoch": epoch}


def test_a_background_save_returns_at_once_and_writes_the_state_of_its_call_then_what_follows_it(
        tmp_path, monkeypatch):
    """The files that follow a checkpoint (the trainer's .mat and log) are written after it, from its copy."""
    writes, store, weights = GatedWrites(monkeypatch), CheckpointStore(tmp_path), torch.zeros(3)
    store.save_in_background(state(1, weights), then=lambda saved: writes.events.append(
        ("then", saved["epoch"], store.last.exists(), saved["model"]["w"].tolist())))
    weights.add_(1.0)  # training goes on at once, in place
    assert not store.last.exists()
    writes.release.set()
    store.wait()
    assert torch.equal(load_checkpoint(store.last)["model"]["w"], torch.zeros(3))
    assert writes.events == [("start", 1), ("end", 1), ("then", 1, True, [0.0, 0.0, 0.0])]


def test_a_second_checkpoint_starts_only_once_the_first_is_on_disk(tmp_path, monkeypatch):
    writes, store = GatedWrites(monkeypatch), CheckpointStore(tmp_path)
    store.save_in_background(state(1, torch.zeros(3)))
    second = threading.Thread(target=store.save_in_background, args=(state(2, torch.ones(3)),))
    second.start()
    time.sleep(0.3)
    assert writes.events == [("start", 1)] and second.is_alive()  # the second save waits for the first write
    writes.release.set()
    second.join(10)
    store.wait()
    assert writes.events == [("start", 1), ("end", 1), ("start", 2), ("end", 2)]
    assert load_checkpoint(store.last)["epoch"] == 2 and load_checkpoint(store.previous)["epoch"] == 1


def test_a_failed_background_write_is_raised_in_the_training_thread(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    store = CheckpointStore(blocker)
    store.save_in_background(state(1, torch.zeros(3)))
    with pytest.raises(OutputError, match=str(blocker / "checkpoints" / "last.pt")):
        store.wait()
    store.wait()  # raised once


@pytest.mark.parametrize("stop_at_step, code, expected", [(None, 0, (2, 7, True)), (3, 75, (1, 3, False))])
def test_the_end_of_a_run_and_a_stop_wait_for_the_checkpoint_write(tiny_overrides, tmp_path, monkeypatch,
                                                                  stop_at_step, code, expected):
    """Each write takes 0.5 s longer: when train.py returns (finished, or stopped by SIGTERM after step 3), its
    last checkpoint is on disk all the same."""
    from reid.engine import trainer

    real_write, real_step, calls = checkpoint_module.atomic_torch_save, trainer.Trainer.train_step, []

    def slow_write(obj, path):
        time.sleep(0.5)
        real_write(obj, path)

    def step(self, images, labels):
        calls.append(1)
        if len(calls) == stop_at_step:
            os.kill(os.getpid(), signal.SIGTERM)
        return real_step(self, images, labels)

    monkeypatch.setattr(checkpoint_module, "atomic_torch_save", slow_write)
    monkeypatch.setattr(trainer.Trainer, "train_step", step)
    argv = ["--config", str(REPO / "configs" / "demo_standard.yaml"), "--device", "cpu", "--no-progress",
            *(a for o in [*tiny_overrides, "eval.every_epochs=0", "output.name=slow"] for a in ("--set", o))]
    assert TRAIN(argv) == code
    last = torch.load(tmp_path / "outputs" / "slow" / "checkpoints" / "last.pt", weights_only=True)
    assert (last["epoch"], last["step"], last["finished"]) == expected
