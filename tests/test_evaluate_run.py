"""Evaluation end to end: a trained demo model far above a random one,
``python -m reid.evaluate RUN_DIR`` reproducing the run's own evaluation, and the
cross-domain evaluation (``eval.datasets``) of the Market-trained model on a synthetic
DukeMTMC-reID in results.json, the .mat and the log."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.io import loadmat

from reid.config import load_config
from reid.data import DukeMTMC
from reid.engine.builder import build_data, build_model_from_config, build_split
from reid.engine.trainer import evaluate_model, train

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory) -> tuple[Path, object]:
    """The demo config (synthetic Market-1501 generated on first use), 8 epochs, evaluated every 4; the
    final model also on a synthetic DukeMTMC-reID (``eval.datasets``, generated on first use too)."""
    tmp = tmp_path_factory.mktemp("demo")
    duke = f"{{name: dukemtmc, root: {tmp / 'duke'}, synthetic: {{ids: 8, images_per_id: 6, distractors: 4, seed: 1}}}}"
    cfg = load_config(REPO / "configs" / "demo_standard.yaml",
                      [f"data.root={tmp / 'synthetic'}", f"data.cache_dir={tmp / 'cache'}", f"output.root={tmp / 'out'}",
                       "eval.every_epochs=4", f"eval.datasets=[{duke}]"])
    out = train(cfg, device="cpu", progress=False)
    shutil.copytree(out, tmp / "as_trained", ignore=shutil.ignore_patterns("checkpoints"))  # the CLI tests rewrite out
    return out, cfg


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
    keys = ("rank1", "rank5", "rank10", "mAP", "mAP_trapezoid", "mINP", "num_valid_queries")
    for key in keys + ("epoch",):
        assert after[key] == pytest.approx(before[key], abs=1e-6), key
    for key in keys + ("num_query", "num_gallery"):  # the cross-domain numbers of the run = the CLI's
        assert after["datasets"]["dukemtmc"][key] == pytest.approx(before["datasets"]["dukemtmc"][key], abs=1e-6), key
    mat_after = loadmat(out / "mini_batch_data.mat")
    assert mat_after["eval_epoch"][0].tolist() == mat_before["eval_epoch"][0].tolist() == [4, 8]  # replaced, not added
    assert mat_after["eval_epoch_dukemtmc"][0].tolist() == mat_before["eval_epoch_dukemtmc"][0].tolist() == [8]
    np.testing.assert_allclose(mat_after["eval_mAP"], mat_before["eval_mAP"], atol=1e-6)
    np.testing.assert_allclose(mat_after["eval_mAP_dukemtmc"], mat_before["eval_mAP_dukemtmc"], atol=1e-6)
    assert "dukemtmc (cross-domain):" in r.stdout
    assert set(loadmat(out / "features.mat")) >= {"query_f", "query_label", "query_cam", "gallery_f",
                                                  "gallery_label", "gallery_cam"}
    rerank = subprocess.run([sys.executable, "-m", "reid.evaluate", str(out), "--device", "cpu",
                             "--set", "eval.rerank=true"], capture_output=True, text=True, timeout=300, cwd=REPO)
    assert rerank.returncode == 0, rerank.stderr
    assert json.loads((out / "results.json").read_text())["rerank"] is True


def test_cross_domain_results_in_results_json_mat_and_log(demo_run):
    """The Market-trained model on the synthetic Duke layout: results.json, the .mat's suffixed keys
    (Market keys unchanged) and the last log line all carry it; a query per Duke query image."""
    out, cfg = demo_run
    out = out.parent.parent / "as_trained"  # as training wrote them
    results = json.loads((out / "results.json").read_text())
    duke = results["datasets"]["dukemtmc"]
    duke_data = DukeMTMC(cfg.eval.datasets[0].root)
    assert duke["root"] == str(duke_data.root) and duke["num_query"] == len(duke_data.query) > 0
    assert duke["num_gallery"] == len(duke_data.gallery) and duke["num_valid_queries"] == len(duke_data.query)
    assert 0 < duke["mAP"] <= 1 and (duke["mAP"], duke["rank1"]) != (results["mAP"], results["rank1"])
    m = loadmat(out / "mini_batch_data.mat")
    assert m["eval_epoch"][0].tolist() == [4, 8] and m["eval_mAP"][0][-1] == pytest.approx(results["mAP"])
    assert m["eval_epoch_dukemtmc"][0].tolist() == [8]  # the final model only
    for key in ("rank1", "rank5", "rank10", "mAP"):
        assert m[f"eval_{key}_dukemtmc"].shape == (1, 1)
        assert m[f"eval_{key}_dukemtmc"][0][0] == pytest.approx(duke[key]), key
    last = (out / "log.txt").read_text().splitlines()[-1]
    assert last.startswith("epoch 8/8") and f"rank1 {results['rank1']:.4f} mAP {results['mAP']:.4f}" in last
    assert f"dukemtmc_rank1 {duke['rank1']:.4f} dukemtmc_mAP {duke['mAP']:.4f}" in last


def test_evaluate_cli_adds_a_cross_domain_dataset(demo_run, tmp_path):
    """``--set eval.datasets=[...]`` on a finished run: results.json holds the listed dataset, the .mat
    gains its keys and keeps the training-time ones."""
    out, _ = demo_run
    cuhk = f"{{name: cuhk03, root: {tmp_path / 'cuhk'}, cuhk03_boxes: labeled, synthetic: {{ids: 5, images_per_id: 4}}}}"
    r = subprocess.run([sys.executable, "-m", "reid.evaluate", str(out), "--device", "cpu",
                        "--set", f"eval.datasets=[{cuhk}]"], capture_output=True, text=True, timeout=300, cwd=REPO)
    assert r.returncode == 0, r.stderr
    results = json.loads((out / "results.json").read_text())
    assert list(results["datasets"]) == ["cuhk03"]
    assert results["datasets"]["cuhk03"]["root"] == str(tmp_path / "cuhk" / "labeled")
    m = loadmat(out / "mini_batch_data.mat")
    assert m["eval_epoch_cuhk03"][0].tolist() == [8] and m["eval_epoch_dukemtmc"][0].tolist() == [8]
    assert m["eval_mAP_cuhk03"][0][0] == pytest.approx(results["datasets"]["cuhk03"]["mAP"])


def test_evaluate_cli_errors_are_one_line(tmp_path):
    r = subprocess.run([sys.executable, "-m", "reid.evaluate", str(tmp_path)], capture_output=True, text=True,
                       timeout=120, cwd=REPO)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.strip() == f"error: {tmp_path}: no config.yaml, so it is not a run directory of train.py; pass one"


def test_cross_domain_needs_a_run_not_a_features_file(tmp_path):
    from reid.errors import ReidError
    from reid.evaluate import evaluate_features_file

    with pytest.raises(ReidError, match="eval.datasets: a cross-domain evaluation needs a run directory"):
        evaluate_features_file(tmp_path / "f.mat", ["eval.datasets=[dukemtmc]"])
