"""Compare training runs from their ``mini_batch_data.mat`` files (DESIGN.md contract 3).

One panel per metric with one line per run, a Markdown summary table per run, and
``compare()`` that does both and writes ``FILE.png`` + ``FILE.md``.

Example::

    from reid.analysis import compare, load_run, summarize

    png, table = compare(["outputs/standard", "outputs/soft"], metrics=["train_acc"],
                         smooth=20, x="epoch", range_="0:0.1")
    print(table)                     # also written to png.with_suffix(".md")
    run = load_run("outputs/soft/mini_batch_data.mat")
    summarize(run)["val_acc_best"]   # best per-epoch validation accuracy, a fraction

Conventions (chosen here, relied on by the tests):

* **Run name** = the run directory's name (the ``.mat``'s parent folder). When two runs
  have the same name, enough parent folders are prefixed to tell them apart.
* **Per-epoch validation numbers**: a val mini-batch's accuracy is a fraction of its own
  batch, so an epoch's accuracy is the mean of ``val_acc`` weighted by ``val_batch_size``
  (= correct / count over the whole val set; an unweighted mean would over-count the
  partial last batch). The val loss per epoch uses the same weighting (per-batch losses
  are means over the batch). "final" = last complete epoch, "best" = max accuracy /
  min loss over epochs. A last val epoch whose total ``val_batch_size`` is smaller than
  the earlier epochs' (the file was written in the middle of validation) is incomplete
  and left out of final/best.
* **rank-1 / mAP**: the last entry of the ``.mat``'s ``eval_rank1`` / ``eval_mAP``; when
  those are absent or empty, ``rank1`` / ``mAP`` from ``results.json`` in the run
  directory. Both are fractions (shown as %); a value above 1 is taken as already in %.
* **Smoothing** (``smooth=N``): trailing moving average,
  ``y_s[i] = mean(y[max(0, i-N+1) : i+1])``: each point only uses itself and the N-1
  before it, so smoothing never looks ahead; from index N-1 on this equals
  ``np.convolve(y, np.ones(N)/N, "valid")``, the first N-1 points average what exists so
  far (nothing is dropped, a run shorter than N is still drawn). Smoothing is applied to
  the whole curve *before* a range is cut out, so the window at the range's start uses
  the real preceding mini-batches.
* **Range** (``fraction=(a, b)``, CLI ``--range a:b``): for each metric, with L = the
  number of mini-batches of the *longest* run for that metric, mini-batch indices
  ``floor(a*L) <= i < ceil(b*L)`` are shown for every run (a shorter run shows what it has
  of that window), so runs stay aligned on the x axis. Train and val metrics each use
  their own L.
* **x axis**: ``"batch"`` = 1-based mini-batch number (train or val mini-batches);
  ``"epoch"`` maps mini-batch k (0-based) of an epoch e holding n mini-batches to
  ``e - 1 + (k + 1) / n`` using ``train_epoch`` / ``val_epoch``. For the last epoch of a
  run in progress (fewer mini-batches so far than the earlier epochs), n is the earlier
  epochs' count so the partial epoch is drawn at its true position, not stretched.
* **Accuracy** is plotted in % (stored as a fraction); losses as stored.
"""

from __future__ import annotations

import io
import json
import math
import os
import textwrap
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from ..engine.history import per_epoch_weighted
from ..errors import ReidError
from ..io import atomic_write_text, atomic_write_with

MAT_NAME = "mini_batch_data.mat"
DEFAULT_METRICS: tuple[str, ...] = ("train_loss", "train_acc", "val_loss", "val_acc")
# Keys every comparison needs; the other contract-3 keys are optional here.
REQUIRED_KEYS: tuple[str, ...] = (
    "train_loss", "train_acc", "val_loss", "val_acc", "train_epoch", "val_epoch", "val_batch_size",
)
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
    "train_lr": "learning rate",
    "train_batch_size": "train batch size (images)",
    "val_batch_size": "validation batch size (images)",
}


@dataclass
class Run:
    """One training run read from its ``mini_batch_data.mat``.

    ``arrays`` holds every numeric key of the file as a 1-D float64 array (the 1xN rows
    flattened; empty when the run has no entries yet). ``results`` is ``results.json``
    of the run directory, or None.
    """

    name: str
    path: Path  # the run directory
    arrays: dict[str, np.ndarray]
    criterion: str
    config_text: str
    results: dict | None = None
    mat_path: Path | None = field(default=None)


# ----------------------------------------------------------------------------- loading


