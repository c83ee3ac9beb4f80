"""torchrun (DDP, gloo on the CPU): sharding of global batches, one .mat of global
mini-batches written by rank 0, and resume after the whole job is killed."""

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


KILL_JOB = """
import os, runpy, signal, sys
from reid.engine import trainer

real_step, calls = trainer.Trainer.train_step, [0]

def step(self, images, labels):
    calls[0] += 1
    if os.environ.get("RANK") == "0" and calls[0] == int(os.environ["KILL_AT_STEP"]):
        os.kill(os.getpid(), signal.SIGKILL)  # rank 0 dies; torchrun then stops rank 1 and fails
    return real_step(self, images, labels)

trainer.Trainer.train_step = step
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def torchrun(script: Path, overrides: list[str], *extra: str, nproc: int = 2) -> list[str]:
    sets = [a for o in overrides for a in ("--set", o)]
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", str(script),
            *([str(REPO / "train.py")] if script.name != "train.py" else []),
            "--config", str(REPO / "configs" / "demo_standard.yaml"), "--device", "cpu", "--no-progress", *sets,
            *extra]


def env() -> dict:
    return dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")


def test_torchrun_two_processes_trains_resumes_and_logs_global_batches(tiny_overrides, tmp_path):
    overrides = [*tiny_overrides, "train.epochs=3", "checkpoint.every_steps=1", "output.name=ddp"]
    out = Path(next(o.split("=", 1)[1] for o in tiny_overrides if o.startswith("output.root="))) / "ddp"
    killer = tmp_path / "kill_job.py"
    killer.write_text(KILL_JOB)
    # Step 10 is epoch 2's third step: the job dies mid-epoch, after epoch 1's evaluation.
    killed = subprocess.run(torchrun(killer, overrides, "--resume", "auto"), env=dict(env(), KILL_AT_STEP="10"),
                            capture_output=True, text=True, timeout=300)
    assert killed.returncode != 0 and "exitcode: -9" in killed.stderr, killed.stdout + killed.stderr
    state = torch.load(out / "checkpoints" / "last.pt", weights_only=True)
    assert (state["epoch"], state["step"]) == (2, 2)
    resumed = subprocess.run(torchrun(REPO / "train.py", overrides, "--resume", "auto"), env=env(),
                             capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    m = loadmat(out / "mini_batch_data.mat")
    # global mini-batches: 40 train images in batches of 6 -> 7 per epoch; 8 val images -> 2 per epoch
    assert m["train_batch_size"][0].tolist() == [6, 6, 6, 6, 6, 6, 4] * 3
    assert m["val_batch_size"][0].tolist() == [6, 2] * 3
    assert m["train_epoch"][0].tolist() == [1] * 7 + [2] * 7 + [3] * 7
    acc = m["train_acc"][0] * m["train_batch_size"][0]
    assert np.allclose(acc, np.round(acc))  # a global count of correct images, not one rank's fraction
    assert np.isfinite(m["train_loss"]).all() and m["eval_epoch"][0].tolist() == [1, 2, 3]
    assert "resumed from" in (out / "log.txt").read_text(), resumed.stdout + resumed.stderr
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == [
        "checkpoints", "config.yaml", "features.mat", "log.txt", "mini_batch_data.mat", "results.json"]


def test_no_process_gets_fewer_than_two_train_images_or_no_val_image(tiny_overrides):
    """3 processes, batches of 6: the last train batch (4 = 1-2 images each) and val batch (2) are merged."""
    overrides = [*tiny_overrides, "train.epochs=1", "output.name=three"]
    out = Path(next(o.split("=", 1)[1] for o in tiny_overrides if o.startswith("output.root="))) / "three"
    done = subprocess.run(torchrun(REPO / "train.py", overrides, nproc=3), env=env(), capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    m = loadmat(out / "mini_batch_data.mat")
    assert m["train_batch_size"][0].tolist() == [6, 6, 6, 6, 6, 10]
    assert m["val_batch_size"][0].tolist() == [8]
    assert np.isfinite(m["train_loss"]).all() and np.isfinite(m["val_loss"]).all()


def test_a_global_batch_smaller_than_two_per_process_is_refused(tiny_overrides):
    overrides = [*tiny_overrides, "train.batch_size=5", "output.name=small"]
    done = subprocess.run(torchrun(REPO / "train.py", overrides, nproc=3), env=env(), capture_output=True,
                          text=True, timeout=300)
    assert done.returncode != 0
    assert ("error: train.batch_size = 5 is the global batch, split over 3 processes, and each needs at least 2 "
            "images; set train.batch_size >= 6 or start fewer processes") in done.stderr, done.stdout + done.stderr
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
