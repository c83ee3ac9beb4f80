"""Evaluation end to end: a trained demo model far above a random one, and
``python -m reid.evaluate RUN_DIR`` reproducing the run's own evaluation."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.io import loadmat

from reid.config import load_config
from reid.engine.builder import build_data, build_model_from_config, build_split
from reid.engine.trainer import evaluate_model, train

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory) -> tuple[Path, object]:
    """The demo config (synthetic data generated on first use), 8 epochs, evaluated every 4."""
    tmp = tmp_path_factory.mktemp("demo")
    cfg = load_config(REPO / "configs" / "demo_standard.yaml",
                      [f"data.root={tmp / 'synthetic'}", f"data.cache_dir={tmp / 'cache'}", f"output.root={tmp / 'out'}",
                       "eval.every_epochs=4"])
    return train(cfg, device="cpu", progress=False), cfg


def test_trained_model_scores_far_above_a_random_one(demo_run):
    out, cfg = demo_run
    trained = json.loads((out / "results.json").read_text())
    dataset, split = build_split(cfg)
    torch.manual_seed(cfg.seed)
    untrained = build_model_from_config(cfg, split.num_classes)
    random_init = evaluate_model(untrained, build_data(cfg, dataset, split, progress=False), cfg,
                                 torch.device("cpu"), None, channels_last=False)
    assert trained["num_valid_queries"] == random_init["num_valid_queries"] > 0
    assert trained["mAP"] > 3 * random_init["mAP"] and trained["mAP"] > random_init["mAP"] + 0.15
    assert trained["rank1"] > random_init["rank1"] + 0.1


def test_evaluate_cli_reproduces_the_run_evaluation(demo_run, tmp_path):
    out, _ = demo_run
    before = json.loads((out / "results.json").read_text())
    mat_before = loadmat(out / "mini_batch_data.mat")
    (out / "results.json").unlink()
    (out / "features.mat").unlink()
    r = subprocess.run([sys.executable, "-m", "reid.evaluate", str(out), "--device", "cpu"], capture_output=True,
                       text=True, timeout=300, cwd=REPO)
    assert r.returncode == 0, r.stderr
    assert "rank-1" in r.stdout and "mAP" in r.stdout
    after = json.loads((out / "results.json").read_text())
    for key in ("rank1", "rank5", "rank10", "mAP", "mAP_trapezoid", "mINP", "num_valid_queries", "epoch"):
        assert after[key] == pytest.approx(before[key], abs=1e-6), key
    mat_after = loadmat(out / "mini_batch_data.mat")
    assert mat_after["eval_epoch"][0].tolist() == mat_before["eval_epoch"][0].tolist() == [4, 8]  # replaced, not added
    np.testing.assert_allclose(mat_after["eval_mAP"], mat_before["eval_mAP"], atol=1e-6)
    assert set(loadmat(out / "features.mat")) >= {"query_f", "query_label", "query_cam", "gallery_f",
                                                  "gallery_label", "gallery_cam"}
    rerank = subprocess.run([sys.executable, "-m", "reid.evaluate", str(out), "--device", "cpu",
                             "--set", "eval.rerank=true"], capture_output=True, text=True, timeout=300, cwd=REPO)
    assert rerank.returncode == 0, rerank.stderr
    assert json.loads((out / "results.json").read_text())["rerank"] is True


def test_evaluate_cli_errors_are_one_line(tmp_path):
    r = subprocess.run([sys.executable, "-m", "reid.evaluate", str(tmp_path)], capture_output=True, text=True,
                       timeout=120, cwd=REPO)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.strip() == f"error: {tmp_path}: no config.yaml, so it is not a run directory of train.py; pass one"
