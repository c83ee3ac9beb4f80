"""ResNet identity classifiers for person re-ID: a torchvision trunk, a neck, a classifier.

The trunk is torchvision's ResNet (18, 34 or 50) without its ImageNet ``fc``; the
feature map is globally average-pooled and passed to one of three necks:

``fc512``  the classic re-ID baseline head (layumi's ``ClassBlock`` as used by
           ``ft_net``): Linear(C, 512) -> BatchNorm1d(512) -> Dropout(p) -> Linear(512, K).
           No activation between the BN and the dropout: layumi's default is
           ``relu=False`` and we keep it. Metric-loss features and the retrieval
           feature are the 512-d BN output (dropout is not applied to them).
``bnneck`` BoT's BNNeck (Luo et al. 2019): BatchNorm1d(C) with a frozen zero bias and a
           bias-free Linear(C, K). Metric losses see the pooled feature *before* the BN;
           retrieval uses the feature *after* it.
``none``   pooled feature -> Linear(C, K) (with bias); the pooled feature is both the
           metric-loss feature and the retrieval feature.

``C`` is 2048 for ResNet-50 and 512 for ResNet-18/34. In train mode ``model(x)``
returns ``(logits, features)``; in eval mode it returns the retrieval feature (N, D)
with ``D == model.feature_dim`` (the training ``features`` have the same width).

Initialisation follows the classic baselines: classifiers normal(0, 0.001) with zero
bias; the fc512 Linear kaiming-normal (fan_out) with zero bias; neck BatchNorms weight
1 (fc512: normal(1, 0.02) as in layumi), bias 0.

Example::

    model = ReIDResNet("resnet50", num_classes=751, pretrained="imagenet",
                       last_stride=1, neck="bnneck")
    logits, feats = model(images)          # train mode
    model.eval(); emb = model(images)      # (N, 2048) retrieval feature
    groups = model.param_groups()          # {"backbone": [...], "head": [...]}
"""

from __future__ import annotations

import os
import urllib.error
from pathlib import Path
from typing import Any, Mapping

import torch
import torchvision
from torch import nn
from torchvision.models import ResNet18_Weights, ResNet34_Weights, ResNet50_Weights

from ..errors import ConfigError, ReidError

# arch -> (torchvision builder, ImageNet weights re-ID baselines use, trunk output channels)
ARCHS: dict[str, tuple[Any, Any, int]] = {
    "resnet18": (torchvision.models.resnet18, ResNet18_Weights.IMAGENET1K_V1, 512),
    "resnet34": (torchvision.models.resnet34, ResNet34_Weights.IMAGENET1K_V1, 512),
    "resnet50": (torchvision.models.resnet50, ResNet50_Weights.IMAGENET1K_V1, 2048),
}
NECKS = ("fc512", "bnneck", "none")
FC512_DIM = 512


def _init_classifier(linear: nn.Linear) -> None:
    nn.init.normal_(linear.weight, std=0.001)
    if linear.bias is not None:
        nn.init.zeros_(linear.bias)


def _init_kaiming(linear: nn.Linear) -> None:
    nn.init.kaiming_normal_(linear.weight, a=0, mode="fan_out")
    if linear.bias is not None:
        nn.init.zeros_(linear.bias)


def set_last_stride(trunk: torchvision.models.ResNet, stride: int) -> None:
    """Set the stride of layer4's first block (its strided conv and its downsample).

    torchvision puts the stride on ``conv2`` of a Bottleneck (ResNet v1.5) and on
    ``conv1`` of a BasicBlock; whichever conv is strided gets ``stride``.
    """
    block = trunk.layer4[0]
    for conv in (block.conv1, block.conv2):
        if conv.stride != (1, 1):
            conv.stride = (stride, stride)
    if block.downsample is not None:
        block.downsample[0].stride = (stride, stride)


def _clean_state_dict(obj: Any, path: Path) -> dict[str, torch.Tensor]:
    """A plain ``{key: tensor}`` from a saved object: unnest, strip ``module.``/``backbone.``."""
    if isinstance(obj, Mapping):
        for key in ("state_dict", "model"):
            if key in obj and isinstance(obj[key], Mapping):
                obj = obj[key]
                break
    if not isinstance(obj, Mapping):
        raise ReidError(
            f"{path}: not a state dict (found {type(obj).__name__}); save one with "
            "torch.save(model.state_dict(), path) and set model.pretrained to it"
        )
    state = {}
    for key, value in obj.items():
        if not isinstance(value, torch.Tensor):
            continue
        key = str(key)
        while key.startswith("module."):  # DataParallel / DDP checkpoints
            key = key[len("module."):]
        state[key] = value
    # A model trained by this tool: keep its trunk only.
    if any(k.startswith("backbone.") for k in state):
        state = {k[len("backbone."):]: v for k, v in state.items() if k.startswith("backbone.")}
    return state


def _first(keys: list[str], n: int = 4) -> str:
    more = f" (+{len(keys) - n} more)" if len(keys) > n else ""
    return ", ".join(keys[:n]) + more