def load_run(path: str | os.PathLike) -> Run:
    """Read a run directory (holding ``mini_batch_data.mat``) or a ``.mat`` file.

    Raises :class:`ReidError` naming the path when it does not exist, is not a run
    directory or ``.mat``, cannot be read, or lacks the keys of DESIGN.md contract 3.

    Example::

        run = load_run("outputs/soft")
        run.name, run.criterion, run.arrays["train_acc"][:5]
    """
    from scipy.io import loadmat

    p = Path(path)
    if not p.exists():
        raise ReidError(f"{p}: no such file or directory; pass a run directory holding {MAT_NAME} "
                        "or the .mat file itself")
    if p.is_dir():
        mat_path = p / MAT_NAME
        if not mat_path.is_file():
            raise ReidError(f"{p}: not a run directory (no {MAT_NAME} in it); pass the folder train.py "
                            "wrote (output.root/output.name) or a .mat file")
    elif p.suffix.lower() == ".mat":
        mat_path = p
    else:
        raise ReidError(f"{p}: not a run directory or a .mat file; pass a run directory holding "
                        f"{MAT_NAME} or the .mat file itself")
    run_dir = mat_path.parent
    try:
        raw = loadmat(str(mat_path))
    except NotImplementedError as e:  # MATLAB v7.3 (HDF5) files
        raise ReidError(f"{mat_path}: MATLAB v7.3 files are not supported ({e}); save it with "
                        "save(..., '-v7') or scipy.io.savemat") from e
    except Exception as e:  # scipy raises ValueError/TypeError/OSError/... on corrupt input
        raise ReidError(f"{mat_path}: cannot be read as a .mat file ({e}); is it a "
                        f"{MAT_NAME} written by train.py?") from e

    arrays: dict[str, np.ndarray] = {}
    strings: dict[str, str] = {}
    bad_shape: list[str] = []
    for key, value in raw.items():
        if key.startswith("__"):
            continue
        if not isinstance(value, np.ndarray):
            continue
        if value.dtype.kind == "U":
            strings[key] = "".join(str(s) for s in value.ravel())
        elif value.dtype.kind in "fiub":
            # 1xN rows per contract 3; tolerate Nx1 / empty; anything 2-D is not a curve.
            if sum(d > 1 for d in value.shape) > 1:
                bad_shape.append(f"{key} {value.shape}")
                continue
            arrays[key] = value.astype(np.float64).ravel()

    missing = [k for k in REQUIRED_KEYS if k not in arrays]
    if missing:
        detail = f" (not 1xN rows: {', '.join(bad_shape)})" if bad_shape else ""
        raise ReidError(f"{mat_path}: missing key(s) {', '.join(missing)}{detail}; a {MAT_NAME} written "
                        "by train.py has them (DESIGN.md contract 3)")
    for group, keys in (("train", ("train_loss", "train_acc", "train_epoch", "train_lr", "train_batch_size")),
                        ("val", ("val_loss", "val_acc", "val_epoch", "val_batch_size"))):
        lengths = {k: arrays[k].size for k in keys if k in arrays}
        if len(set(lengths.values())) > 1:
            listing = ", ".join(f"{k}={n}" for k, n in lengths.items())
            raise ReidError(f"{mat_path}: the {group}_* rows have different lengths ({listing}); the file "
                            "is damaged or not written by train.py")

    config_text = strings.get("config", "")
    if not config_text and (run_dir / "config.yaml").is_file():
        config_text = (run_dir / "config.yaml").read_text(encoding="utf-8", errors="replace")
    results = _read_results(run_dir / "results.json")
    return Run(name=run_dir.resolve().name or str(run_dir), path=run_dir, arrays=arrays,
               criterion=strings.get("criterion", "") or "?", config_text=config_text,
               results=results, mat_path=mat_path)


def _read_results(path: Path) -> dict | None:
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ReidError(f"{path}: cannot be read as JSON ({e}); re-run the evaluation "
                        "(python -m reid.evaluate RUN_DIR) or delete the file") from e
    return data if isinstance(data, dict) else None


def _unique_names(runs: Sequence[Run]) -> list[str]:
    """Run labels: the directory name, with parent folders prefixed only where names clash."""
    parts = [run.path.resolve().parts for run in runs]
    depth = [1] * len(runs)
    for _ in range(max((len(p) for p in parts), default=1)):
        labels = ["/".join(p[-d:]) for p, d in zip(parts, depth)]
        clashes = {lab for lab in labels if labels.count(lab) > 1}
        if not clashes:
            return labels
        depth = [d + 1 if lab in clashes else d for d, lab in zip(depth, labels)]
    # Same directory given twice: number the repeats.
    labels = ["/".join(p[-d:]) for p, d in zip(parts, depth)]
    seen: dict[str, int] = {}
    out = []
    for lab in labels:
        seen[lab] = seen.get(lab, 0) + 1
        out.append(lab if seen[lab] == 1 else f"{lab} #{seen[lab]}")
    return out


