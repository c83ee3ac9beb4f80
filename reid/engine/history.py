"""The per-mini-batch record of a run, saved as ``mini_batch_data.mat``.

Keys and shapes are a contract (DESIGN.md): ``train_loss``, ``train_acc``, ``train_nll``,
``val_loss``, ``val_acc``, ``val_nll`` and their ``*_epoch``, ``*_batch_size`` (and ``train_lr``)
are 1xN float64 rows, one entry per mini-batch in order; ``val_summary_epoch``, ``val_ece``,
``val_confidence``, ``val_feature_ratio`` one entry per epoch with a val phase (measured over
the whole val split, see reid/evaluation/calibration.py); ``eval_*`` one entry per
evaluation, and for each cross-domain dataset (``eval.datasets``) the same five keys
suffixed by its name (``eval_epoch_dukemtmc``, ``eval_mAP_dukemtmc``, ...), one entry per
evaluation on it; ``criterion`` and ``config`` are strings.

Example::

    h = History(criterion="soft_cross_entropy", config_text=to_yaml(cfg))
    h.extend("train", epoch=1, loss=[2.3, 2.1], acc=[0.0, 0.25], nll=[2.3, 2.1], batch_size=[32, 32], lr=[0.05, 0.05])
    h.save_mat(run_dir / "mini_batch_data.mat")
    loadmat(run_dir / "mini_batch_data.mat")["train_acc"][0]   # array([0.  , 0.25])
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from ..io import atomic_savemat

# The per-image quantities recorded at each step (reid/engine/records.py: step_sums), one row each per
# phase: the criterion's loss, the accuracy and the plain cross entropy of the logits (criterion-free).
RECORDED: tuple[str, ...] = ("loss", "acc", "nll")
PHASE_KEYS = {
    "train": (*RECORDED, "epoch", "lr", "batch_size"),
    "val": (*RECORDED, "epoch", "batch_size"),
}
# Per epoch with a val phase, over the whole val split (``val_summary_epoch`` names the epoch).
VAL_SUMMARY_KEYS = ("ece", "confidence", "feature_ratio")
EVAL_KEYS = ("epoch", "rank1", "rank5", "rank10", "mAP")


def per_epoch_weighted(values: np.ndarray, weights: np.ndarray,
                       epochs: np.ndarray) -> tuple[list[int], list[float], list[float]]:
    """(epochs, means weighted by ``weights``, weight totals), one entry per epoch present.

    A mini-batch's loss and accuracy are means over its own images, so an epoch's value is
    their mean weighted by the batch sizes (= the value over all of the epoch's images).
    """
    out_epochs, means, totals = [], [], []
    for epoch in np.unique(epochs):
        w = weights[epochs == epoch]
        total = float(w.sum())
        if total > 0:
            out_epochs.append(int(epoch))
            means.append(float(np.sum(values[epochs == epoch] * w) / total))
            totals.append(total)
    return out_epochs, means, totals


class History:
    """Lists of per-mini-batch values, kept on the host; picklable as a plain dict."""

    def __init__(self, criterion: str = "", config_text: str = "") -> None:
        self.criterion = criterion
        self.config_text = config_text
        self.columns: dict[str, list[float]] = {
            f"{phase}_{key}": [] for phase, keys in PHASE_KEYS.items() for key in keys
        }
        self.columns["val_summary_epoch"] = []
        self.columns.update({f"val_{key}": [] for key in VAL_SUMMARY_KEYS})
        self.columns.update({f"eval_{key}": [] for key in EVAL_KEYS})

    def extend(self, phase: str, epoch: int, **values: Sequence[float]) -> None:
        """Append one phase's mini-batches (each of ``RECORDED``, ``batch_size`` and, for train, ``lr``)."""
        n = len(values["loss"])
        for key in PHASE_KEYS[phase]:
            column = [epoch] * n if key == "epoch" else list(map(float, values[key]))
            if len(column) != n:
                raise ValueError(f"{phase}_{key}: {len(column)} values for {n} mini-batches")
            self.columns[f"{phase}_{key}"].extend(column)

    def add_val_summary(self, epoch: int, summary: dict[str, float]) -> None:
        """Append one epoch's whole-split val measures: ``summary`` holds each of ``VAL_SUMMARY_KEYS``."""
        self.columns["val_summary_epoch"].append(epoch)
        for key in VAL_SUMMARY_KEYS:
            self.columns[f"val_{key}"].append(float(summary[key]))

    def add_evaluation(self, epoch: int, results: dict) -> None:
        """Append one evaluation: ``eval_epoch``, ``eval_rank1``, ... from ``results`` and, for each
        cross-domain dataset in ``results["datasets"]``, its own set ``eval_epoch_<name>``, ..."""
        for suffix, values in self._sets(results):
            for key in EVAL_KEYS:
                self.columns.setdefault(f"eval_{key}{suffix}", []).append(epoch if key == "epoch" else float(values[key]))

    def replace_evaluation(self, epoch: int, results: dict) -> None:
        """:meth:`add_evaluation` after dropping each of its sets' entry of the same epoch (a re-evaluation)."""
        for suffix, _ in self._sets(results):
            keep = [i for i, e in enumerate(self.columns.get(f"eval_epoch{suffix}", [])) if e != epoch]
            for key in EVAL_KEYS:
                column = self.columns.get(f"eval_{key}{suffix}")
                if column is not None:
                    self.columns[f"eval_{key}{suffix}"] = [column[i] for i in keep]
        self.add_evaluation(epoch, results)

    @staticmethod
    def _sets(results: dict) -> list[tuple[str, dict]]:
        """(column suffix, results) of the evaluation and of each cross-domain dataset in it."""
        return [("", results)] + [(f"_{name}", r) for name, r in results.get("datasets", {}).items()]

    def evaluated_datasets(self) -> list[str]:
        """The cross-domain datasets with evaluations, in the order they were first added."""
        return [key[len("eval_epoch_"):] for key in self.columns if key.startswith("eval_epoch_")]

    def epoch_mean(self, phase: str, key: str, epoch: int) -> float:
        """The mean of ``phase_key`` over ``epoch``'s mini-batches, weighted by their sizes (nan if none)."""
        c = self.columns
        epochs, means, _ = per_epoch_weighted(np.asarray(c[f"{phase}_{key}"]), np.asarray(c[f"{phase}_batch_size"]),
                                              np.asarray(c[f"{phase}_epoch"]))
        return dict(zip(epochs, means)).get(epoch, float("nan"))

    def num_batches(self, phase: str) -> int:
        return len(self.columns[f"{phase}_loss"])

    def to_mat(self) -> dict[str, object]:
        arrays: dict[str, object] = {
            key: np.asarray(values, dtype=np.float64).reshape(1, -1) for key, values in self.columns.items()
        }
        arrays["criterion"] = self.criterion
        arrays["config"] = self.config_text
        return arrays

    def save_mat(self, path: str | Path) -> None:
        atomic_savemat(path, self.to_mat())

    def state_dict(self) -> dict:
        return {"criterion": self.criterion, "config_text": self.config_text,
                "columns": {k: list(v) for k, v in self.columns.items()}}

    @classmethod
    def from_state_dict(cls, state: dict) -> "History":
        history = cls(state["criterion"], state["config_text"])
        for key, values in state["columns"].items():
            history.columns[key] = list(values)
        history.pad_missing_records()
        return history

    def pad_missing_records(self) -> None:
        """A history saved before a record existed (a checkpoint of an older version) has none of its
        rows: nan for those mini-batches keeps every row of a phase one entry per mini-batch."""
        for phase, keys in PHASE_KEYS.items():
            n = len(self.columns[f"{phase}_epoch"])
            for key in keys:
                column = self.columns[f"{phase}_{key}"]
                if not column and n:
                    column.extend([float("nan")] * n)
