"""Classification criteria on the identity logits: cross entropy and its soft variants.

All work on ``log_softmax`` of the logits upcast to float32 (never ``log(softmax)``),
so they are finite for logits of magnitude 1e4 and hundreds of classes, also when
the model ran under bf16/fp16 autocast. Notation: ``p_ic = softmax(x_i)_c``,
``K`` classes, batch of ``N``.

- ``cross_entropy``: ``-log p_iy`` averaged over the batch; with class weights the
  mean is PyTorch's weighted mean ``sum_i w_yi (-log p_iy) / sum_i w_yi``.
- ``soft_cross_entropy``: ``CE(x, y) + uniform_weight * mean_i (1/K) sum_c -log p_ic``.
- ``label_smoothing``: cross entropy against a smoothed target distribution ``q``:
  ``uniform``: ``q = (1-eps) onehot + eps/K`` (== ``nn.CrossEntropyLoss(label_smoothing=eps)``);
  ``others``:  ``q = 1-eps`` on the target and ``eps/(K-1)`` on every other class.

Example::

    crit = build_criterion({"name": "label_smoothing", "epsilon": 0.1, "variant": "others"}, 751)
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

from ..errors import ConfigError, ReidError
from . import register_criterion
from .shares import BatchShare, PartCriterion, sample_mean_part


def upcast(x: torch.Tensor) -> torch.Tensor:
    """float16/bfloat16 (autocast outputs) -> float32; float32/float64 unchanged."""
    return x if x.dtype in (torch.float32, torch.float64) else x.float()


def _check_logits(name: str, logits: torch.Tensor, targets: torch.Tensor) -> None:
    if logits.dim() != 2 or targets.dim() != 1 or logits.shape[0] != targets.shape[0]:
        raise ReidError(
            f"criterion '{name}' expects logits (N, K) and targets (N,), got {tuple(logits.shape)} "
            f"and {tuple(targets.shape)}"
        )


def _check_epsilon(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
        raise ConfigError(f"criterion '{name}': epsilon must be a number in [0, 1), got {value!r}")
    return float(value)


@register_criterion("cross_entropy")
class CrossEntropy(PartCriterion):
    """Standard cross entropy, optionally class-weighted.

    Args:
        class_weight: None, a list of K non-negative floats, or ``"balanced"``:
            ``w_c = N_train / (K * n_c)`` (inverse class frequency of the training
            split, scaled so the average class weight over images is 1; the scale
            cancels in the weighted mean anyway).
        ignore_index: targets with this value contribute nothing (PyTorch semantics).

    The batch mean with weights is ``sum_i w_yi nll_i / sum_i w_yi`` (PyTorch's
    ``reduction="mean"``), not a division by the batch size.

    Example::

        crit = build_criterion({"name": "cross_entropy", "class_weight": "balanced"},
                               num_classes=751, class_counts=counts)
    """

    needs_features = False

    def __init__(
        self,
        class_weight: Sequence[float] | str | None = None,
        ignore_index: int = -100,
        num_classes: int | None = None,
        class_counts: Sequence[int] | None = None,
    ) -> None:
        super().__init__()
        if isinstance(ignore_index, bool) or not isinstance(ignore_index, int):
            raise ConfigError(f"criterion 'cross_entropy': ignore_index must be an integer, got {ignore_index!r}")
        self.ignore_index = ignore_index
        weight = None
        if isinstance(class_weight, str):
            if class_weight != "balanced":
                raise ConfigError(
                    f"criterion 'cross_entropy': class_weight must be a list of floats or 'balanced', "
                    f"got '{class_weight}'"
                )
            if class_counts is None:
                raise ConfigError(
                    "criterion 'cross_entropy': class_weight 'balanced' needs the training split's class "
                    "counts (build_criterion(..., class_counts=...))"
                )
            counts = torch.as_tensor(list(class_counts), dtype=torch.float64)
            if num_classes is not None and counts.numel() != num_classes:
                raise ReidError(f"class_counts has {counts.numel()} entries for {num_classes} classes")
            if (counts <= 0).any():
                raise ReidError("class_weight 'balanced': every class needs at least one training image")
            weight = counts.sum() / (counts.numel() * counts)
        elif class_weight is not None:
            if isinstance(class_weight, (int, float)) or not all(
                isinstance(w, (int, float)) and not isinstance(w, bool) for w in class_weight
            ):
                raise ConfigError(
                    "criterion 'cross_entropy': class_weight must be a list of numbers or 'balanced'"
                )
            weight = torch.tensor([float(w) for w in class_weight], dtype=torch.float64)
            if num_classes is not None and weight.numel() != num_classes:
                raise ConfigError(
                    f"criterion 'cross_entropy': class_weight has {weight.numel()} values but there are "
                    f"{num_classes} classes; give one weight per class"
                )
            if (weight < 0).any() or not torch.isfinite(weight).all() or weight.sum() == 0:
                raise ConfigError("criterion 'cross_entropy': class_weight values must be finite, >= 0, not all 0")
        self.register_buffer("weight", None if weight is None else weight.float())

    def batch_part(self, share: BatchShare) -> torch.Tensor:
        """The share's weighted sum over the whole batch's weight: the weighted mean needs each other
        sample's class weight only, which every process knows from the batch's targets, so the logits
        stay local."""
        _check_logits("cross_entropy", share.logits, share.targets)
        logits = upcast(share.logits)
        weight = None if self.weight is None else self.weight.to(logits.dtype)
        summed = F.cross_entropy(logits, share.targets, weight=weight, ignore_index=self.ignore_index,
                                 reduction="sum")
        return summed / self.total_weight(share.batch_targets).to(summed.dtype)

    def total_weight(self, targets: torch.Tensor) -> torch.Tensor:
        """The denominator of the batch's weighted mean: the summed class weight of its counted targets."""
        counted = targets != self.ignore_index
        if self.weight is None:
            return counted.sum()
        # masked, not selected: a boolean selection would wait for the GPU on every step
        return (self.weight[targets.clamp(0, len(self.weight) - 1)] * counted).sum()