class ReIDResNet(nn.Module):
    """ResNet trunk + neck + identity classifier (see the module docstring).

    Args:
        arch: ``resnet18``, ``resnet34`` or ``resnet50``.
        num_classes: number of training identities (K).
        pretrained: ``"imagenet"`` (torchvision's IMAGENET1K_V1 weights), ``"none"``
            or the path of a ``.pth`` state dict for the trunk.
        last_stride: 2 (torchvision) or 1 (doubles the final feature map, BoT/PCB trick).
        neck: ``fc512``, ``bnneck`` or ``none``.
        dropout: dropout probability of the fc512 neck (the other necks have none).

    Example::

        model = ReIDResNet("resnet18", num_classes=10, neck="fc512")
        logits, feats = model(torch.randn(4, 3, 64, 32))   # (4, 10), (4, 512)
    """

    def __init__(
        self,
        arch: str = "resnet50",
        num_classes: int = 751,
        pretrained: str | os.PathLike | None = "none",
        last_stride: int = 2,
        neck: str = "fc512",
        dropout: float = 0.5,
    ) -> None:
        super().__init__()
        if arch not in ARCHS:
            raise ConfigError(f"unknown model '{arch}'; valid names: {', '.join(ARCHS)}")
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
            raise ConfigError(f"num_classes must be a positive integer, got {num_classes!r}")
        if last_stride not in (1, 2) or isinstance(last_stride, bool):
            raise ConfigError(f"model.last_stride must be 1 or 2, got {last_stride!r}")
        if neck not in NECKS:
            raise ConfigError(f"unknown model.neck '{neck}'; valid necks: {', '.join(NECKS)}")
        if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0 <= dropout < 1:
            raise ConfigError(f"model.dropout must be a number in [0, 1), got {dropout!r}")

        builder, weights, channels = ARCHS[arch]
        self.arch, self.num_classes, self.neck_name = arch, num_classes, neck
        self.last_stride = last_stride
        self.imagenet_weights = weights
        self.backbone = builder(weights=None)
        self.backbone.fc = nn.Identity()  # no parameters: keys match torchvision's minus fc.*
        set_last_stride(self.backbone, last_stride)

        if neck == "fc512":
            self.neck = nn.Sequential(nn.Linear(channels, FC512_DIM), nn.BatchNorm1d(FC512_DIM))
            _init_kaiming(self.neck[0])
            nn.init.normal_(self.neck[1].weight, 1.0, 0.02)
            nn.init.zeros_(self.neck[1].bias)
            self.dropout = nn.Dropout(dropout)
            self.classifier = nn.Linear(FC512_DIM, num_classes)
            self.feature_dim = FC512_DIM
        elif neck == "bnneck":
            self.neck = nn.BatchNorm1d(channels)
            nn.init.ones_(self.neck.weight)
            nn.init.zeros_(self.neck.bias)
            self.neck.bias.requires_grad_(False)  # BoT: a shift-free BN before a bias-free classifier
            self.dropout = nn.Identity()
            self.classifier = nn.Linear(channels, num_classes, bias=False)
            self.feature_dim = channels
        else:
            self.neck = nn.Identity()
            self.dropout = nn.Identity()
            self.classifier = nn.Linear(channels, num_classes)
            self.feature_dim = channels
        _init_classifier(self.classifier)

        self.pretrained = "none" if pretrained in (None, "", "none") else str(pretrained)
        if self.pretrained == "imagenet":
            self.load_backbone(load_imagenet_state(arch, weights), source=f"ImageNet weights ({weights.url})")
        elif self.pretrained != "none":
            self.load_backbone_file(self.pretrained)

    # ------------------------------------------------------------------ weights
    def load_backbone_file(self, path: str | os.PathLike) -> None:
        """Load a trunk state dict saved with ``torch.save`` (plain, or under "state_dict"/"model")."""
        path = Path(path).expanduser()
        if not path.is_file():
            raise ConfigError(missing_weights_file(path))
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # unpickling errors, truncated files, not a torch file
            raise ReidError(
                f"{path}: cannot be read as a PyTorch state dict ({type(exc).__name__}: {exc}); "
                "save one with torch.save(model.state_dict(), path)"
            ) from exc
        self.load_backbone(_clean_state_dict(obj, path), source=str(path))

    def load_backbone(self, state: Mapping[str, torch.Tensor], source: str = "state dict") -> None:
        """Copy ``state`` into the trunk; ImageNet ``fc.*`` keys are ignored, anything else must match."""
        state = {k: v for k, v in state.items() if not k.startswith("fc.")}
        own = self.backbone.state_dict()
        missing = [k for k in own if k not in state and not k.endswith("num_batches_tracked")]
        unexpected = [k for k in state if k not in own]
        wrong_shape = [
            f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}"
            for k in own if k in state and state[k].shape != own[k].shape
        ]
        if missing or unexpected or wrong_shape:
            parts = []
            if missing:
                parts.append(f"missing keys {_first(missing)}")
            if unexpected:
                parts.append(f"unexpected keys {_first(unexpected)}")
            if wrong_shape:
                parts.append(f"wrong shapes {_first(wrong_shape, 2)}")
            raise ReidError(
                f"{source}: not a torchvision {self.arch} state dict ({'; '.join(parts)}); "
                f"set model.pretrained to {self.arch} weights, 'imagenet' or 'none'"
            )
        self.backbone.load_state_dict(state, strict=False)  # strict except num_batches_tracked

    # ------------------------------------------------------------------ forward
    def forward(self, x: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        t = self.backbone
        x = t.maxpool(t.relu(t.bn1(t.conv1(x))))
        x = t.layer4(t.layer3(t.layer2(t.layer1(x))))
        pooled = x.mean((2, 3))  # global average pooling; unlike adaptive pooling, deterministic on CUDA
        if self.neck_name == "bnneck":
            after = self.neck(pooled)
            if not self.training:
                return after
            return self.classifier(after), pooled
        feat = self.neck(pooled)  # fc512: BN output; none: the pooled feature
        if not self.training:
            return feat
        return self.classifier(self.dropout(feat)), feat

    def param_groups(self) -> dict[str, list[nn.Parameter]]:
        """Trainable parameters split for per-group learning rates.

        ``backbone``: the torchvision trunk; ``head``: neck + classifier. Frozen
        parameters (the BNNeck bias) are left out, so the two lists partition
        ``[p for p in model.parameters() if p.requires_grad]``.
        """
        backbone = [p for p in self.backbone.parameters() if p.requires_grad]
        head = [
            p for m in (self.neck, self.classifier) for p in m.parameters() if p.requires_grad
        ]
        return {"backbone": backbone, "head": head}

    def extra_repr(self) -> str:
        return (f"arch={self.arch}, num_classes={self.num_classes}, neck={self.neck_name}, "
                f"last_stride={self.last_stride}, feature_dim={self.feature_dim}")


def imagenet_cache_file(weights: Any) -> str:
    """Where torch hub keeps ``weights`` (``<torch hub>/checkpoints/<file>``), downloaded or not."""
    return os.path.join(torch.hub.get_dir(), "checkpoints", os.path.basename(weights.url))


def pretrained_problem(arch: str, pretrained: str | os.PathLike | None) -> str | None:
    """Why ``ReIDResNet(arch, pretrained=...)`` could not load its weights without a download, or None.

    ``imagenet`` needs the file in the torch hub cache (:func:`imagenet_cache_file`), a path needs
    the file; ``none`` needs nothing. Nothing is read or downloaded: a launcher asks before its runs start.

    Example::

        pretrained_problem("resnet50", "imagenet")   # -> None once torchvision's file is cached
    """
    if arch not in ARCHS or pretrained in (None, "", "none"):
        return None
    if pretrained == "imagenet":
        weights = ARCHS[arch][1]
        cached = imagenet_cache_file(weights)
        if os.path.isfile(cached):
            return None
        return (f"model.pretrained=imagenet: the ImageNet weights for {arch} are not cached ({cached} is missing), "
                f"and the runs are not started to download them; download {weights.url} into "
                f"{os.path.dirname(cached)}/, or set model.pretrained to the file's path, or to none")
    path = Path(pretrained).expanduser()
    return None if path.is_file() else missing_weights_file(path)


def missing_weights_file(path: Path) -> str:
    """The error line of a ``model.pretrained`` path with no file."""
    return (f"model.pretrained: weights file {path} does not exist; give the path of a .pth state dict, 'imagenet' "
            "or 'none'")


def load_imagenet_state(arch: str, weights: Any) -> dict[str, torch.Tensor]:
    """torchvision's ImageNet state dict for ``arch``: from the torch hub cache, else downloaded.

    When the file is neither cached nor downloadable (no network), raises a
    ReidError giving the URL, the cache folder it can be copied into, and the
    alternative of setting ``model.pretrained`` to the file's path.
    """
    cached = imagenet_cache_file(weights)
    cache_dir = os.path.dirname(cached)
    if os.path.isfile(cached):
        try:
            return torch.load(cached, map_location="cpu", weights_only=True)
        except Exception as exc:
            raise ReidError(
                f"{cached}: cached ImageNet weights for {arch} cannot be read ({type(exc).__name__}); "
                f"delete it and download {weights.url} again"
            ) from exc
    try:
        # Looked up on the module so tests (and users) can substitute the downloader.
        return torch.hub.load_state_dict_from_url(
            weights.url, model_dir=cache_dir, map_location="cpu", progress=True, check_hash=True
        )
    except (urllib.error.URLError, OSError, RuntimeError) as exc:
        raise ReidError(
            f"model.pretrained=imagenet: the ImageNet weights for {arch} are not cached and could not "
            f"be downloaded ({type(exc).__name__}: {exc}); download {weights.url} on a machine with "
            f"network access and either put it in {cache_dir}/ or set model.pretrained to its path"
        ) from exc
