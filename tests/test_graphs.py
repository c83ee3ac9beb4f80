"""train.cuda_graphs on the CPU, through a stand-in for the capture (reid/engine/graphs.py): the static
buffers are filled from each batch, a short last batch runs eagerly, a learning-rate change reaches the
replayed step, a captured run trains exactly as the eager one and resumes mid-epoch exactly; what cannot
be captured says why; ``true`` on the CPU is one error line. The real capture runs in the GPU check."""

from __future__ import annotations

import os
import runpy
import signal
from pathlib import Path

import pytest
import torch
from helpers import assert_same_run
from scipy.io import loadmat

from reid.config import load_config
from reid.engine import graphs
from reid.engine import trainer as trainer_module
from reid.engine.run import train

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "configs" / "demo_standard.yaml"
TRAIN = runpy.run_path(str(REPO / "train.py"))["main"]


class ReplayByCalling:
    """Stand-in capture: records the step function and "replays" it by calling it on the static buffers.

    Like a CUDA graph, a replay sees the Python numbers of the optimisers' groups as they were at the
    capture (each group's entries are put back to the captured ones for the call): a learning rate that
    lives in a tensor filled in place is current, one replaced by a new float is stale.
    """

    device_types = ("cpu",)

    def __init__(self) -> None:
        self.optimizers: list[torch.optim.Optimizer] = []  # set by the spied Trainer.prepare_capture
        self.captures = 0
        self.replaying = False

    def __call__(self, step):
        self.captures += 1
        frozen = [(group, dict(group)) for o in self.optimizers for group in o.param_groups]

        def replay():
            now = [(group, dict(group)) for group, _ in frozen]
            for group, values in frozen:
                group.update(values)
            self.replaying = True
            try:
                return step()
            finally:
                self.replaying = False
                for group, values in now:
                    group.update(values)

        return replay


class SpiedCapturedRun:
    """A run with the stand-in capture, recording per train step (epoch, step, batch size, replayed, the
    tensor the step got, whether it equals the augmented batch of that step)."""

    def __init__(self, monkeypatch, cfg) -> None:
        self.capture, self.steps, batches = ReplayByCalling(), [], []
        real_step, real_batch = trainer_module.Trainer.train_step, trainer_module.Trainer.train_batch
        real_prepare = trainer_module.Trainer.prepare_capture

        def batch(trainer, global_idx, epoch, step):
            images, labels = real_batch(trainer, global_idx, epoch, step)
            batches.append((epoch, step, images.clone()))
            return images, labels

        def step(trainer, images, labels):
            epoch, index, augmented = batches[-1]
            self.steps.append((epoch, index, len(labels), self.capture.replaying, images,
                               torch.equal(images, augmented)))
            return real_step(trainer, images, labels)

        def prepare(trainer):
            self.capture.optimizers = trainer.optimizers()
            real_prepare(trainer)

        monkeypatch.setattr(graphs, "CAPTURE", self.capture)
        monkeypatch.setattr(trainer_module.Trainer, "train_batch", batch)
        monkeypatch.setattr(trainer_module.Trainer, "train_step", step)
        monkeypatch.setattr(trainer_module.Trainer, "prepare_capture", prepare)
        self.out = train(cfg, device="cpu", progress=False)


@pytest.fixture(scope="module")
def runs(tmp_path_factory, synthetic_root):
    """The same 2-epoch run (7 batches of 6, the last of 4; the learning rate x0.1 at epoch 2) eager and with
    the stand-in capture."""
    tmp = tmp_path_factory.mktemp("graphs")
    overrides = [f"data.root={synthetic_root}", "data.synthetic=null", f"data.cache_dir={tmp / 'cache'}",
                 "data.size=[32,16]", "data.val_per_id=1", "model.name=resnet18", "model.pretrained=none",
                 "train.batch_size=6", "train.epochs=2", "eval.every_epochs=0", f"output.root={tmp / 'outputs'}",
                 "schedule.name=step", "schedule.step_size=1", "schedule.gamma=0.1"]
    eager = train(load_config(CONFIG, [*overrides, "output.name=eager"]), device="cpu", progress=False)
    with pytest.MonkeyPatch.context() as mp:
        captured = SpiedCapturedRun(mp, load_config(CONFIG, [*overrides, "output.name=captured",
                                                             "train.cuda_graphs=true"]))
    return eager, captured


def test_static_buffers_are_filled_from_each_batch(runs):
    """After 3 eager steps the full-size batches are replayed: every replay gets the same static buffer,
    holding that step's augmented batch."""
    _, captured = runs
    full = [s for s in captured.steps if s[2] == 6]
    assert [s[3] for s in full[:3]] == [False] * 3 and all(s[3] for s in full[3:])
    assert captured.capture.captures == 1
    replayed = [s for s in full if s[3]]
    assert len(replayed) == 2 * 6 - 3 and all(s[4] is replayed[0][4] for s in replayed)
    assert all(s[5] for s in captured.steps)


