"""The real data: counts and decodability on REID_MARKET_ROOT; the full-dataset counts on a fake layout."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from reid.data import Market1501, load_image_cache

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def real_cache_dir(tmp_path_factory) -> Path:
    """One decode cache for this module: the images decoded by the decode test are not decoded again for training."""
    return tmp_path_factory.mktemp("real_cache")


def _listdir_counts(folder: Path) -> tuple[int, int]:
    """(images, identities) counted independently: names ending in .jpg, pid = text before the first '_'."""
    names = [n for n in os.listdir(folder) if n.endswith(".jpg")]
    pids = {n.split("_", 1)[0] for n in names}
    return len(names), len(pids - {"-1", "0000"})


def test_real_market_counts(market_root):
    ds = Market1501(market_root)
    for split, samples in (("bounding_box_train", ds.train), ("query", ds.query), ("bounding_box_test", ds.gallery)):
        images, ids = _listdir_counts(ds.root / split)
        assert len(samples) == images
        assert len({s.pid for s in samples if s.pid > 0}) == ids
        assert all(1 <= s.camid <= 6 for s in samples)
    if market_root.name == "market1501-mini":  # the CI subset: its known counts
        assert (len(ds.train), len({s.pid for s in ds.train})) == (4701, 264)
        assert (len(ds.query), len(ds.gallery)) == (994, 3920)


def test_every_real_image_decodes(market_root, real_cache_dir):
    ds = Market1501(market_root)
    for name, samples in (("train", ds.train), ("query", ds.query), ("gallery", ds.gallery)):
        images = load_image_cache([s.path for s in samples], (128, 64), cache_dir=real_cache_dir, desc=name,
                                  progress=False)
        assert images.shape == (len(samples), 3, 128, 64)
        assert int(images.flatten(1).amax(1).min()) > 0  # no all-black (undecoded) image


def test_full_dataset_counts_on_a_fake_layout(full_market_layout):
    """Empty files named like the full release, quirks included: the loader reproduces its published counts."""
    s = Market1501(full_market_layout.parent).summary()
    assert (s["train"]["images"], s["train"]["ids"]) == (12936, 751)
    assert (s["query"]["images"], s["query"]["ids"]) == (3368, 750)
    assert (s["gallery"]["images"], s["gallery"]["junk"], s["gallery"]["distractors"]) == (19732, 3819, 2798)
    assert s["gallery"]["ids"] == 750 and s["train"]["junk"] == s["train"]["distractors"] == 0
    ds = Market1501(full_market_layout)
    assert sum(s.path.endswith(".jpg.jpg") for s in ds.query + ds.gallery) == 24


def test_trains_and_evaluates_on_real_images(market_root, real_cache_dir, tmp_path):
    """One epoch on the real file names and pixels, then the Market-1501 evaluation.

    The model is the small conv net of tests/ddp_equivalence.py, registered through ``imports`` as a user's
    model would be: what is tested here is the real data's path through training and evaluation (the ResNets
    train in tests/test_trainer.py), and a ResNet-18 epoch over the 4.4k images took minutes on the CPU.
    """
    import json

    from scipy.io import loadmat

    from reid.config import load_config
    from reid.engine.run import train

    cfg = load_config(REPO / "configs" / "standard.yaml", [
        f"data.root={market_root}", f"data.cache_dir={real_cache_dir}", f"output.root={tmp_path / 'out'}",
        f"imports=[{REPO / 'tests' / 'ddp_equivalence.py'}]", "model.name=batch_free_net",
        "data.size=[32,16]", "train.epochs=1", "train.batch_size=256", "eval.batch_size=1024"])
    out = train(cfg, device="cpu", progress=False)
    m = loadmat(out / "mini_batch_data.mat")
    ds = Market1501(market_root)
    n_ids = len({s.pid for s in ds.train})
    assert sum(m["train_batch_size"][0]) == len(ds.train) - n_ids  # one image per identity held out
    assert sum(m["val_batch_size"][0]) == n_ids
    results = json.loads((out / "results.json").read_text())
    assert results["num_valid_queries"] == len(ds.query)  # every mini query has a true match elsewhere
    assert 0 <= results["mAP"] <= 1