# ----------------------------------------------------------------------------- curves


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


def _metric_group(metric: str) -> str:
    return "val" if metric.startswith("val_") else "train"


def available_metrics(run: Run) -> list[str]:
    """Per-mini-batch arrays of ``run`` that can be plotted (same length as the train or val rows)."""
    n_train, n_val = run.arrays["train_loss"].size, run.arrays["val_loss"].size
    skip = {"train_epoch", "val_epoch"}
    out = []
    for k, v in run.arrays.items():
        if k in skip or k.startswith("eval_"):
            continue
        if (k.startswith("val_") and v.size == n_val) or (not k.startswith("val_") and v.size == n_train):
            out.append(k)
    return out


def _check_metric(run: Run, metric: str) -> None:
    if metric not in run.arrays or metric not in available_metrics(run):
        raise ReidError(f"{run.mat_path or run.path}: no per-mini-batch metric {metric!r}; "
                        f"choose from {', '.join(sorted(available_metrics(run)))}")


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
    _check_metric(run, metric)
    y = moving_average(run.arrays[metric], smooth)
    if metric.endswith("_acc"):
        y = y * 100.0
    if x == "batch":
        xs = np.arange(1, y.size + 1, dtype=np.float64)
    elif x == "epoch":
        xs = epoch_positions(run.arrays[f"{_metric_group(metric)}_epoch"])
    else:
        raise ReidError(f"x axis {x!r} is not 'batch' or 'epoch'")
    if window is not None:
        start, stop = window
        xs, y = xs[start:stop], y[start:stop]
    return xs, y


# ----------------------------------------------------------------------------- summary


def summarize(run: Run) -> dict:
    """Numbers of the summary table for one run (fractions, not %; None when unknown).

    Keys: name, path, criterion, epochs (max train_epoch), train_batches, val_batches,
    val_epochs, val_acc_per_epoch, val_loss_per_epoch, val_acc_final, val_acc_best,
    val_acc_best_epoch, val_loss_final, val_loss_best, val_loss_best_epoch,
    val_partial_epoch (epoch left out as incomplete, or None), rank1, mAP, eval_epoch,
    eval_source ("mat", "results.json" or None).

    Example::

        s = summarize(load_run("outputs/soft"))
        print(f"{s['val_acc_best']:.2%} at epoch {s['val_acc_best_epoch']}")
    """
    a = run.arrays
    out: dict = {
        "name": run.name, "path": str(run.path), "criterion": run.criterion,
        "epochs": int(a["train_epoch"].max()) if a["train_epoch"].size else 0,
        "train_batches": int(a["train_loss"].size), "val_batches": int(a["val_loss"].size),
    }
    eps, accs, totals = per_epoch_weighted(a["val_acc"], a["val_batch_size"], a["val_epoch"])
    _, losses, _ = per_epoch_weighted(a["val_loss"], a["val_batch_size"], a["val_epoch"])
    partial = None
    if len(totals) > 1 and totals[-1] < max(totals[:-1]):
        partial = eps[-1]
        eps, accs, losses = eps[:-1], accs[:-1], losses[:-1]
    out.update(val_epochs=eps, val_acc_per_epoch=accs, val_loss_per_epoch=losses, val_partial_epoch=partial)
    if eps:
        ia, il = int(np.argmax(accs)), int(np.argmin(losses))
        out.update(val_acc_final=accs[-1], val_acc_best=accs[ia], val_acc_best_epoch=eps[ia],
                   val_loss_final=losses[-1], val_loss_best=losses[il], val_loss_best_epoch=eps[il])
    else:
        out.update(val_acc_final=None, val_acc_best=None, val_acc_best_epoch=None,
                   val_loss_final=None, val_loss_best=None, val_loss_best_epoch=None)

    rank1 = mAP = eval_epoch = source = None
    if a.get("eval_rank1", np.empty(0)).size or a.get("eval_mAP", np.empty(0)).size:
        rank1 = _last(a.get("eval_rank1"))
        mAP = _last(a.get("eval_mAP"))
        e = _last(a.get("eval_epoch"))
        eval_epoch = int(e) if e is not None else None
        source = "mat"
    elif run.results:
        rank1 = _as_float(run.results.get("rank1"))
        mAP = _as_float(run.results.get("mAP"))
        e = run.results.get("epoch")
        eval_epoch = int(e) if isinstance(e, (int, float)) else None
        source = "results.json" if rank1 is not None or mAP is not None else None
    out.update(rank1=rank1, mAP=mAP, eval_epoch=eval_epoch, eval_source=source)
    return out


