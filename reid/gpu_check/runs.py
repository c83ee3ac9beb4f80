"""Training runs inside a time budget, and what the check reads back from their run directories.

"As many epochs as fit": a run first trains one epoch; its wall time and the epoch's own
time (``log.txt``) give the start-up cost and the cost of one more epoch, and the same run
is then resumed with ``train.epochs`` raised to what fits (``--resume auto`` continues it;
``train.epochs`` may change on resume). With a step or multistep schedule the result is
the run that would have trained that many epochs in one go.

Example::

    epochs = fit_epochs(lambda n: train_pair(n), [runs / "standard", runs / "soft"], budget_s=56, most=120)
"""

from __future__ import annotations

import json
import math
import re
import time
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

EPOCH_LINE = re.compile(r"^epoch (\d+)/\d+ .*\btime ([0-9.]+)s")


def epochs_that_fit(first_call_s: float, first_epoch_s: float, budget_s: float, most: int) -> int:
    """Epochs a run reaches within ``budget_s`` when its first call (one epoch) took ``first_call_s``.

    The first epoch took ``first_epoch_s`` of that call; the rest was start-up, paid again by the
    call that trains the further epochs, each costing ``first_epoch_s`` (an upper bound: the first
    epoch also autotunes and evaluates). At least 1, at most ``most``.

        >>> epochs_that_fit(first_call_s=10, first_epoch_s=4, budget_s=30, most=120)   # 6 s start-up, 14 s left
        4
    """
    if first_epoch_s <= 0:
        return 1
    startup = max(first_call_s - first_epoch_s, 0.0)
    left = budget_s - first_call_s - startup
    return max(1, min(most, 1 + math.floor(left / first_epoch_s)))


def fit_epochs(train_to: Callable[[int], None], run_dirs: Sequence[Path], budget_s: float, most: int) -> int:
    """Call ``train_to(1)``, then ``train_to(n)`` with the ``n`` epochs that fit the budget; returns ``n``.

    ``run_dirs`` are the runs ``train_to`` trains (one, or a pair trained one after the other).
    """
    started = time.perf_counter()
    train_to(1)
    first_call = time.perf_counter() - started
    first_epoch = sum(epoch_seconds(d)[1] for d in run_dirs)
    n = epochs_that_fit(first_call, first_epoch, budget_s, most)
    if n > 1:
        train_to(n)
    return n


def epoch_seconds(run_dir: Path) -> dict[int, float]:
    """``{epoch: seconds}`` from the run's ``log.txt`` epoch lines (train, val and evaluation of that epoch)."""
    out = {}
    for line in (Path(run_dir) / "log.txt").read_text().splitlines():
        m = EPOCH_LINE.match(line)
        if m:
            out[int(m.group(1))] = float(m.group(2))
    if not out:
        raise ValueError(f"{run_dir}/log.txt has no epoch line")
    return out


def epoch_images(run_dir: Path, epoch: int) -> int:
    """Images trained in ``epoch`` (the sum of its mini-batch sizes in ``mini_batch_data.mat``)."""
    from scipy.io import loadmat

    m = loadmat(Path(run_dir) / "mini_batch_data.mat")
    return int(np.asarray(m["train_batch_size"][0])[np.asarray(m["train_epoch"][0]) == epoch].sum())


def final_results(run_dir: Path) -> dict:
    """The run's ``results.json`` (rank-k, mAP, epoch of the evaluation)."""
    return json.loads((Path(run_dir) / "results.json").read_text())


def percent(x: float) -> str:
    return f"{100 * x:.1f}%"
