"""The synthetic Market-1501: layout, names, determinism, reuse, atomicity, CLI, learnability."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import reid.data.synthetic as syn
from reid.data import Market1501, load_image_cache
from reid.errors import DatasetError

TINY = dict(ids=3, images_per_id=3, cameras=4, distractors=2, junk=1)


def test_layout_and_names(synthetic_root):
    ds = Market1501(synthetic_root)
    s = ds.summary()
    assert (s["train"]["images"], s["train"]["ids"]) == (8 * 6, 8)
    assert s["gallery"]["junk"] == 3 and s["gallery"]["distractors"] == 4 and s["gallery"]["ids"] == 8
    assert all(Path(q.path).name.endswith("_00.jpg") for q in ds.query)
    assert all(not Path(g.path).name.endswith("_00.jpg") for g in ds.gallery + ds.train)
    assert {x.camid for x in ds.train + ds.query + ds.gallery} <= set(range(1, 7))
    train_pids, test_pids = {x.pid for x in ds.train}, {x.pid for x in ds.gallery if x.pid > 0}
    assert not train_pids & test_pids and {q.pid for q in ds.query} == test_pids
    for q in ds.query:  # every query has a true match in another camera
        assert any(g.pid == q.pid and g.camid != q.camid for g in ds.gallery)
    with Image.open(ds.train[0].path) as im:
        assert im.format == "JPEG" and im.size == (64, 128) and im.mode == "RGB"


def test_same_seed_same_bytes_other_seed_other_images(tmp_path):
    a = syn.generate_synthetic(tmp_path / "a", seed=5, **TINY)
    b = syn.generate_synthetic(tmp_path / "b", seed=5, **TINY)
    c = syn.generate_synthetic(tmp_path / "c", seed=6, **TINY)

    def files(root):
        return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}

    fa, fb, fc = files(a), files(b), files(c)
    assert fa == fb
    assert fa != fc


def test_ensure_reuses_and_refuses_other_params(tmp_path, monkeypatch):
    out = tmp_path / "syn"
    syn.ensure_synthetic(out, seed=1, **TINY)
    stamp = (out / "synthetic.json").stat().st_mtime_ns
    monkeypatch.setattr(syn, "generate_synthetic", lambda *a, **k: pytest.fail("regenerated"))
    assert syn.ensure_synthetic(out, seed=1, **TINY) == out
    assert (out / "synthetic.json").stat().st_mtime_ns == stamp
    with pytest.raises(DatasetError, match=r"ids=3 \(wanted 4\)"):
        syn.ensure_synthetic(out, seed=1, **{**TINY, "ids": 4})
    (tmp_path / "other").mkdir()
    with pytest.raises(DatasetError, match="synthetic.json"):
        syn.ensure_synthetic(tmp_path / "other", **TINY)


def test_interrupted_generation_leaves_nothing(tmp_path, monkeypatch):
    real = syn._encode_jpeg
    count = [0]

    def failing(pixels):
        count[0] += 1
        if count[0] == 5:
            raise KeyboardInterrupt
        return real(pixels)

    monkeypatch.setattr(syn, "_encode_jpeg", failing)
    with pytest.raises(KeyboardInterrupt):
        syn.generate_synthetic(tmp_path / "syn", **TINY)
    assert os.listdir(tmp_path) == []


def test_bad_parameters(tmp_path):
    with pytest.raises(DatasetError, match="cameras=12"):
        syn.generate_synthetic(tmp_path / "x", cameras=12)
    with pytest.raises(DatasetError, match="images_per_id=1"):
        syn.generate_synthetic(tmp_path / "x", images_per_id=1)


def test_cli(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    ok = subprocess.run([sys.executable, "-m", "reid.data.synthetic", str(tmp_path / "s"), "--ids", "2",
                         "--images-per-id", "2", "--cameras", "3", "--distractors", "1", "--junk", "1",
                         "--seed", "4"], capture_output=True, text=True, env=env)
    assert ok.returncode == 0, ok.stderr
    assert syn.read_params(tmp_path / "s") == dict(ids=2, images_per_id=2, cameras=3, distractors=1, junk=1, seed=4)
    bad = subprocess.run([sys.executable, "-m", "reid.data.synthetic", str(tmp_path / "s"), "--ids", "3"],
                         capture_output=True, text=True, env=env)
    assert bad.returncode == 2
    assert bad.stderr.startswith("error: ") and "Traceback" not in bad.stderr and "ids=2 (wanted 3)" in bad.stderr


def test_identities_are_recognisable_across_cameras(synthetic_root):
    """Learnable: even raw colour histograms retrieve the right person across cameras far above chance."""
    ds = Market1501(synthetic_root)
    gallery = [g for g in ds.gallery if g.pid > 0]

    def features(samples):
        x = load_image_cache([s.path for s in samples], (32, 16), progress=False).float()
        # colours of the upper and lower body (centre columns), divided by the image brightness
        # so that the camera's lighting matters less
        parts = [x[:, :, 8:16, 6:10], x[:, :, 17:26, 6:10]]
        brightness = x.flatten(1).mean(1, keepdim=True) + 1
        return torch.cat([p.flatten(2).mean(2) / brightness for p in parts], 1)

    qf, gf = features(ds.query), features(gallery)
    dist = ((qf[:, None] - gf[None]) ** 2).sum(-1).numpy()
    q_pids = np.array([q.pid for q in ds.query]); q_cams = np.array([q.camid for q in ds.query])
    g_pids = np.array([g.pid for g in gallery]); g_cams = np.array([g.camid for g in gallery])
    hits = []
    for i in range(len(ds.query)):
        keep = ~((g_pids == q_pids[i]) & (g_cams == q_cams[i]))
        hits.append(g_pids[keep][np.argmin(dist[i][keep])] == q_pids[i])
    assert np.mean(hits) > 0.5  # chance is 1/8
