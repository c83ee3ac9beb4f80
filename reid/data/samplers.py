"""Index samplers: every epoch's batches are a pure function of (seed, epoch).

They return GLOBAL batches (lists of int64 index arrays); under DDP each rank
takes its contiguous part with :func:`shard`. A run resumed at step ``s`` of an
epoch continues with ``sampler.batches(epoch)[s:]``: the order is the same as in
the uninterrupted run.

Example::

    >>> sampler = RandomBatchSampler(len(train), batch_size=64, seed=0)
    >>> for step, idx in enumerate(sampler.batches(epoch)[start_step:], start_step):
    ...     images = cache[torch.from_numpy(idx)]
    >>> pk = PKSampler(train_labels, num_ids=16, num_instances=4, seed=0)   # triplet batches
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Sequence

import numpy as np


def _rng(seed: int, epoch: int, salt: int) -> np.random.Generator:
    return np.random.default_rng([int(seed), int(epoch), salt])


def _check_positive(**values: int) -> None:
    for name, v in values.items():
        if int(v) < 1:
            raise ValueError(f"{name}={v} must be at least 1")


def _cut(order: np.ndarray, batch_size: int, min_batch: int) -> list[np.ndarray]:
    """``order`` in batches of ``batch_size``; a last batch smaller than ``min_batch`` joins the one before."""
    batches = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    if len(batches) > 1 and len(batches[-1]) < min_batch:
        batches[-2:] = [np.concatenate(batches[-2:])]
    return batches


class RandomBatchSampler:
    """A fresh permutation of ``range(num_samples)`` each epoch, cut into batches.

    The last batch is partial unless ``drop_last``; a last batch smaller than ``min_batch``
    joins the one before it, because BatchNorm cannot train on one sample. Under torchrun
    the trainer asks for 2 per process, so that no process gets fewer than 2 images.
    """

    def __init__(self, num_samples: int, batch_size: int, seed: int, drop_last: bool = False,
                 min_batch: int = 2) -> None:
        _check_positive(batch_size=batch_size, min_batch=min_batch)
        self.num_samples, self.batch_size, self.seed, self.drop_last = int(num_samples), int(batch_size), int(seed), drop_last
        self.min_batch = int(min_batch)

    def batches(self, epoch: int) -> list[np.ndarray]:
        order = _rng(self.seed, epoch, 0).permutation(self.num_samples).astype(np.int64)
        if self.drop_last:
            order = order[:(len(order) // self.batch_size) * self.batch_size]
        return _cut(order, self.batch_size, self.min_batch)

    def __len__(self) -> int:
        return len(self.batches(0))  # the same for every epoch


class SequentialBatchSampler:
    """``range(num_samples)`` in order, in batches (val curves and evaluation).

    A last batch smaller than ``min_batch`` joins the one before it (under torchrun the
    trainer asks for one image per process, so that no process gets an empty part).
    """

    def __init__(self, num_samples: int, batch_size: int, min_batch: int = 1) -> None:
        _check_positive(batch_size=batch_size, min_batch=min_batch)
        self.num_samples, self.batch_size, self.min_batch = int(num_samples), int(batch_size), int(min_batch)

    def batches(self, epoch: int = 0) -> list[np.ndarray]:
        return _cut(np.arange(self.num_samples, dtype=np.int64), self.batch_size, self.min_batch)

    def __len__(self) -> int:
        return len(self.batches())


class PKSampler:
    """P identities x K images per batch (BoT's RandomIdentitySampler semantics).

    Each epoch, every identity's images are shuffled and cut into chunks of K (an
    identity with fewer than K images is sampled with replacement up to K, and the
    incomplete last chunk of the others is dropped); batches then take P distinct
    identities that still have chunks, at random, until fewer than P remain.
    Batch ``i`` holds identity chunks in order, so ``batch.reshape(P, K)`` rows are
    identities.
    """

    def __init__(self, labels: Sequence[int], num_ids: int, num_instances: int, seed: int) -> None:
        _check_positive(num_ids=num_ids, num_instances=num_instances)
        labels = np.asarray(labels, dtype=np.int64)
        self.num_ids, self.num_instances, self.seed = int(num_ids), int(num_instances), int(seed)
        groups: dict[int, list[int]] = defaultdict(list)
        for i, label in enumerate(labels.tolist()):
            groups[label].append(i)
        self.pids = sorted(groups)
        self.index = {pid: np.asarray(groups[pid], dtype=np.int64) for pid in self.pids}
        if len(self.pids) < self.num_ids:
            raise ValueError(f"PKSampler needs at least num_ids={self.num_ids} identities, the labels have {len(self.pids)}")

    @property
    def batch_size(self) -> int:
        return self.num_ids * self.num_instances

    def batches(self, epoch: int) -> list[np.ndarray]:
        rng = _rng(self.seed, epoch, 1)
        K, P = self.num_instances, self.num_ids
        chunks: dict[int, list[np.ndarray]] = {}
        for pid in self.pids:
            idx = self.index[pid]
            idx = rng.choice(idx, size=K, replace=True) if len(idx) < K else rng.permutation(idx)
            chunks[pid] = [idx[i:i + K] for i in range(0, len(idx) - K + 1, K)]
        available = [pid for pid in self.pids if chunks[pid]]
        out = []
        while len(available) >= P:
            chosen = rng.choice(len(available), size=P, replace=False)
            picked = [available[j] for j in chosen]
            out.append(np.concatenate([chunks[pid].pop(0) for pid in picked]).astype(np.int64))
            available = [pid for pid in available if chunks[pid]]
        return out

    def __len__(self) -> int:
        return len(self.batches(0))


@dataclass(frozen=True)
class Share:
    """This process's share of one step's global batch of ``batch_size``: rows ``lo..hi-1`` of it, the
    contiguous part :func:`shard_bounds` gives rank ``rank`` of ``world_size`` processes. The trainer makes
    one per step and hands it to the augmentation, the model's dropout, the criterion and the records.

    Example::

        >>> share = Share(10, rank=1, world_size=4)
        >>> share.lo, share.hi, share.sizes
        (3, 6, (3, 3, 2, 2))
        >>> share.rows(np.arange(10))
        array([3, 4, 5])
    """

    batch_size: int
    rank: int = 0
    world_size: int = 1

    @property
    def lo(self) -> int:
        return shard_bounds(self.batch_size, self.rank, self.world_size)[0]

    @property
    def hi(self) -> int:
        return shard_bounds(self.batch_size, self.rank, self.world_size)[1]

    @property
    def sizes(self) -> tuple[int, ...]:
        """Every process's number of rows, in rank order."""
        return tuple(hi - lo for lo, hi in (shard_bounds(self.batch_size, r, self.world_size)
                                            for r in range(self.world_size)))

    def rows(self, x):
        """This share's rows of ``x`` (an array or tensor over the global batch)."""
        return x[self.lo:self.hi]


def shard_bounds(n: int, rank: int, world_size: int) -> tuple[int, int]:
    """``(lo, hi)``: the contiguous part ``lo..hi-1`` of a global batch of ``n`` that rank ``rank`` takes.

    Sizes differ by at most one (the first ``n % world_size`` ranks get one more);
    a rank can get an empty part when the batch is smaller than ``world_size``.

    Example::

        >>> shard_bounds(10, rank=1, world_size=4)
        (3, 6)
    """
    if not 0 <= rank < world_size:
        raise ValueError(f"rank={rank} must be in [0, world_size={world_size})")
    base, extra = divmod(n, world_size)
    lo = rank * base + min(rank, extra)
    return lo, lo + base + (1 if rank < extra else 0)


def shard(batch: np.ndarray, rank: int, world_size: int) -> np.ndarray:
    """The contiguous part of a global batch that DDP rank ``rank`` of ``world_size`` processes.

    Example::

        >>> shard(np.arange(10), rank=1, world_size=4)
        array([3, 4, 5])
    """
    return Share(len(batch), rank, world_size).rows(batch)
