"""Compare training runs from their ``mini_batch_data.mat`` files (DESIGN.md contract 3).

``compare()`` loads the runs (:mod:`.run_data`), draws one panel per metric with one line per run
(:mod:`.plot`, :mod:`.curves`), writes the Markdown summary table (:mod:`.summary`) beside
the figure, and returns both: ``FILE.png`` + ``FILE.md``.

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
* **Runs of different criteria**: each criterion's loss has its own scale (soft cross entropy adds
  ``mean_c -log p_c``), so when the runs' ``criterion`` differ the default panels are
  ``train_nll``, ``train_acc``, ``val_nll``, ``val_acc`` (the plain cross entropy of the logits,
  recorded for every run), the figure's title and the table's notes say why, and the table leaves
  out the val loss columns (it never ranks runs by a loss that differs between them). Runs of one
  criterion keep the default panels; ``metrics`` given explicitly are drawn as asked. A ``.mat``
  written before the criterion-free keys existed still compares: its runs are drawn with their
  losses, "-" in the criterion-free columns, and a one-line note says so.
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Iterable, Sequence

from ..errors import ReidError
from ..io import atomic_write_text
from .curves import parse_range
from .plot import BANDS, DEFAULT_METRICS, plot_runs, plot_study
from .run_data import Run, load_run, machine_note, metric_group, unique_names
from .over_seeds import Group, study_groups, study_table
from .summary import criteria, has_criterion_free, summary_table

# The default panels of runs of different criteria: the same yardstick for every run.
CRITERION_FREE_METRICS: tuple[str, ...] = ("train_nll", "train_acc", "val_nll", "val_acc")


def default_out(runs: Sequence[Run]) -> Path:
    """``compare_<run>_vs_<run>....png`` (as paired.sh names it; ``study_<config>_vs_...`` for a study over
    seeds, as study.sh does) in the deepest folder holding all the run directories.

    Example::

        default_out([load_run("outputs/standard"), load_run("outputs/soft")])   # outputs/compare_standard_vs_soft.png
    """
    parents = [str(run.path.resolve().parent) for run in runs]
    groups = study_groups(runs)
    names = [g.name for g in groups] if groups else [n.replace("/", "_") for n in unique_names(runs)]
    stem = ("study_" if groups else "compare_") + "_vs_".join(names)
    if len(stem) > 150:  # many runs: keep the file name within file-system limits
        stem = f"{stem[:120]}_and_{len(names)}_runs"
    return Path(os.path.commonpath(parents)) / f"{stem}.png"


def default_metrics(runs: Sequence[Run]) -> list[str]:
    """``CRITERION_FREE_METRICS`` when the runs train with different criteria and all record them, else
    ``DEFAULT_METRICS``; less the val ones no run has (a run with ``data.val_per_id: 0`` logs no val batch)."""
    differ = len(criteria(runs)) > 1 and all(has_criterion_free(run) for run in runs)
    chosen = CRITERION_FREE_METRICS if differ else DEFAULT_METRICS
    return [m for m in chosen if metric_group(m) == "train" or any(run.arrays[m].size for run in runs)]


def comparison_notes(runs: Sequence[Run], metrics: Sequence[str]) -> list[str]:
    """One line each: why runs of different criteria are drawn with the NLL, which runs' .mat predates the
    criterion-free keys, and which runs come from which kind of machine where they come from more than one.

    Example::

        comparison_notes([standard, soft], ["train_nll", "train_acc", "val_nll", "val_acc"])
        # ["The runs train with different criteria (cross_entropy, soft_cross_entropy) ..."]
    """
    notes, names = [], criteria(runs)
    if len(names) > 1 and any(m.endswith("_nll") for m in metrics):
        notes.append(f"The runs train with different criteria ({', '.join(names)}) and each criterion's loss has "
                     "its own scale, so the curves show train_nll/val_nll, the plain cross entropy of the logits, "
                     "measured the same way for every run.")
    old = [name for name, run in zip(unique_names(runs), runs) if not has_criterion_free(run)]
    if old:
        drawn = " (the figure shows each run's own loss)" if len(names) > 1 and not any(
            m.endswith("_nll") for m in metrics) else ""
        notes.append(f"note: {', '.join(old)}: no train_nll/val_nll/val_ece in the .mat (written before they were "
                     f"recorded){drawn}; '-' in the criterion-free columns.")
    machines = machine_note(runs)
    if machines:
        notes.append(machines)
    return notes


def figure_note(runs: Sequence[Run], metrics: Sequence[str]) -> str:
    """The figure's one line on why runs of different criteria show the NLL ("" otherwise)."""
    names = criteria(runs)
    if len(names) > 1 and any(m.endswith("_nll") for m in metrics):
        return f"criteria differ ({', '.join(names)}): each loss has its own scale, so NLL = plain cross entropy"
    return ""


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
            range_: str | Sequence[float] | None = None, band: str = "minmax",
            decisions: Sequence[str] | None = None) -> tuple[Path, str]:
    """Load the runs, write the figure to ``out`` and the summary table to ``out`` with ``.md``.

    Returns (figure path, Markdown table). ``out`` defaults to :func:`default_out`;
    ``metrics`` is a list or a comma-separated string (default train/val loss and
    accuracy); ``range_`` is ``"a:b"`` or ``(a, b)`` (fractions, see the module docstring).
    When the runs form a study over seeds (:func:`reid.analysis.study_groups`), the figure
    shows each config's mean curve with a ``band`` (``"minmax"`` or ``"std"``) and the table
    is :func:`reid.analysis.study_table` (with ``decisions``: the lines of a study that added seeds until
    it could decide, in place of one look at its seeds).

    Example::

        png, table = compare(["outputs/standard", "outputs/soft"], range_="0:0.1", smooth=10)
    """
    if not paths:
        raise ReidError("no runs to compare; pass at least one run directory or .mat file")
    runs = [load_run(p) for p in paths]
    metric_list = _parse_metrics(metrics) if metrics is not None else default_metrics(runs)
    fraction = parse_range(range_)
    out_path = Path(out) if out is not None else default_out(runs)
    if not out_path.suffix:
        out_path = out_path.with_suffix(".png")
    groups = study_groups(runs)
    note = figure_note(runs, metric_list)
    notes = "".join(f"\n{line}\n" for line in comparison_notes(runs, metric_list))
    if groups:
        plot_study(groups, out_path, metrics=metric_list, smooth=smooth, x=x, fraction=fraction, band=band, note=note)
        table = study_table(groups, decisions) + notes
        md = _study_report(groups, out_path, table, metric_list, smooth, x, fraction, band)
    else:
        plot_runs(runs, out_path, metrics=metric_list, smooth=smooth, x=x, fraction=fraction, note=note)
        table = summary_table(runs) + notes
        md = _markdown_report(runs, out_path, table, metric_list, smooth, x, fraction)
    atomic_write_text(out_path.with_suffix(".md"), md)
    return out_path, table


