"""Runs that start at the same moment (a SLURM array, a study with --jobs) and generate the same synthetic
dataset or decode into the same image cache: each ends with a complete, identical copy, and none fails.
(tests/test_slurm.py shows it with four real processes; here, many starters released by one barrier.)"""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import torch

from reid.data import load_image_cache
from reid.data.cache import cache_path, decode_images
from reid.data.synthetic import ensure_synthetic

STARTERS = 6
PARAMS = dict(ids=8, images_per_id=6, cameras=6, distractors=4, junk=3, seed=0)  # conftest's synthetic_root


def all_at_once(work) -> list:
    """``work()`` in STARTERS threads released together; their results (an exception counts as one)."""
    barrier, results = threading.Barrier(STARTERS), [None] * STARTERS

    def run(i: int) -> None:
        barrier.wait()
        try:
            results[i] = work()
        except BaseException as e:  # noqa: BLE001 - reported by the test
            results[i] = e

    threads = [threading.Thread(target=run, args=(i,)) for i in range(STARTERS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


def tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_generating_the_same_synthetic_dataset_at_once(tmp_path, synthetic_root):
    out = tmp_path / "data" / "market"
    results = all_at_once(lambda: ensure_synthetic(out, **PARAMS))
    assert results == [out] * STARTERS, [r for r in results if not isinstance(r, Path)]
    assert tree(out) == tree(synthetic_root)  # complete, and byte for byte the dataset made alone
    assert [p.name for p in out.parent.iterdir()] == ["market"]  # no temporary folder left behind


def test_decoding_into_the_same_cache_at_once(tmp_path, synthetic_root):
    paths = sorted(str(p) for p in (synthetic_root / "bounding_box_train").glob("*.jpg"))
    cache = tmp_path / "cache"
    results = all_at_once(lambda: load_image_cache(paths, (32, 16), cache_dir=cache, desc="train", progress=False))
    expected = decode_images(paths, (32, 16), progress=False)
    for r in results:
        assert isinstance(r, torch.Tensor) and torch.equal(r, expected), r
    file = cache_path(cache, paths, (32, 16), "train")
    assert [p.name for p in cache.iterdir()] == [file.name]  # one complete file, no temporary one
    assert np.array_equal(np.load(file), expected.numpy())
