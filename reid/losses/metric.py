"""Metric criteria on the model's features: batch-hard triplet and center loss (BoT).

Both read ``features`` (for ``bnneck`` the pooled feature before the BN), computed in
float32 even under autocast, and raise ReidError when the model gives none.

Example::

    crit = build_criterion([{"name": "label_smoothing"}, {"name": "triplet", "margin": 0.3},
                            {"name": "center", "weight": 5e-4}],
                           num_classes=751, feat_dim=model.feature_dim)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError, ReidError
from . import register_criterion
from .cross_entropy import upcast
from .shares import BatchShare, PartCriterion, sample_mean_part


def _need_features(name: str, features: torch.Tensor | None, targets: torch.Tensor) -> torch.Tensor:
    if features is None:
        raise ReidError(
            f"criterion '{name}' needs the model's features but got none; use a model that returns "
            "(logits, features) in train mode"
        )
    if features.dim() != 2 or features.shape[0] != targets.shape[0]:
        raise ReidError(
            f"criterion '{name}' expects features (N, D) for N targets, got {tuple(features.shape)} "
            f"for {targets.shape[0]}"
        )
    return upcast(features)


def euclidean_dist(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Pairwise Euclidean distances (M, N) as in BoT: sqrt(clamp(|x|^2 + |y|^2 - 2 x.y, 1e-12))."""
    d2 = x.pow(2).sum(1, keepdim=True) + y.pow(2).sum(1)[None, :] - 2 * x @ y.t()
    return d2.clamp(min=1e-12).sqrt()


@register_criterion("triplet")
class TripletLoss(PartCriterion):
    """Batch-hard triplet loss (Hermans et al. 2017), as in BoT.

    It needs identity-balanced batches (``sampler.name: pk``); a config with the random
    sampler is refused before training (:func:`reid.engine.builder.check_names`).

    For each anchor i: ``d_ap`` = largest distance to another image of the same id,
    ``d_an`` = smallest distance to an image of another id (Euclidean);
    ``l_i = max(0, d_ap - d_an + margin)``, or ``softplus(d_ap - d_an)`` (soft margin)
    when ``margin`` is None. The loss is the mean of ``l_i`` over anchors that have
    both a positive and a negative in the batch (all of them with a P x K sampler, K >= 2).

    A batch in which no anchor has a positive (e.g. a random sampler) raises ReidError.
    That check needs the device to report back; to avoid a GPU stall per step it runs
    on every call for CPU tensors but only on the first call otherwise (a wrong
    sampler shows on the first batch); a later batch without any valid anchor then
    gives a loss of 0.

    Args:
        margin: margin (default 0.3), or None for the soft margin.
        normalize: L2-normalise the features first (BoT's default: False).

    Example::

        crit = build_criterion({"name": "triplet", "margin": None}, num_classes=751)
        loss = crit(logits, targets, features)
    """

    needs_features = True
    needs_identity_batches = True  # compares images of one identity within a batch: P x K batches

    def __init__(self, margin: float | None = 0.3, normalize: bool = False) -> None:
        super().__init__()
        if margin is not None and (isinstance(margin, bool) or not isinstance(margin, (int, float)) or margin < 0):
            raise ConfigError(f"criterion 'triplet': margin must be a number >= 0 or null (soft margin), got {margin!r}")
        if not isinstance(normalize, bool):
            raise ConfigError(f"criterion 'triplet': normalize must be true or false, got {normalize!r}")
        self.margin = None if margin is None else float(margin)
        self.normalize = normalize
        self._checked = False

    def batch_part(self, share: BatchShare) -> torch.Tensor:
        """The share's anchors mined against the whole batch's features (gathered: the hardest positive
        and negative may sit on another process), summed over the whole batch's number of valid anchors."""
        feats = self.features(share.features, share.targets)
        weights = self.valid_anchors(share.batch_targets).to(feats.dtype)
        own = weights[share.lo:share.hi]
        per_anchor = self.anchor_losses(feats, share.targets, share.gather(feats), share.batch_targets, share.lo,
                                        own > 0)
        return (per_anchor * own).sum() / weights.sum().clamp(min=1)

    def features(self, features: torch.Tensor | None, targets: torch.Tensor) -> torch.Tensor:
        feats = _need_features("triplet", features, targets)
        return F.normalize(feats, dim=1) if self.normalize else feats

    def valid_anchors(self, targets: torch.Tensor) -> torch.Tensor:
        """Which images of the batch have both a positive and a negative in it (bool, N); raises when none has."""
        same = targets[:, None] == targets[None, :]
        eye = torch.eye(len(targets), dtype=torch.bool, device=targets.device)
        valid = (same & ~eye).any(1) & (~same).any(1)
        if targets.device.type == "cpu" or not self._checked:
            self._checked = True
            if not bool(valid.any()):
                what = "no two images of the same identity" if not bool((same & ~eye).any()) else "a single identity"
                raise ReidError(
                    f"criterion 'triplet': the batch has {what}, so there is no (positive, negative) pair; "
                    "set sampler.name: pk (P x K batches: P identities, sampler.num_instances = K >= 2 images each)"
                )
        return valid

    def anchor_losses(self, anchors: torch.Tensor, anchor_targets: torch.Tensor, batch: torch.Tensor,
                      batch_targets: torch.Tensor, offset: int, valid: torch.Tensor) -> torch.Tensor:
        """Each anchor's loss against ``batch``, in which anchor i is row ``offset + i`` (0 where not ``valid``)."""
        dist = euclidean_dist(anchors, batch)
        same = anchor_targets[:, None] == batch_targets[None, :]
        rows = torch.arange(len(anchors), device=anchors.device)[:, None] + offset
        itself = rows == torch.arange(len(batch), device=anchors.device)[None, :]
        pos, neg = same & ~itself, ~same
        # Masked max/min: only the selected entries receive gradient.
        d_ap = torch.where(pos, dist, torch.full_like(dist, -torch.inf)).amax(1)
        d_an = torch.where(neg, dist, torch.full_like(dist, torch.inf)).amin(1)
        diff = torch.where(valid, d_ap - d_an, torch.zeros_like(d_ap))  # no inf - inf for invalid anchors
        return F.softplus(diff) if self.margin is None else F.relu(diff + self.margin)


