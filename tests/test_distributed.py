"""torchrun (DDP, gloo on the CPU): sharding of global batches, the refusal of a global batch too small
for the processes, and 2 processes training as 1. The torchrun run that is stopped, killed and restarted,
and whose .mat holds the global mini-batches with the merged last batches, is in tests/test_preemption.py
(one launch of torch for both)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.io import loadmat

from reid.data import PKSampler, RandomBatchSampler, shard

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("world_size", [1, 2, 3, 4])
def test_union_of_rank_shards_is_the_single_process_batch(world_size):
    labels = np.repeat(np.arange(12), 5)
    for sampler in (RandomBatchSampler(len(labels), 10, seed=3), PKSampler(labels, 4, 4, seed=3)):
        single = sampler.batches(epoch=2)  # what one process trains on, step by step
        for step, batch in enumerate(sampler.batches(epoch=2)):  # each rank builds the same global batches
            parts = [shard(batch, r, world_size) for r in range(world_size)]
            assert np.array_equal(np.concatenate(parts), single[step])
            assert sum(len(p) for p in parts) == len(single[step])


def env() -> dict:
    return dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")


def test_a_global_batch_smaller_than_two_per_process_is_refused(tiny_overrides, monkeypatch):
    """Seen from rank 0 of 3 processes (the process group mocked away: the refusal comes before any
    collective): the error names the global batch and what to do, and no run directory is made."""
    from reid.config import load_config
    from reid.engine import distributed, trainer
    from reid.errors import ConfigError

    monkeypatch.setattr(distributed, "init_distributed", lambda device_type: distributed.DistInfo(0, 3, 0))
    cfg = load_config(REPO / "configs" / "demo_standard.yaml", [*tiny_overrides, "train.batch_size=5",
                                                                "output.name=small"])
    with pytest.raises(ConfigError) as refused:
        trainer.train(cfg, device="cpu", progress=False)
    assert str(refused.value) == ("train.batch_size = 5 is the global batch, split over 3 processes, and each needs "
                                  "at least 2 images; set train.batch_size >= 6 or start fewer processes")
    assert not (Path(next(o.split("=", 1)[1] for o in tiny_overrides if o.startswith("output.root="))) / "small").exists()


def test_the_process_group_outlasts_rank_zero_evaluating_alone(monkeypatch):
    """The others wait at a barrier while rank 0 evaluates: the collective timeout must exceed 10 minutes."""
    from datetime import timedelta

    from reid.engine import distributed

    seen = {}
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setattr(distributed.dist, "is_initialized", lambda: False)
    monkeypatch.setattr(distributed.dist, "init_process_group", lambda **kw: seen.update(kw))
    info = distributed.init_distributed("cpu")
    assert (info.rank, info.world_size) == (1, 2) and seen["backend"] == "gloo"
    assert seen["timeout"] >= timedelta(hours=1)


def test_two_processes_train_as_one_with_every_criterion(tiny_overrides, tmp_path):
    """2 processes (gloo) against 1, for each criterion of tests/ddp_equivalence.py on a model without
    BatchNorm: the same per-step train loss and accuracy in the .mat, the same val loss and the same
    final weights (model and criterion), to 1e-5. One torchrun trains every run in the same processes."""
    import ddp_equivalence as runs

    from reid.engine.trainer import train

    two = tmp_path / "two"
    sets = [a for o in tiny_overrides for a in ("--set", o)]
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                           str(REPO / "tests" / "ddp_equivalence.py"), str(two), *sets],
                          env=dict(env(), PYTHONPATH=str(REPO)), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    for name in runs.RUNS:
        one = train(runs.config(name, tmp_path / "one", tiny_overrides), device="cpu", progress=False)
        a, b = loadmat(one / "mini_batch_data.mat"), loadmat(two / name / "mini_batch_data.mat")
        sizes = a["train_batch_size"][0].tolist()
        assert b["train_batch_size"][0].tolist() == sizes
        assert sizes in ([11, 11, 11, 7], [9] * 4), sizes  # shares of 6/5 and 4/3, or 5/4 (P x K)
        assert b["val_batch_size"][0].tolist() == a["val_batch_size"][0].tolist()
        for key in ("train_loss", "train_acc", "val_loss", "val_acc"):
            np.testing.assert_allclose(b[key][0], a[key][0], rtol=0, atol=1e-5, err_msg=f"{name}: {key}")
        state_a = torch.load(one / "checkpoints" / "last.pt", weights_only=True)
        state_b = torch.load(two / name / "checkpoints" / "last.pt", weights_only=True)
        for part in ("model", "criterion"):
            assert state_a[part].keys() == state_b[part].keys()
            for key, value in state_a[part].items():
                assert (value.double() - state_b[part][key].double()).abs().max() <= 1e-5, f"{name}: {part}.{key}"
        torch.manual_seed(0)  # the model as the runs initialise it: they trained away from it
        start = runs.BatchFreeNet(num_classes=8).state_dict()
        assert (state_a["model"]["neck.weight"] - start["neck.weight"]).abs().max() > 1e-3, name


@pytest.mark.parametrize("setting", ["auto", True, False])
@pytest.mark.parametrize("device_type", ["cpu", "cuda"])
@pytest.mark.parametrize("world_size", [1, 2, 4])
def test_sync_bn_auto_synchronises_batchnorm_exactly_when_several_cuda_processes_train(setting, device_type,
                                                                                     world_size):
    """The device and the number of processes are only given, not used: this runs on the CPU."""
    from torch import nn

    from reid.engine import distributed
    from reid.models import build_model

    model = build_model("resnet18", num_classes=4, pretrained="none")
    device = torch.device(device_type)
    net = distributed.with_batchnorm_sync(model, setting, device, world_size)
    synced = any(isinstance(m, nn.SyncBatchNorm) for m in net.modules())
    expected = world_size > 1 and (device_type == "cuda" if setting == "auto" else setting)
    assert synced == expected
    if synced:  # every BatchNorm, and nothing left per process
        assert not any(type(m) is nn.BatchNorm2d or type(m) is nn.BatchNorm1d for m in net.modules())
    note = distributed.per_process_batchnorm_note(model, setting, device, world_size)
    assert (note is not None) == (world_size > 1 and not expected)
    if note and device_type == "cpu":
        assert "no CPU implementation" in note


def test_the_log_says_once_that_batchnorm_stays_per_process_on_the_cpu(monkeypatch, tiny_overrides, capsys):
    """A 2-process CPU run of ResNet-18 seen from rank 0, the process group mocked away: one note."""
    from reid.config import load_config
    from reid.engine import distributed, trainer

    logged = []
    monkeypatch.setattr(distributed, "init_distributed", lambda device_type: distributed.DistInfo(0, 2, 0))
    monkeypatch.setattr(trainer.Trainer, "_wrap_for_training", lambda self, model: model)  # needs a process group
    monkeypatch.setattr(trainer.Trainer, "fit", lambda self, start: logged.extend(self.log_lines))
    cfg = load_config(REPO / "configs" / "demo_standard.yaml", [*tiny_overrides, "output.name=note"])
    trainer.train(cfg, device="cpu", progress=False)
    notes = [line for line in logged if "BatchNorm" in line]
    assert notes == ["note: BatchNorm normalises each of the 2 processes' shares by itself (PyTorch's SyncBatchNorm "
                     "has no CPU implementation), so the numbers differ from a 1-process run's"]


def test_share_dropout_applies_the_masks_one_process_draws_for_the_whole_batch():
    """Each share (4 and 3 rows of 7), with the generator seeded alike, gets its rows of nn.Dropout's output."""
    from torch import nn

    from reid.engine import distributed

    x = torch.randn(7, 10)
    torch.manual_seed(5)
    whole = nn.Dropout(0.4).train()(x)
    rows, shares = distributed.ShareRows(), []
    model = distributed.with_share_dropout(nn.Sequential(nn.Identity(), nn.Dropout(0.4)), rows).train()
    for lo, hi in [(0, 4), (4, 7)]:
        torch.manual_seed(5)
        rows.set(7, lo, hi)
        shares.append(model(x[lo:hi]))
    assert isinstance(model[1], distributed.ShareDropout)
    assert torch.equal(torch.cat(shares), whole) and (whole == 0).any()
    assert torch.equal(model.eval()(x), x)
