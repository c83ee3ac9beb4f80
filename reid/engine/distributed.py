"""torchrun (PyTorch DDP) support: one process per device, one global batch.

Under ``torchrun`` the environment carries ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK``;
without it everything here is a no-op for a single process.

Example::

    dist_info = init_distributed("cuda")     # NCCL on CUDA, gloo on the CPU
    if dist_info.is_main: save_files()
    all_reduce_sum(per_step_sums)            # in place, across ranks
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import ContextManager, Iterator, Sequence

import torch
import torch.distributed as dist
from torch import nn

from ..data import Share


COLLECTIVE_TIMEOUT = timedelta(hours=2)


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def launched_by_torchrun() -> bool:
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def init_distributed(device_type: str) -> DistInfo:
    """Join the process group torchrun set up (if any) and pick this rank's device."""
    if not launched_by_torchrun():
        return DistInfo()
    info = DistInfo(int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ.get("LOCAL_RANK", 0)))
    if device_type == "cuda":
        torch.cuda.set_device(info.local_rank)
    if not dist.is_initialized():
        # rank 0 evaluates (features, ranking, optional re-ranking) while the others wait at a
        # barrier: minutes at Market size, more than the default 10-minute collective timeout allows
        attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT")
        where = {} if attempt is None else dict(store=attempt_store(attempt), rank=info.rank, world_size=info.world_size)
        dist.init_process_group(backend="nccl" if device_type == "cuda" else "gloo", timeout=COLLECTIVE_TIMEOUT,
                                **where)
    return info


def syncs_batchnorm(setting: bool | str, device: torch.device, world_size: int) -> bool:
    """Whether BatchNorm is synchronised across the processes (``train.sync_bn``).

    ``auto``: exactly when more than one process trains on CUDA, so that BatchNorm normalises the
    global batch as one process would. PyTorch's SyncBatchNorm has no CPU implementation, so on the
    CPU (gloo) BatchNorm stays per process. ``true`` on the CPU is refused before training starts.
    """
    wanted = device.type == "cuda" if setting == "auto" else bool(setting)
    return wanted and world_size > 1


def with_batchnorm_sync(model: nn.Module, setting: bool | str, device: torch.device, world_size: int) -> nn.Module:
    """``model`` with its BatchNorm layers made SyncBatchNorm where :func:`syncs_batchnorm` says so."""
    if syncs_batchnorm(setting, device, world_size):
        return nn.SyncBatchNorm.convert_sync_batchnorm(model)
    return model


def per_process_batchnorm_note(model: nn.Module, setting: bool | str, device: torch.device,
                               world_size: int) -> str | None:
    """The log line for a model whose BatchNorm normalises each process's share by itself, or None."""
    has_bn = any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())
    if world_size == 1 or not has_bn or syncs_batchnorm(setting, device, world_size):
        return None
    why = ("PyTorch's SyncBatchNorm has no CPU implementation" if device.type != "cuda"
           else "train.sync_bn is false")
    return (f"note: BatchNorm normalises each of the {world_size} processes' shares by itself ({why}), so the "
            "numbers differ from a 1-process run's")


class ShareDropout(nn.Module):
    """``nn.Dropout`` on one process's share of a global batch, with the mask one process would draw.

    Every process seeds the generator alike for a step, so a plain Dropout would give each share
    the mask of the batch's first rows. This one draws the mask of the whole global batch (the same
    shape, hence the same draws, as a 1-process run) and applies the rows of this share; like
    Dropout it treats dimension 0 as the batch. The step's share reaches it through
    :func:`dropout_share`, for one forward: in training it refuses to run without one.
    """

    def __init__(self, p: float) -> None:
        super().__init__()
        self.p, self.share = p, None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0:
            return x
        if self.share is None:
            raise RuntimeError("ShareDropout trains on one process's share of a global batch: call the model "
                               "inside dropout_share(dropouts, share)")
        ones = torch.ones((self.share.batch_size, *x.shape[1:]), dtype=x.dtype, device=x.device)
        scaled_mask = nn.functional.dropout(ones, self.p, training=True)  # 0 or 1 / (1 - p), as Dropout multiplies
        return x * self.share.rows(scaled_mask)

    def extra_repr(self) -> str:
        return f"p={self.p}"