@register_criterion("soft_cross_entropy")
class SoftCrossEntropy(PartCriterion):
    """Cross entropy plus the mean over classes of ``-log p``: every class contributes.

    ``loss = mean_i [-log p_iy] + uniform_weight * mean_i (1/K) sum_c -log p_ic``.
    The second term is the cross entropy against the uniform distribution, so with
    ``uniform_weight = u`` this equals ``(1+u)`` times label smoothing with
    ``eps = u/(1+u)`` (variant ``uniform``).

    Example::

        crit = build_criterion({"name": "soft_cross_entropy", "uniform_weight": 0.5}, 751)
    """

    needs_features = False

    def __init__(self, uniform_weight: float = 1.0) -> None:
        super().__init__()
        if isinstance(uniform_weight, bool) or not isinstance(uniform_weight, (int, float)) or uniform_weight < 0:
            raise ConfigError(
                f"criterion 'soft_cross_entropy': uniform_weight must be a number >= 0, got {uniform_weight!r}"
            )
        self.uniform_weight = float(uniform_weight)

    def batch_part(self, share: BatchShare) -> torch.Tensor:
        """Both terms are means over samples, each reading only its own row: local (see sample_mean_part)."""
        _check_logits("soft_cross_entropy", share.logits, share.targets)
        logp = F.log_softmax(upcast(share.logits), dim=1)
        nll = -logp.gather(1, share.targets[:, None]).squeeze(1)
        return sample_mean_part(nll - self.uniform_weight * logp.mean(dim=1), share)


@register_criterion("label_smoothing")
class LabelSmoothing(PartCriterion):
    """Cross entropy against a smoothed target distribution (Szegedy et al. 2016).

    Args:
        epsilon: probability mass moved off the target, in [0, 1).
        variant: ``uniform`` (``q = (1-eps) onehot + eps/K``, the mass spread over all
            classes including the target: ``torch.nn.CrossEntropyLoss(label_smoothing=eps)``
            and BoT's CrossEntropyLabelSmooth) or ``others`` (``1-eps`` on the target,
            ``eps/(K-1)`` on each other class).

    Computed without building ``q``:
    ``uniform``: ``-(1-eps) lp_y - eps/K sum_c lp_c``;
    ``others``:  ``-(1-eps) lp_y - eps/(K-1) (sum_c lp_c - lp_y)``.

    Example::

        crit = build_criterion({"name": "label_smoothing", "epsilon": 0.1}, num_classes=751)
    """

    needs_features = False
    VARIANTS = ("uniform", "others")

    def __init__(self, epsilon: float = 0.1, variant: str = "uniform", num_classes: int | None = None) -> None:
        super().__init__()
        self.epsilon = _check_epsilon("label_smoothing", epsilon)
        if variant not in self.VARIANTS:
            raise ConfigError(
                f"criterion 'label_smoothing': unknown variant {variant!r}; valid variants: {', '.join(self.VARIANTS)}"
            )
        if variant == "others" and num_classes is not None and num_classes < 2:
            raise ConfigError("criterion 'label_smoothing': variant 'others' needs at least 2 classes")
        self.variant = variant

    def batch_part(self, share: BatchShare) -> torch.Tensor:
        """A mean over samples, each reading only its own row: local (see sample_mean_part)."""
        return sample_mean_part(self.per_sample(share.logits, share.targets), share)

    def per_sample(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Each sample's cross entropy against its smoothed target, (N,)."""
        _check_logits("label_smoothing", logits, targets)
        logp = F.log_softmax(upcast(logits), dim=1)
        k = logp.shape[1]
        lp_target = logp.gather(1, targets[:, None]).squeeze(1)
        lp_sum = logp.sum(dim=1)
        eps = self.epsilon
        if self.variant == "uniform":
            per_sample = -(1 - eps) * lp_target - eps / k * lp_sum
        else:
            per_sample = -(1 - eps) * lp_target - eps / (k - 1) * (lp_sum - lp_target)
        return per_sample
