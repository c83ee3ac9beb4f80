"""Optimisers with per-group learning rates, and the epoch learning-rate schedule.

The schedule is a pure function of the epoch (warm-up, then step / multistep /
cosine decay), so a resumed run gets exactly the rates of an uninterrupted one.

Example::

    optimizer = build_optimizer(cfg.optim, model.param_groups())
    schedule = EpochSchedule(cfg.schedule, total_epochs=cfg.train.epochs)
    schedule.apply(optimizer, epoch=1)       # sets each group's lr for epoch 1
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ..config import OptimConfig, ScheduleConfig


def build_optimizer(cfg: OptimConfig, groups: dict[str, list[nn.Parameter]]) -> torch.optim.Optimizer:
    """One param group per entry of ``groups``; ``backbone`` gets ``backbone_lr``, the rest ``lr``.

    The implementation follows the parameters (:func:`fused_for`): PyTorch's fused kernels
    where every parameter is a floating-point CUDA tensor, else the multi-tensor ``foreach`` one.
    """
    param_groups = []
    for name, params in groups.items():
        params = [p for p in params if p.requires_grad]
        if not params:
            continue
        lr = cfg.backbone_lr if name == "backbone" and cfg.backbone_lr is not None else cfg.lr
        param_groups.append({"params": params, "lr": lr, "base_lr": lr, "name": name})
    if cfg.name == "sgd":
        cls, kwargs = torch.optim.SGD, dict(momentum=cfg.momentum, nesterov=cfg.nesterov and cfg.momentum > 0)
    else:
        cls, kwargs = (torch.optim.Adam if cfg.name == "adam" else torch.optim.AdamW), dict(betas=tuple(cfg.betas))
    implementation = {"fused": True} if fused_for([p for g in param_groups for p in g["params"]]) else {"foreach": True}
    return cls(param_groups, lr=cfg.lr, weight_decay=cfg.weight_decay, **implementation, **kwargs)


FUSED_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def fused_for(params: list[nn.Parameter]) -> bool:
    """Whether PyTorch's fused SGD/Adam/AdamW kernels take ``params``: all on CUDA, all floating point.

    Decided before the optimiser is built: PyTorch checks ``fused=True`` only at the first
    ``step()``, too late to choose another implementation.
    """
    return bool(params) and all(p.device.type == "cuda" and p.dtype in FUSED_DTYPES for p in params)


class EpochSchedule:
    """Learning-rate factor per (1-based) epoch: linear warm-up, then the decay rule."""

    def __init__(self, cfg: ScheduleConfig, total_epochs: int) -> None:
        self.cfg = cfg
        self.total_epochs = total_epochs

    def factor(self, epoch: int) -> float:
        """BoT's WarmupMultiStepLR rule, per epoch: warm-up factor times decay factor."""
        cfg, e = self.cfg, epoch - 1  # epochs completed before this one
        warm = 1.0
        if e < cfg.warmup_epochs:
            warm = cfg.warmup_factor + (1.0 - cfg.warmup_factor) * e / cfg.warmup_epochs
        return warm * self._decay(e)

    def _decay(self, e: int) -> float:
        cfg = self.cfg
        if cfg.name == "constant":
            return 1.0
        if cfg.name == "step":
            return cfg.gamma ** (e // cfg.step_size)
        if cfg.name == "multistep":
            return cfg.gamma ** sum(e >= m for m in cfg.milestones)
        span = max(1, self.total_epochs - cfg.warmup_epochs)
        progress = min(1.0, max(0.0, (e - cfg.warmup_epochs) / span))
        return cfg.min_lr_factor + (1 - cfg.min_lr_factor) * 0.5 * (1 + math.cos(math.pi * progress))

    def apply(self, optimizer: torch.optim.Optimizer, epoch: int) -> float:
        """Set every group's lr for ``epoch``; returns the factor."""
        f = self.factor(epoch)
        for group in optimizer.param_groups:
            set_learning_rate(group, group["base_lr"] * f)
        return f

    def state_dict(self) -> dict:
        return {"name": self.cfg.name, "total_epochs": self.total_epochs}


def set_learning_rate(group: dict, lr: float) -> None:
    """Set a param group's learning rate; a device tensor (which a captured step reads, see
    reid/engine/graphs.py) is filled in place."""
    if isinstance(group["lr"], torch.Tensor):
        group["lr"].fill_(lr)
    else:
        group["lr"] = lr