def _last(v: np.ndarray | None) -> float | None:
    return float(v[-1]) if v is not None and v.size else None


def _as_float(v) -> float | None:
    try:
        return None if v is None else float(v)
    except (TypeError, ValueError):
        return None


def _pct(v: float | None) -> str:
    if v is None or not math.isfinite(v):
        return "-"
    return f"{v:.2f}%" if v > 1.0 else f"{100 * v:.2f}%"  # > 1: already in %


def _num(v: float | None) -> str:
    return "-" if v is None or not math.isfinite(v) else f"{v:.4f}"


def _cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def summary_table(runs: Sequence[Run]) -> str:
    """Markdown table, one row per run (accuracies in %, "(ep N)" = epoch of the best value).

    Example::

        print(summary_table([load_run("outputs/standard"), load_run("outputs/soft")]))
    """
    header = ["run", "criterion", "epochs", "final val acc", "best val acc", "final val loss",
              "best val loss", "rank-1", "mAP"]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] * 2 + ["---:"] * (len(header) - 2)) + "|"]
    for name, run in zip(_unique_names(runs), runs):
        s = summarize(run)
        epochs = str(s["epochs"])
        if s["val_partial_epoch"] is not None:
            epochs += " (val of last incomplete)"
        best_acc = _pct(s["val_acc_best"]) + (f" (ep {s['val_acc_best_epoch']})" if s["val_acc_best"] is not None else "")
        best_loss = _num(s["val_loss_best"]) + (f" (ep {s['val_loss_best_epoch']})" if s["val_loss_best"] is not None else "")
        rank1 = _pct(s["rank1"])
        if s["rank1"] is not None and s["eval_epoch"] is not None:
            rank1 += f" (ep {s['eval_epoch']})"
        row = [name, s["criterion"], epochs, _pct(s["val_acc_final"]), best_acc,
               _num(s["val_loss_final"]), best_loss, rank1, _pct(s["mAP"])]
        lines.append("| " + " | ".join(_cell(c) for c in row) + " |")
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------- plotting


def figure_size_px(n_metrics: int) -> tuple[int, int]:
    """(width, height) in pixels of the PNG :func:`plot_runs` writes for ``n_metrics`` panels."""
    cols = min(MAX_COLUMNS, n_metrics)
    rows = math.ceil(n_metrics / cols)
    return int(round(cols * PANEL_INCHES[0] * DPI)), int(round(rows * PANEL_INCHES[1] * DPI))


