"""The synthetic Market-1501: layout, names, determinism, reuse, atomicity, CLI, learnability."""

from __future__ import annotations

import json
import os
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


def test_cli(tmp_path, capsys):
    """``python -m reid.data.synthetic``'s main, in process: a user mistake returns 2 with one error line
    (an exception escaping main, the traceback a user would see, fails the test)."""
    assert syn.main([str(tmp_path / "s"), "--ids", "2", "--images-per-id", "2", "--cameras", "3",
                     "--distractors", "1", "--junk", "1", "--seed", "4"]) == 0
    assert syn.read_params(tmp_path / "s") == dict(ids=2, images_per_id=2, cameras=3, distractors=1, junk=1, seed=4,
                                                   layout="market1501")
    capsys.readouterr()
    assert syn.main([str(tmp_path / "s"), "--ids", "3"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "ids=2 (wanted 3)" in err


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


# ----------------------------------------------------------------------------- other layouts

@pytest.mark.parametrize("layout, cameras", [("dukemtmc", 8), ("msmt17", 15), ("cuhk03", 2)])
def test_each_layout_is_read_by_its_loader(tmp_path, layout, cameras):
    """The generator writes each release's names (and list files); its loader reads the planned counts."""
    from reid.data import DATASETS

    root = syn.generate_synthetic(tmp_path / layout, ids=4, images_per_id=5, distractors=3, seed=2, layout=layout)
    ds = DATASETS.get(layout)(root)
    s = ds.summary()
    assert (s["train"]["images"], s["train"]["ids"]) == (4 * 5, 4)
    assert s["query"]["ids"] == 4 and s["gallery"]["images"] == 4 * 5 + 3
    assert s["gallery"]["ids"] == 4 + 3  # distractors: gallery identities seen once, no pid 0 or -1
    assert all(v["junk"] == v["distractors"] == 0 for v in s.values())
    assert {x.camid for x in ds.train + ds.query + ds.gallery} <= set(range(1, cameras + 1))
    train_pids, test_pids = {x.pid for x in ds.train}, {x.pid for x in ds.query}
    assert test_pids <= {x.pid for x in ds.gallery}
    assert not train_pids & test_pids or layout == "msmt17"  # MSMT17 numbers train and test identities apart
    for q in ds.query:  # every query has a true match in another camera
        assert any(g.pid == q.pid and g.camid != q.camid for g in ds.gallery)
    with Image.open(ds.train[0].path) as im:
        assert im.format == ("PNG" if layout == "cuhk03" else "JPEG") and im.size == (64, 128)
    images = {str(p) for p in root.rglob("*") if p.suffix in (".jpg", ".png")}
    listed = {x.path for x in ds.train + ds.query + ds.gallery}
    if layout == "cuhk03":  # the same people under detected/ and labeled/
        labeled = DATASETS.get(layout)(root, boxes="labeled")
        assert [Path(x.path).name for x in labeled.gallery] == [Path(x.path).name for x in ds.gallery]
        listed |= {x.path for x in labeled.train + labeled.query + labeled.gallery}
    assert listed == images  # every image written is read (MSMT17: through its list files), none is missing
    assert syn.read_params(root)["layout"] == layout


def test_msmt17_layout_lists_train_val_query_gallery(tmp_path):
    root = syn.generate_synthetic(tmp_path / "m", ids=3, images_per_id=4, distractors=1, layout="msmt17")
    lines = {n: (root / n).read_text().splitlines() for n in ("list_train.txt", "list_val.txt", "list_query.txt",
                                                                "list_gallery.txt")}
    assert len(lines["list_val.txt"]) == 3 and len(lines["list_train.txt"]) == 3 * 3  # last image of each id
    assert {ln.split()[1] for ln in lines["list_train.txt"]} == {"0", "1", "2"}    # labels from 0 in train ...
    assert {ln.split()[1] for ln in lines["list_gallery.txt"]} == {"0", "1", "2", "3"}  # ... and again in test
    assert all((root / ("train" if n in ("list_train.txt", "list_val.txt") else "test") / ln.split()[0]).is_file()
               for n, ls in lines.items() for ln in ls)


def test_layout_parameter_errors(tmp_path):
    with pytest.raises(DatasetError, match=r"cameras=3: the cuhk03 layout takes 2 cameras"):
        syn.generate_synthetic(tmp_path / "x", cameras=3, layout="cuhk03")
    with pytest.raises(DatasetError, match=r"cameras=9: the dukemtmc layout takes 2\.\.8 cameras"):
        syn.generate_synthetic(tmp_path / "x", cameras=9, layout="dukemtmc")
    with pytest.raises(DatasetError, match=r"junk=2: the msmt17 layout has no junk boxes"):
        syn.generate_synthetic(tmp_path / "x", junk=2, layout="msmt17")
    with pytest.raises(DatasetError, match=r"layout='viper'.*dukemtmc"):
        syn.generate_synthetic(tmp_path / "x", layout="viper")
    assert not (tmp_path / "x").exists()


def test_a_dataset_made_before_layouts_is_a_market1501_one(tmp_path, monkeypatch):
    out = syn.generate_synthetic(tmp_path / "old", seed=1, **TINY)
    meta = json.loads((out / "synthetic.json").read_text())
    del meta["layout"]
    (out / "synthetic.json").write_text(json.dumps(meta))
    monkeypatch.setattr(syn, "generate_synthetic", lambda *a, **k: pytest.fail("regenerated"))
    assert syn.ensure_synthetic(out, seed=1, layout="market1501", **TINY) == out
    with pytest.raises(DatasetError, match=r"layout=market1501 \(wanted dukemtmc\)"):
        syn.ensure_synthetic(out, seed=1, **{**TINY, "junk": 0, "layout": "dukemtmc", "cameras": 4})


def test_config_entry_generates_its_dataset_in_the_layout_of_its_name(tmp_path):
    from reid.config import DatasetConfig
    from reid.engine.builder import build_dataset
    from reid.errors import ConfigError

    entry = DatasetConfig(name="dukemtmc", root=str(tmp_path / "duke"), synthetic=dict(ids=3, images_per_id=3))
    ds = build_dataset(entry)
    assert type(ds).__name__ == "DukeMTMC" and len(ds.train) == 9
    bad = DatasetConfig(name="dukemtmc", root=str(tmp_path / "d2"), synthetic=dict(ids=3, layout="msmt17"))
    with pytest.raises(ConfigError, match="layout = 'msmt17', but the dataset is dukemtmc"):
        build_dataset(bad)
