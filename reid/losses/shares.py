"""A criterion on a global batch split over torchrun processes: each process computes its part.

Under torchrun each process holds a contiguous share (rows ``lo..hi-1``) of the same global
batch. A :class:`BatchShare` gives a criterion that share, the targets of the whole batch (every
process knows them: they come from the sampler's global batch) and :meth:`BatchShare.gather`,
which returns every process's rows in batch order with autograd: the gradient that reaches a
process's own rows is the sum of what every process's part sends them.

A criterion's *part* is a tensor on each process such that the parts of all processes sum to
the criterion of the whole global batch, as a function of every process's rows. DDP averages
gradients over the processes, so a process that back-propagates ``world_size * part`` leaves
the model with the gradient of the global batch's loss: the 1-process gradient.

A criterion gives its part with the optional hook ``batch_part(share) -> Tensor``; one without
it is computed on the gathered batch by every process, each taking ``1 / world_size`` of it
(:func:`batch_part`), which is right for any criterion. The built-in criteria derive from
:class:`PartCriterion`: their loss on a whole batch is their part of a batch held by one process
(:meth:`BatchShare.whole`), so a 1-process run computes with the very function the processes of a
torchrun group share, and its tests exercise the N-process arithmetic.

Example::

    share = BatchShare.of(Share(7, rank=1, world_size=2), logits, features, batch_targets)   # rows 4..6 of 7
    part = criterion.batch_part(share)        # CombinedCriterion: the weighted sum of the parts
    (share.world_size * part).backward()      # inside DDP: the global batch's gradient
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
import torch.distributed as dist
from torch import nn

from ..data.samplers import Share


class _GatherRows(torch.autograd.Function):
    """All processes' rows in rank order; backward: the gradient of one's own rows summed over processes.

    torch.distributed.nn.functional.all_gather does this for equal shares but warns on every call
    (deprecated) and needs equal sizes; an epoch's short last batch gives shares of unequal size,
    so each share is padded to the largest, gathered, and the padding dropped.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, share: Share) -> torch.Tensor:  # type: ignore[override]
        ctx.share = share
        sizes = share.sizes
        padded = x.new_zeros((max(sizes), *x.shape[1:]))
        padded[:len(x)] = x
        parts = [torch.empty_like(padded) for _ in sizes]
        dist.all_gather(parts, padded)
        return torch.cat([p[:n] for p, n in zip(parts, sizes)])

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:  # type: ignore[override]
        # every process's part sends gradient to every row: sum them, then keep this process's rows
        total = grad.contiguous().clone()
        dist.all_reduce(total, op=dist.ReduceOp.SUM)
        return ctx.share.rows(total), None


@dataclass
class BatchShare:
    """One process's share of a global batch, as a criterion sees it.

    Attributes:
        logits, targets, features: this process's rows (features may be None).
        batch_targets: the targets of the whole global batch (N,), in batch order.
        share: where those rows lie in it (:class:`reid.data.Share`: ``lo..hi-1`` of ``batch_size``,
            every process's ``sizes``, this ``rank`` of ``world_size``).
    """

    logits: torch.Tensor
    targets: torch.Tensor
    features: Optional[torch.Tensor]
    batch_targets: torch.Tensor
    share: Share

    @classmethod
    def whole(cls, logits: torch.Tensor, targets: torch.Tensor, features: Optional[torch.Tensor]) -> "BatchShare":
        """A batch held by one process: the share of all its rows."""
        return cls.of(Share(len(targets)), logits, features, targets)

    @classmethod
    def of(cls, share: Share, logits: torch.Tensor, features: Optional[torch.Tensor],
           batch_targets: torch.Tensor) -> "BatchShare":
        """The criterion's view of a step's :class:`reid.data.Share`: this process's ``logits`` and ``features``,
        the targets of the whole global batch."""
        return cls(logits, share.rows(batch_targets), features, batch_targets, share)

    @property
    def world_size(self) -> int:
        return self.share.world_size

    @property
    def rank(self) -> int:
        return self.share.rank

    @property
    def sizes(self) -> tuple[int, ...]:
        return self.share.sizes

    @property
    def lo(self) -> int:
        return self.share.lo

    @property
    def hi(self) -> int:
        return self.share.hi

    @property
    def batch_size(self) -> int:
        return self.share.batch_size

    def gather(self, x: torch.Tensor) -> torch.Tensor:
        """Every process's rows of ``x`` (this process's are ``x``), in batch order, with autograd."""
        if self.world_size == 1:
            return x
        return _GatherRows.apply(x, self.share)


class PartCriterion(nn.Module):
    """A criterion defined by its part of a global batch (``batch_part``): its loss on a whole batch is
    the part of that batch held by one process.

    Example::

        class Mine(PartCriterion):
            def batch_part(self, share):
                return sample_mean_part(per_sample_loss(share.logits, share.targets), share)

        Mine()(logits, targets)    # the batch's loss, computed by batch_part
    """

    def forward(self, logits: torch.Tensor, targets: torch.Tensor, features: Optional[torch.Tensor] = None
                ) -> torch.Tensor:
        return self.batch_part(BatchShare.whole(logits, targets, features))

    def batch_part(self, share: BatchShare) -> torch.Tensor:
        raise NotImplementedError


def batch_part(criterion: nn.Module, share: BatchShare) -> torch.Tensor:
    """``criterion``'s part of the global batch's loss on this process (see the module docstring).

    A criterion without the hook is itself on one process, so a 1-process run computes exactly what it
    computes without torchrun.
    """
    if hasattr(criterion, "batch_part"):
        return criterion.batch_part(share)
    if share.world_size == 1:
        return criterion(share.logits, share.targets, share.features)
    features = None if share.features is None else share.gather(share.features)
    return criterion(share.gather(share.logits), share.batch_targets, features) / share.world_size


def sample_mean_part(per_sample: torch.Tensor, share: BatchShare) -> torch.Tensor:
    """The part of a mean over the batch's samples held by this share: its samples' sum over the batch size.

    A criterion that is a mean of per-sample terms (each term reading only its own sample) needs no
    other process's rows: the shares' sums over the global batch size add up to the global mean,
    whatever the shares' sizes (an epoch's short last batch splits unevenly).
    """
    return per_sample.sum() / share.batch_size
