"""A TensorBoard view of a run (``train.tensorboard: true``): the ``.mat``'s rows as scalars under
``<run dir>/tensorboard``, written whenever the ``.mat`` is (each epoch, each checkpoint, at a stop).

Each tag is a key of ``mini_batch_data.mat``: ``train_loss``, ``train_acc``, ``train_nll``,
``train_lr``, ``val_loss``, ``val_acc``, ``val_nll`` at step = the mini-batch's number in its row
(1..N); ``val_ece``, ``val_confidence``, ``val_feature_ratio`` at step = the epoch of the val phase
(``val_summary_epoch``); ``eval_rank1``, ``eval_rank5``, ``eval_rank10``, ``eval_mAP`` (and
``eval_*_<dataset>`` of cross-domain evaluations) at step = the evaluated epoch. Every start of a run writes the history of its
checkpoint again after TensorBoard's purge marker (``purge_step=0``), which hides what earlier
lives wrote, the steps a killed life trained past its last checkpoint included: the view is
always that of the ``.mat``.

Example::

    board = BoardMirror(run_dir / "tensorboard")
    board.write(history)           # what is new since the last call
    # tensorboard --logdir outputs
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from ..errors import ConfigError
from .history import VAL_SUMMARY_KEYS, History

FOLDER = "tensorboard"
SUMMARY_COLUMNS = tuple(f"val_{key}" for key in VAL_SUMMARY_KEYS)  # one entry per val phase


def check_tensorboard_installed() -> None:
    """``train.tensorboard: true`` needs the ``tensorboard`` package: a ConfigError saying how to get it."""
    if importlib.util.find_spec("tensorboard") is None:
        raise ConfigError("train.tensorboard is true, but the tensorboard package is not installed; install it "
                          "(pip install tensorboard, or the project's [tensorboard] extra) or set "
                          "train.tensorboard: false")


class BoardMirror:
    """Writes a :class:`History`'s new entries as TensorBoard scalars (see the module docstring)."""

    def __init__(self, folder: Path) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(str(folder), purge_step=0)  # hide what earlier lives of the run wrote
        self.written: dict[str, int] = {}

    def write(self, history: History) -> None:
        """Add the entries of ``history`` not written yet, then flush them to disk."""
        columns = history.columns
        for key, values in columns.items():
            if key.endswith(("_epoch", "_batch_size")) or key.startswith("eval_epoch"):
                continue  # the steps, not values
            if key.startswith("eval_"):
                suffix = key[len("eval_"):].partition("_")[2]  # the cross-domain dataset's name, or ""
                steps = columns["eval_epoch" + (f"_{suffix}" if suffix else "")]
            elif key in SUMMARY_COLUMNS:
                steps = columns["val_summary_epoch"]
            else:
                steps = range(1, len(values) + 1)
            for i in range(self.written.get(key, 0), len(values)):
                self.writer.add_scalar(key, values[i], global_step=int(steps[i]))
            self.written[key] = len(values)
        self.writer.flush()
