"""The summary table: per-epoch validation numbers, final/best, rank-1 and mAP of each run, and the
criterion-free measures (val NLL, ECE, confidence, feature ratio) that compare runs of different criteria.

Example::

    from reid.analysis import load_run, summarize, summary_table
    s = summarize(load_run("outputs/soft"))
    print(summary_table([load_run("outputs/standard"), load_run("outputs/soft")]))
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

import yaml

from ..engine.history import per_epoch_weighted
from ..evaluation.report import SETTING_KEYS, results_settings, settings_label
from .run_data import Run, unique_names


def eval_settings_of(run: Run) -> dict:
    """The evaluation settings behind ``run``'s rank-1/mAP: those recorded in its results.json, else its
    config's ``eval`` section (the settings training evaluated with); {} when neither says."""
    if run.results and run.results.get("settings"):
        return results_settings(run.results)
    try:
        config = yaml.safe_load(run.config_text) if run.config_text else None
    except yaml.YAMLError:
        config = None
    ev = config.get("eval") if isinstance(config, dict) else None
    if not isinstance(ev, dict):
        return results_settings(run.results) if run.results else {}
    from ..config import EvalConfig

    defaults = EvalConfig()
    return {key: ev.get(key, getattr(defaults, key)) for key in SETTING_KEYS}


def eval_label(runs: Sequence[Run]) -> str:
    """:func:`settings_label` of the runs' settings; different ones joined by `` / ``."""
    labels = []
    for run in runs:
        label = settings_label(eval_settings_of(run))
        if label not in labels:
            labels.append(label)
    return " / ".join(labels)


def summarize(run: Run) -> dict:
    """Numbers of the summary table for one run (fractions, not %; None when unknown).

    Keys: name, path, criterion, epochs (max train_epoch), train_batches, val_batches,
    val_epochs, val_acc_per_epoch, val_loss_per_epoch, val_acc_final, val_acc_best,
    val_acc_best_epoch, val_loss_final, val_loss_best, val_loss_best_epoch,
    val_partial_epoch (epoch left out as incomplete, or None), rank1, mAP, eval_epoch,
    eval_source ("mat", "results.json" or None); the criterion-free ones: val_nll_per_epoch,
    val_nll_final, val_nll_best, val_nll_best_epoch (the plain cross entropy ``val_nll`` per epoch,
    weighted as the loss), val_ece_final, val_confidence_final, val_feature_ratio_final (the
    ``val_summary_epoch`` entry of the final epoch); None where the .mat predates these keys.

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
    out.update(criterion_free(run, eps))
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


def has_criterion_free(run: Run) -> bool:
    """Whether ``run``'s .mat records the criterion-free measures (a .mat written before them has none)."""
    a = run.arrays
    return all(k in a for k in CRITERION_FREE_KEYS) and a["val_nll"].size == a["val_loss"].size \
        and a["train_nll"].size == a["train_loss"].size


CRITERION_FREE_KEYS = ("train_nll", "val_nll", "val_summary_epoch", "val_ece", "val_confidence", "val_feature_ratio")


def criterion_free(run: Run, epochs: Sequence[int]) -> dict:
    """The val NLL per complete epoch ``epochs`` (final, best and its epoch) and the ECE, confidence and
    feature ratio of the last of them; None for each where the .mat lacks it."""
    out: dict = dict.fromkeys(("val_nll_per_epoch", "val_nll_final", "val_nll_best", "val_nll_best_epoch",
                               "val_ece_final", "val_confidence_final", "val_feature_ratio_final"))
    if not has_criterion_free(run) or not epochs:
        return out
    a = run.arrays
    nll_epochs, nlls, _ = per_epoch_weighted(a["val_nll"], a["val_batch_size"], a["val_epoch"])
    by_epoch = dict(zip(nll_epochs, nlls))
    nlls = [by_epoch[e] for e in epochs]
    best = int(np.nanargmin(nlls)) if np.isfinite(nlls).any() else len(nlls) - 1
    out.update(val_nll_per_epoch=nlls, val_nll_final=nlls[-1], val_nll_best=nlls[best],
               val_nll_best_epoch=epochs[best])
    final = np.flatnonzero(a["val_summary_epoch"] == epochs[-1])
    if final.size:
        i = int(final[-1])
        out.update(val_ece_final=float(a["val_ece"][i]), val_confidence_final=float(a["val_confidence"][i]),
                   val_feature_ratio_final=float(a["val_feature_ratio"][i]))
    return out


def criteria(runs: Sequence[Run]) -> list[str]:
    """The runs' criteria, each once, in order of first appearance."""
    return list(dict.fromkeys(run.criterion for run in runs))


def _last(v: np.ndarray | None) -> float | None:
    return float(v[-1]) if v is not None and v.size else None


def _as_float(v) -> float | None:
    try:
        return None if v is None else float(v)
    except (TypeError, ValueError):
        return None


def as_percent(v: float) -> float:
    """A fraction as %; a value above 1 is taken as already in %."""
    return v if v > 1.0 else 100.0 * v


def _pct(v: float | None) -> str:
    if v is None or not math.isfinite(v):
        return "-"
    return f"{as_percent(v):.2f}%"


def _num(v: float | None) -> str:
    return "-" if v is None or not math.isfinite(v) else f"{v:.4f}"


def _cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def summary_table(runs: Sequence[Run]) -> str:
    """Markdown table, one row per run (accuracies in %, "(ep N)" = epoch of the best value).

    The criterion-free columns (final and best val NLL, ECE, confidence, feature ratio of the final
    epoch) compare any runs; the val loss columns only appear when every run has the same criterion,
    since each criterion's loss has its own scale and ranking runs by it says nothing.

    Example::

        print(summary_table([load_run("outputs/standard"), load_run("outputs/soft")]))
    """
    same_loss = len(criteria(runs)) == 1
    header = ["run", "criterion", "epochs", "final val acc", "best val acc",
              *(["final val loss", "best val loss"] if same_loss else []), "rank-1", "mAP",
              "final val NLL", "best val NLL", "val ECE", "val confidence", "feature ratio", "evaluated with"]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] * 2 + ["---:"] * (len(header) - 3) + ["---"]) + "|"]
    for name, run in zip(unique_names(runs), runs):
        s = summarize(run)
        epochs = str(s["epochs"])
        if s["val_partial_epoch"] is not None:
            epochs += " (val of last incomplete)"
        best_acc = _pct(s["val_acc_best"]) + (f" (ep {s['val_acc_best_epoch']})" if s["val_acc_best"] is not None else "")
        best_loss = _num(s["val_loss_best"]) + (f" (ep {s['val_loss_best_epoch']})" if s["val_loss_best"] is not None else "")
        rank1 = _pct(s["rank1"])
        if s["rank1"] is not None and s["eval_epoch"] is not None:
            rank1 += f" (ep {s['eval_epoch']})"
        evaluated = eval_label([run]) if s["rank1"] is not None or s["mAP"] is not None else "-"
        best_nll = _num(s["val_nll_best"]) + (f" (ep {s['val_nll_best_epoch']})" if s["val_nll_best"] is not None else "")
        row = [name, s["criterion"], epochs, _pct(s["val_acc_final"]), best_acc,
               *([_num(s["val_loss_final"]), best_loss] if same_loss else []), rank1, _pct(s["mAP"]),
               _num(s["val_nll_final"]), best_nll, _pct(s["val_ece_final"]), _pct(s["val_confidence_final"]),
               _num(s["val_feature_ratio_final"]), evaluated]
        lines.append("| " + " | ".join(_cell(c) for c in row) + " |")
    return "\n".join(lines) + "\n"
