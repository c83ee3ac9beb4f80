"""Criterion-free measures of a model on held-out images: calibration and feature geometry.

Each criterion's loss has its own scale (soft cross entropy adds ``mean_c -log p_c``, label
smoothing a smoothed target), so runs of different criteria are compared with measures that do
not depend on the criterion. Notation: ``p_i = softmax(x_i)``, ``conf_i = max_c p_ic`` (the top
probability), ``right_i = [argmax_c p_ic == y_i]``, ``N`` images.

- **Expected calibration error** (Guo et al. 2017), ``B = 15`` equal-width bins of the top
  probability, bin ``b`` holding the images with ``conf_i in (b/B, (b+1)/B]``:
  ``ECE = sum_b (n_b / N) |acc_b - conf_b| = sum_b |sum_{i in b} right_i - sum_{i in b} conf_i| / N``,
  ``acc_b``/``conf_b`` the bin's accuracy and mean top probability. 0 when every bin is right
  as often as it is confident; a model that always says 0.9 and is right half the time has 0.4.
- **Confidence**: ``sum_i conf_i / N``, the mean top probability (above the accuracy: over-confident).
- **Feature ratio**: on L2-normalised features ``f``, cosine distance ``d_ij = 1 - f_i . f_j``;
  the mean of ``d_ij`` over pairs ``i < j`` of the same identity divided by its mean over pairs of
  different identities. About 1 when the features ignore identity, below 1 when images of one
  identity sit closer together than images of different ones (what retrieval needs); nan without
  a pair of either kind (e.g. one image per identity).

The sums of each calibration bin (:func:`calibration_bins`) add over mini-batches and processes,
so the ECE of a whole split is taken from the bins summed over its batches.

Example::

    bins = calibration_bins(logits, targets)            # (15, 3): count, sum conf, sum right
    expected_calibration_error(bins), mean_confidence(bins)
    feature_ratio(features, labels)                      # 0.6: same-identity pairs are closer
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

ECE_BINS = 15


def calibration_bins(logits: torch.Tensor, targets: torch.Tensor, bins: int = ECE_BINS) -> torch.Tensor:
    """Per bin of the top probability: (image count, sum of top probabilities, number right), (bins, 3) float64.

    Bin ``b`` holds ``conf in (b/bins, (b+1)/bins]`` (the top probability is at least 1/K > 0). Computed
    on the logits' device without a host synchronisation, so it can be summed over a phase's batches.

    Example::

        calibration_bins(torch.tensor([[2.2, 0.0]]), torch.tensor([0]))[13]   # conf 0.900: tensor([1., 0.9002, 1.])
    """
    probs = F.softmax(logits.detach().double(), dim=1)
    conf, predicted = probs.max(dim=1)
    index = (conf * bins).ceil().long().sub(1).clamp(0, bins - 1)
    rows = torch.stack([torch.ones_like(conf), conf, (predicted == targets).double()], dim=1)
    return torch.zeros(bins, 3, dtype=torch.float64, device=logits.device).index_add_(0, index, rows)


def expected_calibration_error(bins: torch.Tensor) -> float:
    """``sum_b |right_b - conf_b| / N`` of :func:`calibration_bins`' sums; nan for no image.

    Example::

        expected_calibration_error(calibration_bins(logits, targets))   # 0.4: says 0.9, right half the time
    """
    return _per_image(bins, (bins[:, 2] - bins[:, 1]).abs().sum())


def mean_confidence(bins: torch.Tensor) -> float:
    """The mean top probability over the images of :func:`calibration_bins`' sums; nan for no image."""
    return _per_image(bins, bins[:, 1].sum())


def _per_image(bins: torch.Tensor, total: torch.Tensor) -> float:
    """``total`` over the number of images of ``bins``; nan for no image (one host read)."""
    count, total = bins[:, 0].sum().item(), total.item()
    return total / count if count else math.nan


def feature_ratio(features: torch.Tensor, labels: torch.Tensor) -> float:
    """Mean same-identity over mean different-identity cosine distance of ``features`` (N, D), rows
    L2-normalised here; nan when there is no pair of one kind or the other.

    Example::

        feature_ratio(torch.tensor([[1., 0.], [1., .1], [0., 1.]]), torch.tensor([3, 3, 7]))   # 0.005 / 0.95
    """
    f = F.normalize(features.detach().double(), dim=1)
    distance = 1.0 - f @ f.T  # float64: near-duplicate images' distances are differences of numbers near 1
    labels = labels.to(f.device)
    upper = torch.ones_like(distance, dtype=torch.bool).triu(diagonal=1)  # each pair once, no self-pair
    same = (labels[:, None] == labels[None, :]) & upper
    different = (labels[:, None] != labels[None, :]) & upper
    if not same.any() or not different.any():
        return math.nan
    return (distance[same].mean() / distance[different].mean()).item()