def test_a_short_last_batch_runs_eagerly(runs):
    _, captured = runs
    short = [s for s in captured.steps if s[2] != 6]
    assert [(s[0], s[1], s[2]) for s in short] == [(1, 6, 4), (2, 6, 4)]
    assert not any(s[3] for s in short)


def test_a_learning_rate_change_reaches_the_replayed_step_and_the_run_equals_the_eager_one(runs):
    """Epoch 2's rate is a tenth of epoch 1's, and its steps are all replays of the graph captured in epoch 1:
    the captured run still ends with the eager run's weights and .mat (a stale rate would change both)."""
    eager, captured = runs
    lr = loadmat(captured.out / "mini_batch_data.mat")["train_lr"][0]
    assert lr[0] == pytest.approx(10 * lr[-1])
    assert all(s[3] for s in captured.steps if s[0] == 2 and s[2] == 6)
    assert_same_run(eager, captured.out)


@pytest.fixture
def one_thread():
    """One intra-op thread, as in conftest's demo_study reference (the thread count changes float sums)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_a_captured_run_resumed_mid_epoch_equals_the_uninterrupted_one(demo_study, one_thread, tmp_path,
                                                                     monkeypatch, capsys):
    """Stopped by SIGTERM in epoch 1's 5th step (its 2nd replay), resumed (3 eager full steps, a new capture): it
    ends as the uninterrupted eager run of the study (same .mat arrays, same weights)."""
    root, common = demo_study
    capture = ReplayByCalling()
    monkeypatch.setattr(graphs, "CAPTURE", capture)
    real_prepare, real_step, calls = trainer_module.Trainer.prepare_capture, trainer_module.Trainer.train_step, []

    def prepare(trainer):
        capture.optimizers = trainer.optimizers()
        real_prepare(trainer)

    def step(trainer, images, labels):
        calls.append(capture.replaying)
        if len(calls) == 5:
            os.kill(os.getpid(), signal.SIGTERM)
        return real_step(trainer, images, labels)

    monkeypatch.setattr(trainer_module.Trainer, "prepare_capture", prepare)
    monkeypatch.setattr(trainer_module.Trainer, "train_step", step)
    argv = ["--config", str(CONFIG), "--device", "cpu", "--no-progress", "--resume", "auto",
            *(a for o in [*common, "seed=0", f"output.root={tmp_path}", "output.name=demo_standard_s0",
                          "train.cuda_graphs=true"] for a in ("--set", o))]
    assert TRAIN(argv) == 75
    assert calls == [False, False, False, True, True]
    assert "stopped at epoch 1, step 5" in capsys.readouterr().err
    assert TRAIN(argv) == 0
    # epoch 1's steps 5 and 6 (short), epoch 2's 0 and 1: eager; then replays, but for the short last batch
    assert calls[5:9] == [False] * 4 and calls[9:] == [True] * 4 + [False] and capture.captures == 2
    assert_same_run(root / "demo_standard_s0", tmp_path / "demo_standard_s0")


def test_a_step_that_cannot_be_captured_runs_eagerly_with_one_line_saying_why():
    def fails(step):
        raise RuntimeError("CUDA error: operation not permitted when stream is capturing\nmore")

    lines, seen = [], []
    step = graphs.CapturedStep(lambda x: seen.append(x) or x.sum(), before_capture=lambda: None, log=lines.append,
                               capture=fails, warmup=1)
    for i in range(3):
        step(torch.full((2,), float(i)))
    assert [float(x[0]) for x in seen] == [0.0, 1.0, 2.0]  # every batch ran, eagerly
    assert lines == ["train.cuda_graphs: the step runs eagerly: it cannot be captured (RuntimeError: CUDA error: "
                     "operation not permitted when stream is capturing); a criterion that reads a value back to "
                     "the host (.item(), .cpu(), a Python if on a tensor) cannot be, for one"]


@pytest.mark.parametrize("device, distributed, scaler, expected", [
    ("cpu", False, False, "a captured step needs CUDA and this run trains on cpu"),
    ("cuda", True, False, "under torchrun"),
    ("cuda", False, True, "fp16's GradScaler"),
    ("cuda", False, False, None),
])
def test_why_a_step_runs_eagerly(device, distributed, scaler, expected):
    reason = graphs.eager_reason(torch.device(device), distributed, scaler)
    assert reason == expected if expected is None else reason.startswith(expected)


def test_cuda_graphs_true_on_the_cpu_is_one_error_line_before_any_run_directory(tiny_overrides, tmp_path, capsys):
    argv = ["--config", str(CONFIG), "--device", "cpu", "--no-progress",
            *(a for o in [*tiny_overrides, "train.cuda_graphs=true"] for a in ("--set", o))]
    assert TRAIN(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["error: train.cuda_graphs = true needs CUDA (a captured step replays CUDA kernels) and this run "
                   "trains on cpu; set it to auto or false, or train on a GPU"]
    assert not (tmp_path / "outputs").exists()
