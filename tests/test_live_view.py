"""Watching a run while it trains: ``train.tensorboard`` writes the .mat's per-mini-batch train/val scalars and
the evaluations as TensorBoard events, read back here equal to the .mat step for step, before and after a stop
and a resume; ``scripts/compare.py`` on a run in progress plots and tabulates its curves so far."""

from __future__ import annotations

import os
import runpy
import signal
from pathlib import Path

import numpy as np
import pytest
from scipy.io import loadmat

from reid.config import load_config
from reid.engine import trainer
from reid.engine.run import train
from reid.errors import Stopped

REPO = Path(__file__).resolve().parents[1]
SCALARS = ["train_loss", "train_acc", "train_nll", "train_lr", "val_loss", "val_acc", "val_nll", "val_ece",
           "val_confidence", "val_feature_ratio", "eval_rank1", "eval_rank5", "eval_rank10", "eval_mAP"]
STEPS = {"eval_": "eval_epoch", "val_ece": "val_summary_epoch", "val_confidence": "val_summary_epoch",
         "val_feature_ratio": "val_summary_epoch"}  # the rows of one entry per epoch: their epochs are the steps


def comparable(value: float) -> float | str:
    """nan as a string, so that equal rows compare equal (val_feature_ratio is nan with one val image per id)."""
    return "nan" if np.isnan(value) else value


def board(run: Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar of the run's TensorBoard folder as TensorBoard shows it: (step, value) in order."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run / "tensorboard"), size_guidance={"scalars": 0})  # 0: keep every event
    events.Reload()
    return {tag: [(e.step, comparable(e.value)) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def mat_as_board(run: Path) -> dict[str, list[tuple[int, float]]]:
    """What the board must hold: each per-mini-batch .mat row at step 1..N, each evaluation and each val phase's
    whole-split measure at its epoch (TensorBoard keeps float32)."""
    m = loadmat(run / "mini_batch_data.mat")
    out = {}
    for tag in SCALARS:
        values = m[tag][0] if m[tag].size else np.zeros(0)
        epochs = next((m[key][0] for prefix, key in STEPS.items() if tag.startswith(prefix)), None)
        steps = epochs if epochs is not None and values.size else range(1, values.size + 1)
        if values.size:
            out[tag] = [(int(s), comparable(float(np.float32(v)))) for s, v in zip(steps, values)]
    return out


@pytest.fixture(scope="module")
def watched(synthetic_root, tmp_path_factory):
    """A 2-epoch tiny run with train.tensorboard, a checkpoint every 2 steps, evaluated after each epoch,
    stopped by SIGTERM in epoch 2's fourth step (a run in progress): (its config, its run directory)."""
    tmp = tmp_path_factory.mktemp("live")
    cfg = load_config(REPO / "configs" / "demo_standard.yaml",
                      [f"data.root={synthetic_root}", "data.synthetic=null", f"data.cache_dir={tmp / 'cache'}",
                       "data.size=[32,16]", "data.val_per_id=1", "model.name=resnet18", "train.batch_size=6",
                       "train.epochs=2", "eval.every_epochs=1", "checkpoint.every_steps=2", "train.tensorboard=true",
                       f"output.root={tmp / 'outputs'}", "output.name=watched"])
    real, calls = trainer.Trainer.train_step, [0]

    def step(self, images, labels):
        calls[0] += 1
        if calls[0] == 7 + 4:
            os.kill(os.getpid(), signal.SIGTERM)
        return real(self, images, labels)

    trainer.Trainer.train_step = step
    try:
        with pytest.raises(Stopped):
            train(cfg, device="cpu", progress=False)
    finally:
        trainer.Trainer.train_step = real
    return cfg, tmp / "outputs" / "watched"


def test_compare_on_a_run_in_progress_shows_its_curves_so_far(watched, tmp_path, capsys):
    _, run = watched
    compare_main = runpy.run_path(str(REPO / "scripts" / "compare.py"))["main"]
    assert compare_main([str(run), "--out", str(tmp_path / "so_far.png")]) == 0
    table = capsys.readouterr().out
    assert (tmp_path / "so_far.png").stat().st_size > 0 and (tmp_path / "so_far.md").is_file()
    assert "| watched |" in table, table
    m = loadmat(run / "mini_batch_data.mat")
    assert m["train_loss"][0].size == 7 + 4  # epoch 1 and epoch 2's first 4 steps: what the curves show
    assert m["eval_epoch"][0].tolist() == [1]


def test_tensorboard_events_equal_the_mat_step_for_step_before_and_after_a_resume(watched):
    cfg, run = watched
    assert board(run) == mat_as_board(run)  # in progress: what its last checkpoint holds
    train(cfg, device="cpu", resume="auto", progress=False)
    final = mat_as_board(run)
    assert [len(final[t]) for t in ("train_loss", "val_loss", "eval_mAP")] == [2 * 7, 2 * 2, 2]  # 40/8 images, batch 6
    assert len(final["train_nll"]) == 2 * 7 and [s for s, _ in final["val_ece"]] == [1, 2]
    assert board(run) == final  # each value once: what the stopped life wrote is purged, not shown twice


def test_without_a_terminal_a_run_prints_a_step_line_after_its_first_step_then_every_interval(monkeypatch, capsys):
    """Output to a pipe or a file (a study's runs): no bar, but a step line after the first training step and
    then once STEP_LINE_SECONDS have passed, with the running loss and accuracy of the steps so far."""
    import torch

    from reid.engine import records

    interval = records.STEP_LINE_SECONDS
    clock = iter([0.0, 5.0, 10.0, 5.0 + interval + 0.5, 5.0 + interval + 1.0])  # the bar's start, then each step
    monkeypatch.setattr(records.time, "perf_counter", lambda: next(clock))
    steps = records.StepRecords([4, 4, 2, 4], torch.device("cpu"))
    lines = records.StepLines(True)
    with records.PhaseBar("epoch 1/2 train", 14, torch.device("cpu"), enabled=True, steps=4, lines=lines) as bar:
        assert bar.bar.disable  # captured output is no terminal
        for step, (loss, correct) in enumerate([(2.0, 1), (1.0, 3), (4.0, 0), (3.0, 4)]):
            size = steps.batch_sizes[step]
            steps.record(step, {"loss": torch.tensor(loss * size), "acc": torch.tensor(correct), "nll": torch.tensor(0.0)})
            bar.advance(steps.batch_sizes[step], steps, step + 1)
    # by hand: step 1: loss 2.0, 1/4 correct, 4 images in 5 s; step 3: (2*4 + 1*4 + 4*2) / 10 = 2.0, 4/10
    # correct, 10 images since the start; steps 2 and 4 come before the interval has passed since the last line
    assert capsys.readouterr().out.splitlines() == [
        "epoch 1/2 train: step 1/4, 0.8 img/s, loss 2.0000 acc 0.250",
        f"epoch 1/2 train: step 3/4, {10 / (5.0 + interval + 0.5):.1f} img/s, loss 2.0000 acc 0.400"]
