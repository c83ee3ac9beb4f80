"""The figure: one panel per metric, one line per run, written atomically as PNG/PDF/SVG.

Example::

    from reid.analysis import load_run, plot_runs
    plot_runs([load_run("outputs/standard"), load_run("outputs/soft")], "cmp.png", metrics=["train_acc"])
"""

from __future__ import annotations

import math
import os
import textwrap
from pathlib import Path
from typing import Sequence

import numpy as np

from ..errors import ReidError
from ..io import atomic_write_with
from .curves import curve, parse_range, range_indices
from .run_data import Run, check_metric, metric_group, unique_names
from .over_seeds import Group


DEFAULT_METRICS: tuple[str, ...] = ("train_loss", "train_acc", "val_loss", "val_acc")
# Figure geometry: fixed so the PNG size is known (tests check it): PANEL_INCHES per panel at DPI.
PANEL_INCHES: tuple[float, float] = (6.0, 4.0)
DPI = 100
MAX_COLUMNS = 2
_LINESTYLES = ("-", "--", "-.", ":")
_LABELS = {
    "train_loss": "train loss",
    "train_acc": "train accuracy (%)",
    "val_loss": "validation loss",
    "val_acc": "validation accuracy (%)",
    "train_nll": "train NLL (plain cross entropy)",
    "val_nll": "validation NLL (plain cross entropy)",
    "train_lr": "learning rate",
    "train_batch_size": "train batch size (images)",
    "val_batch_size": "validation batch size (images)",
}


def figure_size_px(n_metrics: int) -> tuple[int, int]:
    """(width, height) in pixels of the PNG :func:`plot_runs` writes for ``n_metrics`` panels."""
    cols = min(MAX_COLUMNS, n_metrics)
    rows = math.ceil(n_metrics / cols)
    return int(round(cols * PANEL_INCHES[0] * DPI)), int(round(rows * PANEL_INCHES[1] * DPI))


