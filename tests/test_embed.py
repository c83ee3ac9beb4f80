"""Embedding new images: the evaluation's own features, whatever the input kind; bad
files named; run directories that lack what is needed."""

from __future__ import annotations

import contextlib
import io
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from scipy.io import loadmat

import reid
from reid.data import Market1501
from reid.embed import main
from reid.errors import ReidError
from reid.rundir import read_run_config


@pytest.fixture(scope="module")
def query_paths(trained_demo_run) -> list[str]:
    return [s.path for s in Market1501(read_run_config(trained_demo_run).data.root).query]


@pytest.fixture(scope="module")
def cli_query_features(trained_demo_run, query_paths, tmp_path_factory) -> tuple[Path, str]:
    """``python -m reid.embed RUN_DIR QUERY_FOLDER --out q.npy`` once; its file and what it printed."""
    out = tmp_path_factory.mktemp("embed") / "q.npy"
    query_dir = str(Path(query_paths[0]).parent)
    with contextlib.redirect_stdout(io.StringIO()) as printed:
        assert main([str(trained_demo_run), query_dir, "--out", str(out), "--device", "cpu", "--batch-size", "7"]) == 0
    return out, printed.getvalue()


def test_embed_cli_reproduces_the_evaluation_query_features(trained_demo_run, query_paths, cli_query_features,
                                                            tmp_path):
    out, printed = cli_query_features
    assert f"{len(query_paths)} images embedded (512-d, L2-normalised)" in printed
    got = np.load(out)
    want = loadmat(trained_demo_run / "features.mat")["query_f"]
    assert got.dtype == np.float32 and got.shape == want.shape
    np.testing.assert_allclose(got, want, atol=2e-6, rtol=0)
    assert out.with_suffix(".txt").read_text().splitlines() == query_paths  # same order, named

    mat = tmp_path / "q.mat"
    assert main([str(trained_demo_run), *query_paths[:3], "--out", str(mat), "--device", "cpu"]) == 0
    m = loadmat(mat)
    np.testing.assert_allclose(m["features"], want[:3], atol=2e-6, rtol=0)
    assert [str(n[0][0]) for n in m["names"]] == query_paths[:3]


def test_load_model_embed_equals_the_cli_for_paths_pil_and_tensors(trained_demo_run, query_paths, cli_query_features):
    cli = torch.from_numpy(np.load(cli_query_features[0]))[:2]
    model = reid.load_model(trained_demo_run, device="cpu")
    pil = [Image.open(p) for p in query_paths[:2]]
    tensors = [torch.from_numpy(np.array(im.convert("RGB"))).permute(2, 0, 1).contiguous() for im in pil]
    for images in (query_paths[:2], [Path(p) for p in query_paths[:2]], pil, tensors, torch.stack(tensors)):
        torch.testing.assert_close(model.embed(images), cli, atol=2e-6, rtol=0)
    torch.testing.assert_close(model.embed(pil[0]), cli[:1], atol=2e-6, rtol=0)  # one image alone
    # a tensor of another size is resized the way a file of that size is
    big = pil[1].convert("RGB").resize((48, 96))
    torch.testing.assert_close(model.embed(torch.from_numpy(np.array(big)).permute(2, 0, 1)), model.embed(big))
    with pytest.raises(ReidError, match="uint8"):
        model.embed(torch.rand(3, 64, 32))


def test_a_bad_image_is_named_and_skipped_only_when_asked(trained_demo_run, query_paths, tmp_path, capsys):
    folder = tmp_path / "mixed"
    folder.mkdir()
    for p in query_paths[:2]:
        shutil.copy(p, folder)
    bad = folder / "broken.jpg"
    bad.write_text("not an image")
    (folder / "notes.txt").write_text("ignored: not an image name")
    out = tmp_path / "f.npy"
    assert main([str(trained_demo_run), str(folder), "--out", str(out), "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {bad}: cannot decode the image") and err.rstrip().endswith(
        "or pass --skip-bad to leave it out") and "Traceback" not in err
    assert not out.exists()

    assert main([str(trained_demo_run), str(folder), "--out", str(out), "--device", "cpu", "--skip-bad"]) == 0
    assert capsys.readouterr().err.startswith(f"skipped {bad}: cannot decode the image")
    names = (tmp_path / "f.txt").read_text().splitlines()
    assert [Path(n).name for n in names] == sorted(Path(p).name for p in query_paths[:2])
    assert np.load(out).shape == (2, 512)


def test_run_directory_without_checkpoint_or_config_says_what_is_missing(trained_demo_run, tmp_path, capsys):
    no_ckpt = tmp_path / "no_ckpt"
    no_ckpt.mkdir()
    shutil.copy(trained_demo_run / "config.yaml", no_ckpt)
    assert main([str(no_ckpt), str(tmp_path), "--out", str(tmp_path / "f.npy")]) == 2
    assert capsys.readouterr().err.startswith(f"error: {no_ckpt / 'checkpoints' / 'last.pt'}: no checkpoint there, so the "
                                              "run has no model yet; finish training the run first")
    with pytest.raises(ReidError, match="no config.yaml"):
        reid.load_model(tmp_path)
    img = tmp_path / "a.jpg"
    Image.new("RGB", (32, 64)).save(img)
    for args, message in (([str(tmp_path / "missing.jpg")], "no such file or folder"),
                          ([str(img), "--out", str(tmp_path / "f.csv")], "ending in .npy or .mat")):
        argv = [str(trained_demo_run), *args] + ([] if "--out" in args else ["--out", str(tmp_path / "f.npy")])
        assert main(argv) == 2
        assert message in capsys.readouterr().err