def _title(names: Sequence[str], smooth: int, fraction: tuple[float, float], width_px: int) -> str:
    title = " vs ".join(names)
    notes = []
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
              fraction: tuple[float, float] = (0.0, 1.0)) -> Path:
    """Draw one panel per metric, one line per run, and write the figure atomically.

    The image is ``figure_size_px(len(metrics))`` pixels (PANEL_INCHES per panel at DPI,
    at most MAX_COLUMNS panels per row). Uses matplotlib's Agg canvas directly, so no
    display and no global backend switch are needed.

    Example::

        plot_runs([run_a, run_b], "cmp.png", metrics=["train_acc"], smooth=20, fraction=(0, 0.1))
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    runs = list(runs)
    metrics = list(metrics)
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
            _check_metric(run, m)
    out_path = Path(out_path)
    fmt = out_path.suffix.lower().lstrip(".")
    if fmt not in ("png", "pdf", "svg"):
        raise ReidError(f"{out_path}: the output must end in .png (or .pdf/.svg)")

    names = _unique_names(runs)
    w_px, h_px = figure_size_px(len(metrics))
    fig = Figure(figsize=(w_px / DPI, h_px / DPI), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    cols = min(MAX_COLUMNS, len(metrics))
    rows = math.ceil(len(metrics) / cols)
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    colors = [f"C{i % 10}" for i in range(len(runs))]
    for ax, metric in zip(axes, metrics):
        longest = max(run.arrays[metric].size for run in runs)
        window = range_indices(longest, fraction)
        drawn = 0
        for i, (run, name) in enumerate(zip(runs, names)):
            xs, ys = curve(run, metric, smooth=int(smooth), x=x, window=window)
            label = name if run.criterion in ("?", name) else f"{name} ({run.criterion})"
            if not ys.size:
                label += " (no data)"
            style = _LINESTYLES[i % len(_LINESTYLES)]
            # Very short curves would be invisible as lines: mark the points too.
            marker = "o" if 0 < ys.size <= 30 else None
            ax.plot(xs, ys, color=colors[i], linestyle=style, linewidth=1.2, marker=marker,
                    markersize=3, label=label)
            drawn += ys.size
        if not drawn:
            ax.text(0.5, 0.5, "no data yet", ha="center", va="center", transform=ax.transAxes, color="0.4")
        group = _metric_group(metric)
        if x == "epoch":
            ax.set_xlabel("epoch")
        else:
            ax.set_xlabel("mini-batch" if group == "train" else "validation mini-batch")
        ax.set_ylabel(_LABELS.get(metric, metric))
        ax.set_title(metric, fontsize=10)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8, loc="best")
    for ax in axes[len(metrics):]:
        ax.set_visible(False)
    fig.suptitle(_title(names, int(smooth), fraction, w_px), fontsize=11)

    atomic_write_with(out_path, lambda f: fig.savefig(f, format=fmt, dpi=DPI))
    return out_path


# ----------------------------------------------------------------------------- compare


def default_out(runs: Sequence[Run]) -> Path:
    """``compare.png`` in the deepest folder holding all the run directories."""
    parents = [str(run.path.resolve().parent) for run in runs]
    return Path(os.path.commonpath(parents)) / "compare.png"


def _parse_metrics(metrics: str | Iterable[str] | None) -> list[str]:
    if metrics is None:
        return list(DEFAULT_METRICS)
    if isinstance(metrics, str):
        metrics = metrics.split(",")
    out = [m.strip() for m in metrics if m.strip()]
    if not out:
        raise ReidError("no metrics to plot; pass e.g. --metrics train_acc,val_acc")
    return out


def compare(paths: Sequence[str | os.PathLike], out: str | os.PathLike | None = None,
            metrics: str | Sequence[str] | None = None, smooth: int = 1, x: str = "batch",
            range_: str | Sequence[float] | None = None) -> tuple[Path, str]:
    """Load the runs, write the figure to ``out`` and the summary table to ``out`` with ``.md``.

    Returns (figure path, Markdown table). ``out`` defaults to :func:`default_out`;
    ``metrics`` is a list or a comma-separated string (default train/val loss and
    accuracy); ``range_`` is ``"a:b"`` or ``(a, b)`` (fractions, see the module docstring).

    Example::

        png, table = compare(["outputs/standard", "outputs/soft"], range_="0:0.1", smooth=10)
    """
    if not paths:
        raise ReidError("no runs to compare; pass at least one run directory or .mat file")
    runs = [load_run(p) for p in paths]
    metric_list = _parse_metrics(metrics)
    fraction = parse_range(range_)
    out_path = Path(out) if out is not None else default_out(runs)
    if not out_path.suffix:
        out_path = out_path.with_suffix(".png")
    plot_runs(runs, out_path, metrics=metric_list, smooth=smooth, x=x, fraction=fraction)
    table = summary_table(runs)
    md = _markdown_report(runs, out_path, table, metric_list, smooth, x, fraction)
    atomic_write_text(out_path.with_suffix(".md"), md)
    return out_path, table


def _markdown_report(runs: Sequence[Run], out_path: Path, table: str, metrics: Sequence[str],
                     smooth: int, x: str, fraction: tuple[float, float]) -> str:
    names = _unique_names(runs)
    buf = io.StringIO()
    buf.write(f"# Comparison: {' vs '.join(names)}\n\n")
    buf.write(f"![curves]({out_path.name})\n\n")
    buf.write(table)
    buf.write("\nValidation accuracy/loss per epoch = mean over the epoch's val mini-batches weighted "
              "by val_batch_size; final = last complete epoch, best = max accuracy / min loss "
              "(ep N = its epoch). rank-1/mAP = last evaluation in the .mat (eval_*), else results.json.\n\n")
    buf.write(f"Plot: metrics {', '.join(metrics)}; x = {x}; smoothing = {smooth} "
              f"(trailing moving average); range = {fraction[0]:g}:{fraction[1]:g} of the longest run.\n\n")
    buf.write("Runs:\n\n")
    for name, run in zip(names, runs):
        buf.write(f"- {name}: `{run.mat_path}`\n")
    return buf.getvalue()