def _markdown_report(runs: Sequence[Run], out_path: Path, table: str, metrics: Sequence[str],
                     smooth: int, x: str, fraction: tuple[float, float]) -> str:
    names = unique_names(runs)
    buf = io.StringIO()
    buf.write(f"# Comparison: {' vs '.join(names)}\n\n")
    buf.write(f"![curves]({out_path.name})\n\n")
    buf.write(table)
    buf.write("\nValidation accuracy/loss/NLL per epoch = mean over the epoch's val mini-batches weighted "
              "by val_batch_size; final = last complete epoch, best = max accuracy / min loss or NLL "
              "(ep N = its epoch). rank-1/mAP = last evaluation in the .mat (eval_*), else results.json. "
              "val NLL = plain cross entropy of the logits whatever the criterion; val ECE (15 equal-width bins "
              "of the top probability), val confidence (mean top probability) and feature ratio (mean "
              "same-identity / different-identity cosine distance of the retrieval features) are those of "
              "the final epoch's whole val split.\n\n")
    buf.write(f"Plot: metrics {', '.join(metrics)}; x = {x}; smoothing = {smooth} "
              f"(trailing moving average); range = {fraction[0]:g}:{fraction[1]:g} of the longest run.\n\n")
    buf.write("Runs:\n\n")
    for name, run in zip(names, runs):
        buf.write(f"- {name}: `{run.mat_path}`\n")
    return buf.getvalue()


def _study_report(groups: Sequence[Group], out_path: Path, table: str, metrics: Sequence[str], smooth: int,
                  x: str, fraction: tuple[float, float], band: str) -> str:
    buf = io.StringIO()
    buf.write(f"# Study over seeds: {' vs '.join(g.name for g in groups)}\n\n")
    buf.write(f"![curves]({out_path.name})\n\n")
    buf.write(table)
    buf.write("\nPer config: mean ± sample standard deviation (n-1) over its seeds, in %. final val acc = "
              "validation accuracy of the last complete epoch (val mini-batches weighted by val_batch_size); "
              "rank-1/mAP = last evaluation in the .mat (eval_*), else results.json.")
    if len(groups) > 1:
        buf.write(" A pair's difference is taken seed by seed: runs of one seed see the same images in the same "
                  "order with the same augmentation, so what the seed does to both configs cancels out of the "
                  "difference.")
    buf.write("\n\n")
    buf.write(f"Plot: metrics {', '.join(metrics)}; line = mean over seeds, band = {BANDS[band]} over seeds; "
              f"x = {x}; smoothing = {smooth} (trailing moving average, per run before averaging); "
              f"range = {fraction[0]:g}:{fraction[1]:g} of the longest run.\n\n")
    buf.write("Runs:\n\n")
    for g in groups:
        for seed, run in g.runs.items():
            buf.write(f"- {g.name}, seed {seed}: `{run.mat_path}`\n")
    return buf.getvalue()