class _ScaleGrad(torch.autograd.Function):
    """Identity forward; backward multiplies the gradient by ``scale``."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, scale: float) -> torch.Tensor:
        ctx.scale = scale
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return grad * ctx.scale, None


@register_criterion("center")
class CenterLoss(PartCriterion):
    """Center loss (Wen et al. 2016) as in BoT / KaiyangZhou's CenterLoss.

    Learnable centres ``c`` of shape (num_classes, feat_dim), initialised ``randn``
    (from the global torch RNG, so seeded runs agree).
    ``loss = (1/B) sum_i ||f_i - c_{y_i}||^2`` (clamped to at most 1e12 per sample): the
    mean squared distance to the own centre, BoT's ``distmat.clamp(1e-12, 1e12).sum() / B``
    without the ``(K-1) * 1e-12`` its clamp adds for the masked-out entries, and with no 1/2.

    The centres have their own SGD (``lr``, default 0.5, no momentum or weight decay),
    returned by ``CombinedCriterion.extra_optimizer()``. BoT divides the centres'
    gradients by the loss weight before that step, so the centres move at ``lr``
    whatever the weight (5e-4 in the recipe). Here the same is done inside autograd:
    the centres enter the loss through a gradient-scaling identity with factor
    ``1/weight`` (set by ``set_loss_weight``, which ``build_criterion`` calls), so after
    ``(weight * loss).backward()`` ``centers.grad`` is the gradient of the unweighted
    loss and a plain ``optimizer.step()`` reproduces BoT. The features' gradient keeps
    the weight. With weight 0 the centres get no gradient.

    Example::

        crit = build_criterion({"name": "center", "weight": 5e-4}, 751, feat_dim=2048)
        opt_c = crit.extra_optimizer()
        crit(logits, y, feats).backward(); opt_c.step(); opt_c.zero_grad()
    """

    needs_features = True

    def __init__(self, num_classes: int, feat_dim: int, lr: float = 0.5) -> None:
        super().__init__()
        if isinstance(lr, bool) or not isinstance(lr, (int, float)) or lr <= 0:
            raise ConfigError(f"criterion 'center': lr must be a number > 0, got {lr!r}")
        self.num_classes, self.feat_dim, self.lr = num_classes, feat_dim, float(lr)
        self.centers = nn.Parameter(torch.randn(num_classes, feat_dim))
        self.grad_scale = 1.0

    def set_loss_weight(self, weight: float) -> None:
        """Make the centres' gradient that of the unweighted loss (BoT's division by the weight)."""
        self.grad_scale = 1.0 / weight if weight > 0 else 0.0

    def extra_param_groups(self) -> list[dict]:
        return [{"params": [self.centers], "lr": self.lr, "momentum": 0.0, "weight_decay": 0.0}]

    def batch_part(self, share: BatchShare) -> torch.Tensor:
        """Each sample is compared with its class's centre only, never with another sample: local (see
        sample_mean_part). Every process holds the same centres; the trainer averages their gradients."""
        feats = _need_features("center", share.features, share.targets)
        return sample_mean_part(self.per_sample(feats, share.targets), share)

    def per_sample(self, feats: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Each sample's squared distance to its own centre (clamped to 1e12), (N,)."""
        if feats.shape[1] != self.feat_dim:
            raise ReidError(
                f"criterion 'center': features have {feats.shape[1]} dimensions but the centres {self.feat_dim}; "
                "pass feat_dim=model.feature_dim to build_criterion"
            )
        centers = self.centers
        if self.grad_scale != 1.0:
            centers = _ScaleGrad.apply(centers, self.grad_scale)
        own = torch.index_select(centers.to(feats.dtype), 0, targets)  # deterministic backward on CUDA
        return (feats - own).pow(2).sum(1).clamp(max=1e12)

    def extra_repr(self) -> str:
        return f"num_classes={self.num_classes}, feat_dim={self.feat_dim}, lr={self.lr}"