def with_share_dropout(model: nn.Module) -> list[ShareDropout]:
    """Replace (in place) each ``nn.Dropout`` of ``model`` by a :class:`ShareDropout`; the new modules."""
    replaced = []
    for name, child in model.named_children():
        if type(child) is nn.Dropout:
            replaced.append(ShareDropout(child.p))
            setattr(model, name, replaced[-1])
        else:
            replaced += with_share_dropout(child)
    return replaced


@contextmanager
def dropout_share(dropouts: Sequence[ShareDropout], share: Share) -> Iterator[None]:
    """``share`` (the step's :class:`reid.data.Share`) handed to ``dropouts`` for the forward inside the block.

    Example::

        dropouts = with_share_dropout(model)
        with dropout_share(dropouts, Share(len(batch_labels), rank, world_size)):
            logits, features = ddp(images)
    """
    for module in dropouts:
        module.share = share
    try:
        yield
    finally:
        for module in dropouts:
            module.share = None


def with_settled_buckets(ddp: nn.parallel.DistributedDataParallel, images: torch.Tensor,
                         dropouts: Sequence[ShareDropout], autocast: ContextManager, rank: int,
                         world_size: int) -> nn.parallel.DistributedDataParallel:
    """``ddp`` with its gradient buckets in the layout it keeps for good, before the run's first step.

    DDP reduces the gradients of its first backward as one bucket in parameter order, then regroups
    them in the order that backward produced them. A run resumed mid-way would reduce its first step
    in the first layout where the uninterrupted run used the second: the ring sums then add the
    processes' gradients in another order, which with 3 or more processes changes their last bits (2
    add the same two numbers either way). One zero-weighted forward and backward of ``images`` (this
    process's share of a global batch, shaped as training's) makes DDP regroup at the first step of
    every start; what it changed is put back: BatchNorm's statistics, the random generators, the
    gradients. Every process calls it (a collective).

    Example::

        net = with_settled_buckets(DistributedDataParallel(model, device_ids=[rank]),
                                   torch.zeros(2, 3, 256, 128, device="cuda"), dropouts,
                                   torch.autocast("cuda", dtype=torch.bfloat16), rank, world_size)
    """
    buffers = [b.detach().clone() for b in ddp.module.buffers()]
    devices = [images.device] if images.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        with autocast, dropout_share(dropouts, Share(len(images) * world_size, rank, world_size)):
            logits, features = ddp(images)
        (logits.float().sum() + features.float().sum()).mul(0).backward()
    with torch.no_grad():
        for buffer, saved in zip(ddp.module.buffers(), buffers):
            buffer.copy_(saved)
    ddp.module.zero_grad(set_to_none=True)
    return ddp


def attempt_store(attempt: str) -> dist.Store:
    """torchrun's key-value store, under a prefix of its own for this start of the group.

    With ``--max-restarts`` torchrun starts the group again on the same store; without a prefix
    the new processes would read the addresses the dead ones left there and fail to connect.
    """
    store, _, _ = next(dist.rendezvous("env://", timeout=COLLECTIVE_TIMEOUT))
    return dist.PrefixStore(f"reid/start_{attempt}", store)


def in_group() -> bool:
    """Whether this process is in a process group (under torchrun, once joined); the collectives below are
    no-ops for a single process otherwise."""
    return dist.is_available() and dist.is_initialized()


def shutdown_distributed() -> None:
    if in_group():
        dist.destroy_process_group()


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    if in_group():
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def all_reduce_max(tensor: torch.Tensor) -> torch.Tensor:
    if in_group():
        dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
    return tensor


def barrier() -> None:
    if in_group():
        dist.barrier()


def broadcast_object(obj: object, src: int = 0) -> object:
    if not in_group():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]
