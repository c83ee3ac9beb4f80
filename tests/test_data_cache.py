"""The decoded-image cache: pixels, colour modes, resizing, on-disk reuse, errors."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from PIL import Image

import reid.data.cache as cache_mod
from reid.data import load_image_cache
from reid.errors import DatasetError


def _save(path, array, fmt="PNG"):
    Image.fromarray(array).save(path, format=fmt)
    return str(path)


@pytest.fixture
def images(tmp_path):
    rng = np.random.default_rng(0)
    arrays = [rng.integers(0, 256, (16, 8, 3), dtype=np.uint8) for _ in range(5)]
    paths = [_save(tmp_path / f"{i:04d}_c1s1_000001_01.png", a) for i, a in enumerate(arrays)]
    return paths, arrays


def test_pixels_match_an_independent_decode(images):
    paths, arrays = images
    x = load_image_cache(paths, (16, 8), progress=False)
    assert x.dtype == torch.uint8 and x.shape == (5, 3, 16, 8)
    for i, a in enumerate(arrays):
        assert torch.equal(x[i], torch.from_numpy(a).permute(2, 0, 1))


def test_jpeg_pixels_match_pil(synthetic_root):
    path = sorted((synthetic_root / "query").iterdir())[0]
    x = load_image_cache([path], (128, 64), progress=True)
    assert torch.equal(x[0], torch.from_numpy(np.array(Image.open(path).convert("RGB"))).permute(2, 0, 1))


def test_colour_modes_become_rgb_and_sizes_are_resized(tmp_path):
    gray = tmp_path / "g.png"
    Image.new("L", (8, 16), 77).save(gray)
    rgba = tmp_path / "a.png"
    Image.new("RGBA", (8, 16), (10, 20, 30, 128)).save(rgba)
    pal = tmp_path / "p.png"
    Image.new("RGB", (8, 16), (200, 100, 50)).convert("P", palette=Image.Palette.ADAPTIVE).save(pal)
    big = tmp_path / "b.jpg"
    Image.new("RGB", (40, 80), (0, 0, 255)).save(big, quality=100)
    x = load_image_cache([gray, rgba, pal, big], (16, 8), progress=False)
    assert x.shape == (4, 3, 16, 8)
    assert (x[0] == 77).all()
    assert torch.equal(x[1], torch.tensor([10, 20, 30], dtype=torch.uint8).view(3, 1, 1).expand(3, 16, 8))
    assert torch.equal(x[2], torch.tensor([200, 100, 50], dtype=torch.uint8).view(3, 1, 1).expand(3, 16, 8))
    blue = x[3].int()
    assert (blue[2] >= 250).all() and (blue[:2] <= 5).all()


def test_second_load_decodes_nothing(images, tmp_path, monkeypatch):
    paths, _ = images
    calls = []
    real = cache_mod.decode_image
    monkeypatch.setattr(cache_mod, "decode_image", lambda p, size: calls.append(p) or real(p, size))
    cdir = tmp_path / "cache"
    first = load_image_cache(paths, (16, 8), cache_dir=cdir, desc="train", progress=False)
    assert len(calls) == 5
    files = list(cdir.iterdir())
    assert len(files) == 1 and files[0].suffix == ".npy" and files[0].name.startswith("train_")
    second = load_image_cache(paths, (16, 8), cache_dir=cdir, desc="train", progress=False)
    assert len(calls) == 5 and torch.equal(first, second)
    # another size is another cache entry
    load_image_cache(paths, (8, 4), cache_dir=cdir, progress=False)
    assert len(calls) == 10 and len(list(cdir.iterdir())) == 2


def test_changed_file_invalidates_the_cache(images, tmp_path, monkeypatch):
    paths, _ = images
    cdir = tmp_path / "cache"
    load_image_cache(paths, (16, 8), cache_dir=cdir, progress=False)
    _save(paths[2], np.zeros((16, 8, 3), np.uint8))
    st = os.stat(paths[2])
    os.utime(paths[2], ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    calls = []
    real = cache_mod.decode_image
    monkeypatch.setattr(cache_mod, "decode_image", lambda p, size: calls.append(p) or real(p, size))
    x = load_image_cache(paths, (16, 8), cache_dir=cdir, progress=False)
    assert len(calls) == 5 and (x[2] == 0).all()


def test_undecodable_image_is_named_and_nothing_is_cached(images, tmp_path):
    paths, _ = images
    bad = tmp_path / "0009_c2s1_000001_01.jpg"
    bad.write_bytes(b"not a jpeg at all")
    cdir = tmp_path / "cache"
    with pytest.raises(DatasetError, match=r"0009_c2s1_000001_01\.jpg: cannot decode") as e:
        load_image_cache(paths + [str(bad)], (16, 8), cache_dir=cdir, progress=False)
    assert "\n" not in str(e.value)
    assert not cdir.exists() or not any(cdir.iterdir())


def test_truncated_jpeg_is_an_error(synthetic_root, tmp_path):
    data = sorted((synthetic_root / "query").iterdir())[0].read_bytes()
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(DatasetError, match="cut.jpg"):
        load_image_cache([cut], (128, 64), progress=False)


def test_missing_file_is_named(tmp_path):
    with pytest.raises(DatasetError, match="gone.jpg"):
        load_image_cache([tmp_path / "gone.jpg"], (16, 8), cache_dir=tmp_path / "c", progress=False)


def test_empty_list():
    assert load_image_cache([], (16, 8), progress=False).shape == (0, 3, 16, 8)


def test_a_damaged_cache_file_is_never_trusted(images, tmp_path, monkeypatch):
    """An interrupted or damaged cache entry is decoded again and replaced, never used."""
    paths, arrays = images
    cdir = tmp_path / "cache"
    good = load_image_cache(paths, (16, 8), cache_dir=cdir, desc="train", progress=False)
    (entry,) = list(cdir.iterdir())
    # a half-written temporary file left by a killed build is not a cache entry
    (cdir / f".{entry.name}.123.tmp").write_bytes(entry.read_bytes()[:100])
    for damage in (entry.read_bytes()[:200], b"not a numpy file"):
        entry.write_bytes(damage)
        calls = []
        real = cache_mod.decode_image
        monkeypatch.setattr(cache_mod, "decode_image", lambda p, size: calls.append(p) or real(p, size))
        again = load_image_cache(paths, (16, 8), cache_dir=cdir, desc="train", progress=False)
        assert len(calls) == 5 and torch.equal(again, good)
        assert torch.equal(torch.from_numpy(np.load(entry)), good)  # replaced by a complete copy
        monkeypatch.undo()
