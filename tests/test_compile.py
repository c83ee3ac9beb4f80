"""train.compile: a compiled run stops recompiling after its first steps, read from torch._dynamo's counters.

Recompiling is decided by TorchDynamo's guards (what a compiled frame assumed: shapes, modes, globals), the
same whatever backend turns the captured graph into code, so the run compiles with the ``eager`` backend
(Dynamo's capture and guards, no code generation): seconds on the CPU instead of inductor's minutes."""

from __future__ import annotations

import functools
from pathlib import Path

import torch
import torch._dynamo
from torch._dynamo.utils import counters

from reid.config import load_config
from reid.engine import trainer as trainer_module
from reid.engine.run import train

REPO = Path(__file__).resolve().parents[1]


def test_a_compiled_run_stops_recompiling_after_its_first_steps(tiny_overrides, monkeypatch):
    """4 batches per epoch (3 of 12, a short one of 4), 2 epochs: the full batch compiles once, the short one
    once more (a second size: Dynamo makes the batch dimension dynamic); then nothing compiles again, through
    the val phase, the evaluation's eval mode and epoch 2; no graph breaks."""
    torch._dynamo.reset()
    counters.clear()
    monkeypatch.setattr(torch, "compile", functools.partial(torch.compile, backend="eager"))
    compiled_after_step = []
    real_step = trainer_module.Trainer.train_step

    def step(self, images, labels):
        out = real_step(self, images, labels)
        compiled_after_step.append((len(labels), counters["frames"]["total"], counters["stats"]["unique_graphs"]))
        return out

    monkeypatch.setattr(trainer_module.Trainer, "train_step", step)
    cfg = load_config(REPO / "configs" / "demo_standard.yaml",
                      [*tiny_overrides, "train.batch_size=12", "train.compile=true", "eval.every_epochs=1"])
    train(cfg, device="cpu", progress=False)
    assert [n for n, _, _ in compiled_after_step] == [12, 12, 12, 4] * 2
    assert [(frames, graphs) for _, frames, graphs in compiled_after_step] == [(1, 1)] * 3 + [(2, 2)] * 5
    assert not counters["graph_break"]
