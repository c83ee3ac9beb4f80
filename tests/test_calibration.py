"""The criterion-free measures of reid/evaluation/calibration.py on logits and features made by hand:
expected calibration error, mean confidence, the same-/different-identity feature ratio."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from reid.evaluation.calibration import calibration_bins, expected_calibration_error, feature_ratio, mean_confidence


def logits_with_top(probability: float, n: int, classes: int = 4) -> torch.Tensor:
    """``n`` rows whose softmax puts ``probability`` on class 0 and the rest evenly on the others."""
    rest = (1 - probability) / (classes - 1)
    row = torch.tensor([math.log(probability)] + [math.log(rest)] * (classes - 1), dtype=torch.float64)
    return row.repeat(n, 1)


def test_perfectly_calibrated_bins_give_zero():
    """Three bins, each right exactly as often as it is confident: 0.6 on 5 images (3 right), 0.8 on 5
    (4 right), 0.95 on 20 (19 right)."""
    logits = torch.cat([logits_with_top(0.6, 5), logits_with_top(0.8, 5), logits_with_top(0.95, 20)])
    right = [1, 1, 1, 0, 0] + [1, 1, 1, 1, 0] + [1] * 19 + [0]
    targets = torch.tensor([0 if r else 1 for r in right])
    bins = calibration_bins(logits, targets)
    assert expected_calibration_error(bins) == pytest.approx(0.0, abs=1e-12)
    assert mean_confidence(bins) == pytest.approx((0.6 * 5 + 0.8 * 5 + 0.95 * 20) / 30)


def test_always_ninety_percent_sure_and_right_half_the_time_gives_0_4():
    logits = logits_with_top(0.9, 10, classes=2)
    targets = torch.tensor([0, 1] * 5)  # class 0 predicted every time: right on half
    bins = calibration_bins(logits, targets)
    assert expected_calibration_error(bins) == pytest.approx(0.4)
    assert mean_confidence(bins) == pytest.approx(0.9)


def direct_bins(logits: np.ndarray, targets: np.ndarray, bins: int = 15) -> np.ndarray:
    """Bin by bin with a loop over images: bin b holds top probability p with b/bins < p <= (b+1)/bins."""
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    p = e / e.sum(axis=1, keepdims=True)
    out = np.zeros((bins, 3))
    for row, y in zip(p, targets):
        top = row.max()
        for b in range(bins):
            if b / bins < top <= (b + 1) / bins:
                out[b] += [1, top, float(row.argmax() == y)]
    return out


def test_bins_match_a_direct_computation():
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 2.5, (400, 6))
    targets = rng.integers(0, 6, 400)
    expected = direct_bins(logits, targets)
    got = calibration_bins(torch.from_numpy(logits), torch.from_numpy(targets)).numpy()
    assert np.allclose(got, expected, atol=1e-9) and (expected[:, 0] > 0).sum() >= 8  # many bins used
    ece = np.abs(expected[:, 2] - expected[:, 1]).sum() / 400  # sum_b n_b/N |acc_b - conf_b|
    assert expected_calibration_error(torch.from_numpy(got)) == pytest.approx(ece)
    # bins add over batches: the split's ECE from two halves' bins equals the whole's
    halves = sum(calibration_bins(torch.from_numpy(logits[s]), torch.from_numpy(targets[s]))
                 for s in (slice(0, 150), slice(150, 400)))
    assert expected_calibration_error(halves) == pytest.approx(ece)


def test_feature_ratio_is_the_mean_same_identity_over_different_identity_cosine_distance():
    features = torch.tensor([[1.0, 0.0], [2.0, 0.2], [0.0, 1.0], [0.1, 3.0]])
    labels = torch.tensor([7, 7, 9, 9])
    f = features.double() / features.double().norm(dim=1, keepdim=True)
    d = 1 - f @ f.T
    same = (d[0, 1] + d[2, 3]) / 2
    different = (d[0, 2] + d[0, 3] + d[1, 2] + d[1, 3]) / 4
    assert feature_ratio(features, labels) == pytest.approx(float(same / different))
    assert feature_ratio(features, labels) < 0.05  # identities apart
    assert math.isnan(feature_ratio(features, torch.tensor([1, 2, 3, 4])))  # no same-identity pair


def test_feature_ratio_is_about_one_when_features_ignore_identity():
    rng = np.random.default_rng(1)
    features = torch.from_numpy(rng.normal(size=(300, 64)))
    labels = torch.from_numpy(rng.integers(0, 30, 300))
    assert feature_ratio(features, labels) == pytest.approx(1.0, abs=0.02)
