"""Curves: what one run contributes to a panel (smoothing, range window, x axis).

The conventions (trailing smoothing before the range is cut, range as fractions of the
longest run, epoch positions of a partial epoch) are listed in :mod:`reid.analysis.compare`.

Example::

    from reid.analysis import curve, load_run, range_indices
    run = load_run("outputs/soft")
    xs, ys = curve(run, "train_acc", smooth=10, x="epoch", window=range_indices(run.arrays["train_acc"].size, (0, 0.1)))
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from ..errors import ReidError
from .run_data import Run, check_metric, metric_group


def moving_average(y: np.ndarray, n: int) -> np.ndarray:
    """Trailing moving average over ``n`` points, same length as ``y``.

    ``out[i] = mean(y[max(0, i-n+1) : i+1])``; equals ``np.convolve(y, np.ones(n)/n, "valid")``
    from index n-1 on.

    Example::

        moving_average(np.array([1., 2., 3., 4.]), 2)   # -> [1., 1.5, 2.5, 3.5]
    """
    y = np.asarray(y, dtype=np.float64)
    if n < 1:
        raise ReidError(f"smoothing window {n} is not a positive integer; use --smooth 1 for none")
    if n == 1 or y.size == 0:
        return y.copy()
    c = np.cumsum(np.concatenate([[0.0], y]))
    i = np.arange(1, y.size + 1)
    lo = np.maximum(0, i - n)
    return (c[i] - c[lo]) / (i - lo)


def epoch_positions(epochs: np.ndarray) -> np.ndarray:
    """Map each mini-batch to ``epoch - 1 + (k + 1) / n`` (k its 0-based index in the epoch,
    n the epoch's mini-batch count; for a partial last epoch n is the earlier epochs' count).

    Example::

        epoch_positions(np.array([1, 1, 2, 2, 3]))   # -> [0.5, 1.0, 1.5, 2.0, 2.5]
    """
    e = np.asarray(epochs, dtype=np.float64).ravel()
    out = np.empty_like(e)
    if e.size == 0:
        return out
    # Contiguous blocks of equal epoch numbers (batches are logged in order).
    starts = np.flatnonzero(np.concatenate([[True], e[1:] != e[:-1]]))
    ends = np.concatenate([starts[1:], [e.size]])
    counts = ends - starts
    for b, (s, t) in enumerate(zip(starts, ends)):
        n = counts[b]
        if b == len(starts) - 1 and b > 0:
            n = max(n, int(counts[:b].max()))  # run in progress: don't stretch the partial epoch
        out[s:t] = e[s] - 1 + (np.arange(t - s) + 1) / n
    return out


def parse_range(text: str | Sequence[float] | None) -> tuple[float, float]:
    """``"0:0.1"`` -> (0.0, 0.1); ``":0.5"``, ``"0.5:"`` and None (whole run) also work.

    Example::

        parse_range("0:0.1")   # -> (0.0, 0.1)
    """
    if text is None:
        return (0.0, 1.0)
    if isinstance(text, str):
        if text.count(":") != 1:
            raise ReidError(f"range {text!r} is not START:END; give fractions of the run like 0:0.1")
        a_s, b_s = text.split(":")
        try:
            a = float(a_s) if a_s.strip() else 0.0
            b = float(b_s) if b_s.strip() else 1.0
        except ValueError:
            raise ReidError(f"range {text!r} is not START:END with numbers; give fractions like 0:0.1") from None
    else:
        a, b = (float(v) for v in text)
    if not (0.0 <= a < b <= 1.0):
        raise ReidError(f"range {a:g}:{b:g} must satisfy 0 <= start < end <= 1 (fractions of the run), e.g. 0:0.1")
    return (a, b)


def range_indices(longest: int, fraction: tuple[float, float]) -> tuple[int, int]:
    """Mini-batch index window ``[start, stop)`` of a metric whose longest run has ``longest`` entries."""
    a, b = fraction
    return int(math.floor(a * longest)), min(longest, int(math.ceil(b * longest)))


def curve(run: Run, metric: str, smooth: int = 1, x: str = "batch",
          window: tuple[int, int] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The (x, y) that :func:`plot_runs` draws for one run and metric.

    Smoothing is applied to the whole curve, then the ``window`` (mini-batch indices
    ``[start, stop)``, see :func:`range_indices`) is cut out. Accuracy is returned in %.

    Example::

        xs, ys = curve(run, "train_acc", smooth=10, x="epoch", window=(0, 100))
    """
    check_metric(run, metric)
    y = moving_average(run.arrays[metric], smooth)
    if metric.endswith("_acc"):
        y = y * 100.0
    if x == "batch":
        xs = np.arange(1, y.size + 1, dtype=np.float64)
    elif x == "epoch":
        xs = epoch_positions(run.arrays[f"{metric_group(metric)}_epoch"])
    else:
        raise ReidError(f"x axis {x!r} is not 'batch' or 'epoch'")
    if window is not None:
        start, stop = window
        xs, y = xs[start:stop], y[start:stop]
    return xs, y
