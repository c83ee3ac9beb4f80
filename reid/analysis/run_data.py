"""A run's data: one :class:`Run` per ``mini_batch_data.mat`` (DESIGN.md contract 3), read by :func:`load_run`.

Example::

    from reid.analysis import load_run, available_metrics
    run = load_run("outputs/soft")            # or the .mat file itself
    run.name, run.criterion, run.arrays["train_acc"][:5]
    available_metrics(run)                    # per-mini-batch arrays that can be plotted
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from ..errors import ReidError
from ..machine import machine_kind


MAT_NAME = "mini_batch_data.mat"
# Keys every comparison needs; the other contract-3 keys are optional here.
REQUIRED_KEYS: tuple[str, ...] = (
    "train_loss", "train_acc", "val_loss", "val_acc", "train_epoch", "val_epoch", "val_batch_size",
)


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


def unique_names(runs: Sequence[Run]) -> list[str]:
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


def run_machine(run: Run) -> str | None:
    """The kind of machine that trained ``run`` (:func:`reid.machine.machine_kind` of its results.json's
    record), None where it is not recorded (no evaluation yet, or a run from before runs recorded it)."""
    record = (run.results or {}).get("machine")
    return machine_kind(record) if isinstance(record, dict) else None


def machine_note(runs: Sequence[Run]) -> str | None:
    """One line naming each kind of machine and its runs where ``runs`` come from more than one, else None:
    the same seed and config give other numbers on another CPU model, GPU or library version."""
    kinds: dict[str, list[str]] = {}
    for name, run in zip(unique_names(runs), runs):
        kind = run_machine(run)
        if kind is not None:
            kinds.setdefault(kind, []).append(name)
    if len(kinds) < 2:
        return None
    listing = "; ".join(f"{kind}: {', '.join(names)}" for kind, names in kinds.items())
    return (f"note: these runs were trained on {len(kinds)} kinds of machine, whose numbers differ even at one "
            f"seed; pairs are compared only within one kind ({listing})")


def metric_group(metric: str) -> str:
    """``"val"`` for a val_* key, else ``"train"`` (which rows, epochs and lengths it goes with)."""
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


def check_metric(run: Run, metric: str) -> None:
    """Raise :class:`ReidError` naming the file and the valid choices unless ``metric`` can be plotted."""
    if metric not in run.arrays or metric not in available_metrics(run):
        raise ReidError(f"{run.mat_path or run.path}: no per-mini-batch metric {metric!r}; "
                        f"choose from {', '.join(sorted(available_metrics(run)))}")
