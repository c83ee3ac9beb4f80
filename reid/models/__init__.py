"""Model registry: re-ID identity classifiers built by name from the config.

Every entry is called as ``entry(num_classes, pretrained=..., last_stride=...,
neck=..., dropout=...)`` and returns an ``nn.Module`` that

- in train mode maps images (N, 3, H, W) to ``(logits, features)``: logits (N, K)
  for the classification criteria, features (N, model.feature_dim) for metric
  losses (triplet, center);
- in eval mode maps images to the retrieval feature (N, model.feature_dim);
- has ``model.param_groups() -> {"backbone": [...], "head": [...]}``.

Example::

    from reid.models import build_model, register_model

    model = build_model("resnet50", num_classes=751, pretrained="imagenet",
                        last_stride=1, neck="bnneck")

    @register_model("my_net")              # a model of your own, same contract
    def my_net(num_classes, **kwargs): ...
"""

from __future__ import annotations

import os
from typing import Callable

from torch import nn

from ..registry import Registry
from .resnet import ARCHS, NECKS, ReIDResNet, load_imagenet_state, pretrained_problem, set_last_stride

MODELS = Registry("model")


def register_model(name: str) -> Callable:
    """Decorator adding a model factory ``fn(num_classes, **kwargs) -> nn.Module`` as ``name``."""
    return MODELS.register(name)


def _resnet_factory(arch: str) -> Callable[..., nn.Module]:
    def build(num_classes: int, **kwargs) -> nn.Module:
        return ReIDResNet(arch, num_classes, **kwargs)

    build.__name__ = arch
    build.__doc__ = f"{arch} trunk + neck + classifier (see reid.models.resnet.ReIDResNet)."
    return build


for _arch in ARCHS:
    MODELS.register(_arch)(_resnet_factory(_arch))


def build_model(
    name: str,
    num_classes: int,
    pretrained: str | os.PathLike | None = "none",
    last_stride: int = 2,
    neck: str = "fc512",
    dropout: float = 0.5,
) -> nn.Module:
    """Build the model registered as ``name`` (unknown names raise ConfigError listing the valid ones).

    Example::

        model = build_model("resnet18", num_classes=10, neck="bnneck")
        model.feature_dim        # 512
    """
    factory = MODELS.get(name)
    return factory(num_classes, pretrained=pretrained, last_stride=last_stride, neck=neck, dropout=dropout)


__all__ = [
    "MODELS", "NECKS", "ReIDResNet", "build_model", "load_imagenet_state", "pretrained_problem",
    "register_model",
    "set_last_stride",
]
