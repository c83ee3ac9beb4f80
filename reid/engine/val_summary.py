"""The val phase's whole-split measures (``val_ece``, ``val_confidence``, ``val_feature_ratio``),
gathered on the device batch by batch and summed across torchrun processes once per epoch.

Each process adds its images' calibration bins and places its images' features at their rows of the
val split; at the end one all-reduce of each gives every process the sums and features of the whole
split, so the numbers do not depend on the number of processes.

Example::

    summary = ValSummary(labels=val_labels, device=device)
    summary.add(rows, logits, targets, features)     # per val batch, no host synchronisation
    summary.result()      # {"ece": 0.04, "confidence": 0.71, "feature_ratio": 0.62}
"""

from __future__ import annotations

from typing import Optional

import torch

from ..evaluation.calibration import ECE_BINS, calibration_bins, expected_calibration_error, feature_ratio, mean_confidence
from . import distributed


class ValSummary:
    """Calibration bins and retrieval features of one val phase (see the module docstring)."""

    def __init__(self, labels: torch.Tensor, device: torch.device) -> None:
        self.labels = labels   # the whole val split's labels, in row order
        self.bins = torch.zeros(ECE_BINS, 3, dtype=torch.float64, device=device)
        self.features: Optional[torch.Tensor] = None   # (val images, D), allocated at the first batch

    def add(self, rows: torch.Tensor, logits: torch.Tensor, targets: torch.Tensor, features: torch.Tensor) -> None:
        """This process's images of a val batch: their rows of the split, logits, labels and retrieval features."""
        self.bins += calibration_bins(logits, targets, bins=len(self.bins))
        if self.features is None:
            self.features = torch.zeros(len(self.labels), features.shape[1], dtype=torch.float32,
                                        device=self.bins.device)
        self.features[rows] = features.detach().float()

    def result(self) -> dict[str, float]:
        """The whole split's ECE, mean confidence and feature ratio (every process's images)."""
        bins = distributed.all_reduce_sum(self.bins.clone())
        features = distributed.all_reduce_sum(self.features.clone())  # each row set by exactly one process
        return {"ece": expected_calibration_error(bins), "confidence": mean_confidence(bins),
                "feature_ratio": feature_ratio(features, self.labels)}
