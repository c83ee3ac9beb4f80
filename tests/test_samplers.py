"""Samplers: coverage, batch shapes, determinism per (seed, epoch), P x K structure, DDP shards."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from reid.data import PKSampler, RandomBatchSampler, SequentialBatchSampler, shard


def test_random_batches_cover_every_index_once():
    s = RandomBatchSampler(103, 10, seed=0)
    batches = s.batches(0)
    assert [len(b) for b in batches] == [10] * 10 + [3] and len(s) == 11
    assert all(b.dtype == np.int64 for b in batches)
    assert sorted(np.concatenate(batches).tolist()) == list(range(103))
    dropped = RandomBatchSampler(103, 10, seed=0, drop_last=True)
    assert [len(b) for b in dropped.batches(0)] == [10] * 10 and len(dropped) == 10


def test_random_batches_are_a_function_of_seed_and_epoch():
    a, b = RandomBatchSampler(50, 8, seed=1), RandomBatchSampler(50, 8, seed=1)
    same = lambda x, y: all(np.array_equal(p, q) for p, q in zip(x, y)) and len(x) == len(y)  # noqa: E731
    assert same(a.batches(3), b.batches(3))
    assert same(a.batches(3)[2:], b.batches(3)[2:])  # mid-epoch resume
    assert not same(a.batches(3), a.batches(4))
    assert not same(a.batches(3), RandomBatchSampler(50, 8, seed=2).batches(3))


def test_sequential_batches():
    s = SequentialBatchSampler(7, 3)
    assert [b.tolist() for b in s.batches()] == [[0, 1, 2], [3, 4, 5], [6]] and len(s) == 3


def test_pk_batches():
    labels = [0] * 9 + [1] * 2 + [2] * 5 + [3] * 4 + [4] * 8 + [5] * 1
    s = PKSampler(labels, num_ids=3, num_instances=4, seed=0)
    batches = s.batches(0)
    assert batches and all(len(b) == 12 and b.dtype == np.int64 for b in batches)
    lab = np.array(labels)
    used = Counter()
    for b in batches:
        groups = lab[b].reshape(3, 4)
        assert (groups == groups[:, :1]).all()          # each row is one identity
        assert len(set(groups[:, 0].tolist())) == 3     # P distinct identities
        used.update(b.tolist())
    # identities with >= K images never repeat an image within an epoch
    assert all(n == 1 for i, n in used.items() if labels.count(labels[i]) >= 4)
    # identities with < K images are sampled with replacement up to K
    small = [b for b in batches if 1 in set(lab[b].tolist()) or 5 in set(lab[b].tolist())]
    assert small
    assert all(np.array_equal(x, y) for x, y in zip(batches, s.batches(0)))
    assert not all(np.array_equal(x, y) for x, y in zip(batches, s.batches(1)))
    with pytest.raises(ValueError, match="num_ids"):
        PKSampler([0, 0, 1], num_ids=3, num_instances=2, seed=0)


@pytest.mark.parametrize("n, world", [(10, 4), (8, 2), (3, 4), (64, 8)])
def test_shard_partitions_the_global_batch(n, world):
    batch = np.arange(100, 100 + n, dtype=np.int64)
    parts = [shard(batch, r, world) for r in range(world)]
    assert np.array_equal(np.concatenate(parts), batch)
    sizes = [len(p) for p in parts]
    assert max(sizes) - min(sizes) <= 1 and sizes == sorted(sizes, reverse=True)
    with pytest.raises(ValueError):
        shard(batch, world, world)


def test_a_last_batch_of_one_image_joins_the_previous_batch():
    sampler = RandomBatchSampler(33, 8, seed=0)  # 4 x 8 + 1
    batches = sampler.batches(epoch=1)
    assert [len(b) for b in batches] == [8, 8, 8, 9] and len(sampler) == 4
    assert sorted(np.concatenate(batches).tolist()) == list(range(33))
    assert [len(b) for b in RandomBatchSampler(1, 8, seed=0).batches(1)] == [1]
    assert [len(b) for b in RandomBatchSampler(34, 8, seed=0).batches(1)] == [8, 8, 8, 8, 2]


@pytest.mark.parametrize("n", [1, 5, 6, 7, 11, 12, 13, 17, 18])
@pytest.mark.parametrize("min_batch", [1, 2, 4, 6])
def test_a_last_batch_below_min_batch_joins_the_one_before(n, min_batch):
    """Hand rule: full batches of 6, then the rest r alone when r >= min_batch (or nothing precedes it)."""
    full, rest = divmod(n, 6)
    want = [6] * full + ([rest] if rest else [])
    if rest and rest < min_batch and full:
        want[-2:] = [6 + rest]
    for s in (RandomBatchSampler(n, 6, seed=0, min_batch=min_batch), SequentialBatchSampler(n, 6, min_batch=min_batch)):
        batches = s.batches(1)
        assert [len(b) for b in batches] == want and len(s) == len(want)
        assert sorted(np.concatenate(batches).tolist()) == list(range(n))
    with pytest.raises(ValueError, match="min_batch"):
        RandomBatchSampler(n, 6, seed=0, min_batch=0)
