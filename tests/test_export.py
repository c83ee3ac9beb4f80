"""ONNX export: onnxruntime gives the evaluation's features (within 1e-4) at any batch
size, and without the optional packages the command says what to install."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch
from scipy.io import loadmat

from reid.data import Market1501, load_image_cache, resize_images
from reid.export import main
from reid.rundir import read_run_config


def test_onnx_output_equals_the_evaluation_features(trained_demo_run, tmp_path, capsys):
    ort = pytest.importorskip("onnxruntime", reason="onnxruntime is not installed (pip install -e '.[export]')")
    out = tmp_path / "model.onnx"
    assert main([str(trained_demo_run), "--onnx", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "input 'images' uint8 RGB (batch, 3, 64, 32)" in printed and "eval.flip true" in printed
    assert float(printed.rsplit("max abs difference ", 1)[1]) <= 1e-4

    # The run's own query images, resized as the evaluation resizes them, through onnxruntime.
    cfg = read_run_config(trained_demo_run)
    query = load_image_cache([s.path for s in Market1501(cfg.data.root).query], tuple(cfg.data.cache_size))
    images = resize_images(query, tuple(cfg.data.size)).numpy()
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    want = loadmat(trained_demo_run / "features.mat")["query_f"]
    for rows in (slice(0, 1), slice(0, 5), slice(None)):  # the batch dimension is dynamic
        got = session.run(["features"], {"images": images[rows]})[0]
        assert got.shape == want[rows].shape
        assert np.abs(got - want[rows]).max() <= 1e-4
    assert np.linalg.norm(got, axis=1) == pytest.approx(1.0, abs=1e-5)


def test_without_onnx_the_command_says_what_to_install(trained_demo_run, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # what a missing package looks like to import
    assert main([str(trained_demo_run), "--onnx", str(tmp_path / "m.onnx")]) == 2
    assert capsys.readouterr().err.strip() == ("error: ONNX export needs the onnxruntime package; install the "
                                               "export extra: pip install -e '.[export]' (onnx and onnxruntime)")
    assert not (tmp_path / "m.onnx").exists()


def test_a_model_that_disagrees_is_not_written(trained_demo_run, tmp_path, capsys, monkeypatch):
    pytest.importorskip("onnxruntime", reason="onnxruntime is not installed (pip install -e '.[export]')")
    import reid.export as export

    real = export.onnx_bytes
    monkeypatch.setattr(export, "onnx_bytes", lambda graph, example: real(_Shifted(graph).eval(), example))
    assert main([str(trained_demo_run), "--onnx", str(tmp_path / "m.onnx")]) == 2
    assert "differs from PyTorch by up to" in capsys.readouterr().err
    assert not (tmp_path / "m.onnx").exists()


class _Shifted(torch.nn.Module):
    """A graph whose output is off by 1e-3: what the check must catch."""

    def __init__(self, graph: torch.nn.Module) -> None:
        super().__init__()
        self.graph = graph

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.graph(images) + 1e-3
