"""Shared fixtures: a tiny synthetic Market-1501 and the real one when REID_MARKET_ROOT is set."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory) -> Path:
    """A small synthetic Market-1501 (8 train + 8 test ids, 6 images each, 6 cameras), made once per session."""
    from reid.data.synthetic import generate_synthetic

    return generate_synthetic(tmp_path_factory.mktemp("synthetic") / "market", ids=8, images_per_id=6,
                              cameras=6, distractors=4, junk=3, seed=0)


@pytest.fixture
def market_root() -> Path:
    """The real (or mini) Market-1501 named by REID_MARKET_ROOT; the test is skipped when it is unset."""
    root = os.environ.get("REID_MARKET_ROOT")
    if not root:
        pytest.skip("REID_MARKET_ROOT is not set")
    return Path(root).resolve()


REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def tiny_overrides(tmp_path, synthetic_root) -> list[str]:
    """``--set`` overrides for a seconds-long CPU run on ``synthetic_root`` writing under ``tmp_path``.

    40 train / 8 val images in batches of 6: 7 train mini-batches per epoch, the last one partial.
    """
    return [f"data.root={synthetic_root}", "data.synthetic=null", f"data.cache_dir={tmp_path / 'cache'}",
            "data.size=[32,16]", "data.val_per_id=1", "model.name=resnet18", "model.pretrained=none",
            "train.batch_size=6", "train.epochs=2", "eval.every_epochs=1", f"output.root={tmp_path / 'outputs'}"]
