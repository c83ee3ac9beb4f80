"""reid: person re-identification training on Market-1501.

The library behind ``train.py``: datasets, models and criteria come from
registries, the trainer only wires them together. Nothing here reads sys.argv.

Example::

    >>> import reid
    >>> feats = reid.load_model("outputs/soft").embed(["a.jpg", "b.jpg"])   # (2, D), L2-normalised
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .embed import Embedder

__version__ = "0.1.0"


def load_model(run_dir: str | os.PathLike, checkpoint: str | os.PathLike | None = None,
               device: str = "auto") -> "Embedder":
    """A trained run's model whose ``.embed(images)`` gives the evaluation's features (see reid.embed)."""
    from .embed import load_model as load  # torch is imported on first use, not by ``import reid``

    return load(run_dir, checkpoint, device)
