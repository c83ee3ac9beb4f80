"""What the tools that read a finished run need from its directory, with errors that
say what is missing and how to make it.

A run directory (``output.root/output.name``) holds ``config.yaml``,
``checkpoints/last.pt`` and, once evaluated, ``features.mat`` and ``results.json``.

Example::

    >>> cfg = read_run_config("outputs/soft")
    >>> features = run_features_path("outputs/soft")   # outputs/soft/features.mat
"""

from __future__ import annotations

from pathlib import Path

import yaml

from .config import Config, from_dict
from .errors import ReidError


def read_run_config(run_dir: str | Path) -> Config:
    """The resolved config of ``run_dir`` (its ``config.yaml``), validated."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise ReidError(f"{run_dir}: no such run directory; pass a folder written by train.py (outputs/<name>)")
    config_file = run_dir / "config.yaml"
    if not config_file.is_file():
        raise ReidError(f"{run_dir}: no config.yaml, so it is not a run directory of train.py; pass one")
    return from_dict(yaml.safe_load(config_file.read_text()), origin=str(config_file))


def run_checkpoint_path(run_dir: str | Path, checkpoint: str | Path | None = None) -> Path:
    """``checkpoint`` when given, else ``run_dir/checkpoints/last.pt``, which must exist."""
    path = Path(checkpoint) if checkpoint is not None else Path(run_dir) / "checkpoints" / "last.pt"
    if not path.is_file():
        hint = ("pass an existing .pt file to --checkpoint" if checkpoint is not None else
                "train the run first (python train.py --config CONFIG --resume auto) or pass --checkpoint FILE")
        raise ReidError(f"{path}: no checkpoint there; {hint}")
    return path


def run_features_path(run_dir: str | Path) -> Path:
    """``run_dir/features.mat``, which must exist (it is written by every evaluation)."""
    path = Path(run_dir) / "features.mat"
    if not path.is_file():
        raise ReidError(f"{run_dir}: no features.mat; evaluate the run first: python -m reid.evaluate {run_dir}")
    return path