def _title(names: Sequence[str], smooth: int, fraction: tuple[float, float], width_px: int, note: str = "") -> str:
    title = " vs ".join(names)
    notes = [note] if note else []
    if fraction != (0.0, 1.0):
        notes.append(f"mini-batches {fraction[0]:.0%}-{fraction[1]:.0%} of the longest run")
    if smooth > 1:
        notes.append(f"trailing mean over {smooth} mini-batches")
    if notes:
        title += "\n" + "; ".join(notes)
    # ~7 px per character at the title's font size: wrap instead of running off the figure.
    width = max(30, width_px // 7)
    return "\n".join(textwrap.fill(line, width) for line in title.split("\n"))


def plot_runs(runs: Sequence[Run], out_path: str | os.PathLike,
              metrics: Sequence[str] = DEFAULT_METRICS, smooth: int = 1, x: str = "batch",
              fraction: tuple[float, float] = (0.0, 1.0), note: str = "") -> Path:
    """Draw one panel per metric, one line per run, and write the figure atomically; ``note``: a line
    under the title (why the panels are what they are).

    The image is ``figure_size_px(len(metrics))`` pixels (PANEL_INCHES per panel at DPI,
    at most MAX_COLUMNS panels per row). Uses matplotlib's Agg canvas directly, so no
    display and no global backend switch are needed.

    Example::

        plot_runs([run_a, run_b], "cmp.png", metrics=["train_acc"], smooth=20, fraction=(0, 0.1))
    """
    fmt = _format(out_path)
    runs, metrics, fraction = _checked(runs, metrics, smooth, x, fraction)
    names = unique_names(runs)
    fig, panels = _figure(metrics, runs, fraction)
    for (ax, metric, window) in panels:
        drawn = 0
        for i, (run, name) in enumerate(zip(runs, names)):
            xs, ys = curve(run, metric, smooth=int(smooth), x=x, window=window)
            label = name if run.criterion in ("?", name) else f"{name} ({run.criterion})"
            if not ys.size:
                label += " (no data)"
            style = _LINESTYLES[i % len(_LINESTYLES)]
            # Very short curves would be invisible as lines: mark the points too.
            marker = "o" if 0 < ys.size <= 30 else None
            ax.plot(xs, ys, color=f"C{i % 10}", linestyle=style, linewidth=1.2, marker=marker,
                    markersize=3, label=label)
            drawn += ys.size
        _label_panel(ax, metric, x, drawn)
        _mark_epochs(ax, runs, metric, x, window)
    fig.suptitle(_title(names, int(smooth), fraction, figure_size_px(len(metrics))[0], note), fontsize=11)
    return _save(fig, out_path, fmt)


BANDS = {"minmax": "min-max", "std": "±1 std"}


def study_figure(groups: Sequence[Group], metrics: Sequence[str] = DEFAULT_METRICS, smooth: int = 1,
                 x: str = "batch", fraction: tuple[float, float] = (0.0, 1.0), band: str = "minmax", note: str = ""):
    """The study figure: one panel per metric, per config the mean curve over its seeds and a band.

    Each run's curve is made as in :func:`plot_runs` (smoothing, window, x axis); at each
    mini-batch the line is the mean over the seeds that reached it and the band spans their
    min to max (``band="minmax"``) or mean ± 1 sample std (``band="std"``), as the legend says.
    One colour per config. Returns the matplotlib Figure (see :func:`plot_study` to write it).
    """
    if band not in BANDS:
        raise ReidError(f"band {band!r} is not one of {', '.join(BANDS)}")
    runs = [run for g in groups for run in g.runs.values()]
    runs, metrics, fraction = _checked(runs, metrics, smooth, x, fraction)
    fig, panels = _figure(metrics, runs, fraction)
    for (ax, metric, window) in panels:
        drawn = 0
        for i, g in enumerate(groups):
            curves = [curve(run, metric, smooth=int(smooth), x=x, window=window) for run in g.runs.values()]
            xs = max((c[0] for c in curves), key=len)
            stack = np.full((len(curves), xs.size), np.nan)
            for row, (_, ys) in zip(stack, curves):
                row[:ys.size] = ys
            drawn += xs.size
            if not xs.size:
                ax.plot([], [], color=f"C{i % 10}", label=f"{g.name} (no data)")
                continue
            mean = np.nanmean(stack, axis=0)
            seeds = len(curves)
            label = f"{g.name} (1 seed)" if seeds == 1 else f"{g.name} (mean of {seeds} seeds, band {BANDS[band]})"
            ax.plot(xs, mean, color=f"C{i % 10}", linewidth=1.2, label=label)
            if seeds > 1:
                lo, hi = _band(stack, mean, band)
                ax.fill_between(xs, lo, hi, color=f"C{i % 10}", alpha=0.25, linewidth=0)
        _label_panel(ax, metric, x, drawn)
        _mark_epochs(ax, runs, metric, x, window)
    fig.suptitle(_title([g.name for g in groups], int(smooth), fraction, figure_size_px(len(metrics))[0], note),
                 fontsize=11)
    return fig


def plot_study(groups: Sequence[Group], out_path: str | os.PathLike, metrics: Sequence[str] = DEFAULT_METRICS,
               smooth: int = 1, x: str = "batch", fraction: tuple[float, float] = (0.0, 1.0),
               band: str = "minmax", note: str = "") -> Path:
    """Write :func:`study_figure` atomically to ``out_path`` (PNG/PDF/SVG); same size as :func:`plot_runs`'.

    Example::

        plot_study(study_groups(runs), "study.png", metrics=["train_acc", "val_acc"], band="std")
    """
    fmt = _format(out_path)
    fig = study_figure(groups, metrics, smooth, x, fraction, band, note)
    return _save(fig, out_path, fmt)


def _band(stack: np.ndarray, mean: np.ndarray, band: str) -> tuple[np.ndarray, np.ndarray]:
    if band == "minmax":
        return np.nanmin(stack, axis=0), np.nanmax(stack, axis=0)
    counts = np.sum(~np.isnan(stack), axis=0)
    std = np.zeros_like(mean)
    many = counts > 1
    std[many] = np.nanstd(stack[:, many], axis=0, ddof=1)
    return mean - std, mean + std


def _format(out_path: str | os.PathLike) -> str:
    out_path = Path(out_path)
    fmt = out_path.suffix.lower().lstrip(".")
    if fmt not in ("png", "pdf", "svg"):
        raise ReidError(f"{out_path}: the output must end in .png (or .pdf/.svg)")
    return fmt


def _checked(runs: Sequence[Run], metrics: Sequence[str], smooth: int, x: str,
             fraction) -> tuple[list[Run], list[str], tuple[float, float]]:
    """The arguments checked: (runs, metrics, fraction); ReidError naming the bad one."""
    runs, metrics = list(runs), list(metrics)
    if not runs:
        raise ReidError("no runs to compare; pass at least one run directory or .mat file")
    if not metrics:
        raise ReidError("no metrics to plot; pass e.g. --metrics train_acc,val_acc")
    if x not in ("batch", "epoch"):
        raise ReidError(f"x axis {x!r} is not 'batch' or 'epoch'")
    if int(smooth) != smooth or smooth < 1:
        raise ReidError(f"smoothing window {smooth!r} is not a positive integer; use 1 for none")
    fraction = parse_range(fraction)
    for run in runs:
        for m in metrics:
            check_metric(run, m)
    return runs, metrics, fraction


def _figure(metrics: Sequence[str], runs: Sequence[Run], fraction: tuple[float, float]):
    """(figure, [(axes, metric, mini-batch window)]): the panels, windows cut from the longest run."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    w_px, h_px = figure_size_px(len(metrics))
    fig = Figure(figsize=(w_px / DPI, h_px / DPI), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    cols = min(MAX_COLUMNS, len(metrics))
    rows = math.ceil(len(metrics) / cols)
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for ax in axes[len(metrics):]:
        ax.set_visible(False)
    windows = [range_indices(max(run.arrays[m].size for run in runs), fraction) for m in metrics]
    return fig, list(zip(axes, metrics, windows))


def _label_panel(ax, metric: str, x: str, drawn: int) -> None:
    if not drawn:
        ax.text(0.5, 0.5, "no data yet", ha="center", va="center", transform=ax.transAxes, color="0.4")
    if x == "epoch":
        ax.set_xlabel("epoch")
    else:
        ax.set_xlabel("mini-batch" if metric_group(metric) == "train" else "validation mini-batch")
    ax.set_ylabel(_LABELS.get(metric, metric))
    ax.set_title(metric, fontsize=10)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, loc="best")


def epoch_boundaries(runs: Sequence[Run], metric: str, window: tuple[int, int]) -> list[float]:
    """x positions (1-based mini-batch axis) between the last mini-batch of an epoch and the first
    of the next, from the run with the most mini-batches of ``metric``'s group, inside ``window``
    (0-based ``[start, stop)``).

    Example::

        epoch_boundaries([run], "val_acc", (0, 6))   # val_epoch [1, 1, 2, 2, 3, 3] -> [2.5, 4.5]
    """
    epochs = max((run.arrays[f"{metric_group(metric)}_epoch"] for run in runs), key=len)
    changes = np.nonzero(np.diff(epochs))[0] + 1  # 0-based index of each epoch's first mini-batch
    start, stop = window
    return [float(i) + 0.5 for i in changes if start < i < stop]


def _mark_epochs(ax, runs: Sequence[Run], metric: str, x: str, window: tuple[int, int]) -> None:
    """On a mini-batch axis: integer ticks, and a dotted line at each epoch boundary of a val panel
    (a val epoch is a handful of mini-batches, so where one ends is not otherwise visible)."""
    if x != "batch":
        return
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    if metric_group(metric) != "val":
        return
    for i, position in enumerate(epoch_boundaries(runs, metric, window)):
        ax.axvline(position, color="0.6", linestyle=":", linewidth=0.8, label="epoch boundary" if i == 0 else None)
    if ax.get_legend() is not None:
        ax.legend(fontsize=8, loc="best")


def _save(fig, out_path: str | os.PathLike, fmt: str) -> Path:
    out_path = Path(out_path)
    atomic_write_with(out_path, lambda f: fig.savefig(f, format=fmt, dpi=DPI))
    return out_path
