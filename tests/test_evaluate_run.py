"""Evaluation end to end: a trained demo model far above a random one,
``python -m reid.evaluate RUN_DIR`` reproducing the run's own evaluation, and the
cross-domain evaluation (``eval.datasets``) of the Market-trained model on a synthetic
DukeMTMC-reID in results.json, the .mat and the log."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.io import loadmat

from reid.config import load_config
from reid.data import DukeMTMC
from reid.engine.builder import build_data, build_model_from_config, build_split
from reid.engine.run import train
from reid.evaluation import evaluate_model
from reid.evaluate import main as evaluate_main

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory) -> tuple[Path, object]:
    """The demo config (synthetic Market-1501 generated on first use), 6 epochs at learning rate 0.02 (the
    demo's 8 at 0.01 reach the same mAP, 0.23; 4 epochs reach 0.10), evaluated every 4; the final model
    also on a synthetic DukeMTMC-reID (``eval.datasets``, generated on first use too)."""
    tmp = tmp_path_factory.mktemp("demo")
    duke = f"{{name: dukemtmc, root: {tmp / 'duke'}, synthetic: {{ids: 8, images_per_id: 6, distractors: 4, seed: 1}}}}"
    cfg = load_config(REPO / "configs" / "demo_standard.yaml",
                      [f"data.root={tmp / 'synthetic'}", f"data.cache_dir={tmp / 'cache'}", f"output.root={tmp / 'out'}",
                       "train.epochs=6", "optim.lr=0.02", "optim.backbone_lr=0.02", "eval.every_epochs=4",
                       f"eval.datasets=[{duke}]"])
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


def test_val_feature_ratio_falls_below_one_as_the_demo_learns(demo_run):
    """The demo holds out 2 images of each of its 24 identities: as the model learns (mAP 0.23, see above) its
    retrieval features put them closer to each other than to other identities' images, the ratio of the mean
    same-identity to the mean different-identity cosine distance falling well below 1 (an untrained run's is
    about 1: tests/test_trainer.py)."""
    out, _ = demo_run
    m = loadmat(out / "mini_batch_data.mat")
    ratio = m["val_feature_ratio"][0]
    assert m["val_summary_epoch"][0].tolist() == [1, 2, 3, 4, 5, 6] and np.isfinite(ratio).all()
    assert ratio[-1] < 0.8 and ratio[-1] < ratio[0]


def test_evaluate_cli_reproduces_the_run_evaluation(demo_run, capsys):
    out, _ = demo_run
    before = json.loads((out / "results.json").read_text())
    mat_before = loadmat(out / "mini_batch_data.mat")
    (out / "results.json").unlink()
    (out / "features.mat").unlink()
    assert evaluate_main([str(out), "--device", "cpu"]) == 0
    stdout = capsys.readouterr().out
    assert "rank-1" in stdout and "mAP" in stdout
    assert "evaluated with: cosine distance, no re-ranking, flip, AP standard" in stdout
    after = json.loads((out / "results.json").read_text())
    keys = ("rank1", "rank5", "rank10", "mAP", "mAP_trapezoid", "mINP", "num_valid_queries")
    for key in keys + ("epoch",):
        assert after[key] == pytest.approx(before[key], abs=1e-6), key
    assert after["settings"] == before["settings"] == {"distance": "cosine", "rerank": False, "flip": True,
                                                       "ap": "standard"}
    for key in keys + ("num_query", "num_gallery"):  # the cross-domain numbers of the run = the CLI's
        assert after["datasets"]["dukemtmc"][key] == pytest.approx(before["datasets"]["dukemtmc"][key], abs=1e-6), key
    mat_after = loadmat(out / "mini_batch_data.mat")
    assert mat_after["eval_epoch"][0].tolist() == mat_before["eval_epoch"][0].tolist() == [4, 6]  # replaced, not added
    assert mat_after["eval_epoch_dukemtmc"][0].tolist() == mat_before["eval_epoch_dukemtmc"][0].tolist() == [6]
    np.testing.assert_allclose(mat_after["eval_mAP"], mat_before["eval_mAP"], atol=1e-6)
    np.testing.assert_allclose(mat_after["eval_mAP_dukemtmc"], mat_before["eval_mAP_dukemtmc"], atol=1e-6)
    assert "dukemtmc (cross-domain):" in stdout
    assert set(loadmat(out / "features.mat")) >= {"query_f", "query_label", "query_cam", "gallery_f",
                                                  "gallery_label", "gallery_cam"}


def test_re_evaluating_with_other_settings_keeps_the_recorded_result(demo_run, capsys):
    """--set eval.rerank=true writes results_rerank.json beside results.json, which (like features.mat and
    the .mat's eval_*, the original training's result) stays as it was; the printout names the settings."""
    out, _ = demo_run
    recorded = {name: (out / name).read_bytes() for name in ("results.json", "features.mat", "mini_batch_data.mat")}
    assert evaluate_main([str(out), "--device", "cpu", "--set", "eval.rerank=true"]) == 0
    stdout = capsys.readouterr().out
    assert stdout.startswith("evaluated with: cosine distance, re-ranking, flip, AP standard\n")
    assert f"wrote {out / 'results_rerank.json'} (other settings than the run's: its results.json is unchanged)" in stdout
    for name, content in recorded.items():
        assert (out / name).read_bytes() == content, f"{name} was rewritten"
    reranked = json.loads((out / "results_rerank.json").read_text())
    assert reranked["settings"] == {"distance": "cosine", "rerank": True, "flip": True, "ap": "standard"}
    assert reranked["rerank"] is True and json.loads(recorded["results.json"])["rerank"] is False
    assert evaluate_main([str(out), "--device", "cpu", "--set", "eval.flip=false", "--set", "eval.ap=trapezoid"]) == 0
    assert json.loads((out / "results_noflip_trapezoid.json").read_text())["settings"]["flip"] is False
    assert (out / "results.json").read_bytes() == recorded["results.json"]


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
    assert m["eval_epoch"][0].tolist() == [4, 6] and m["eval_mAP"][0][-1] == pytest.approx(results["mAP"])
    assert m["eval_epoch_dukemtmc"][0].tolist() == [6]  # the final model only
    for key in ("rank1", "rank5", "rank10", "mAP"):
        assert m[f"eval_{key}_dukemtmc"].shape == (1, 1)
        assert m[f"eval_{key}_dukemtmc"][0][0] == pytest.approx(duke[key]), key
    last = (out / "log.txt").read_text().splitlines()[-1]
    assert last.startswith("epoch 6/6") and f"rank1 {results['rank1']:.4f} mAP {results['mAP']:.4f}" in last
    assert f"dukemtmc_rank1 {duke['rank1']:.4f} dukemtmc_mAP {duke['mAP']:.4f}" in last


def test_evaluate_cli_adds_a_cross_domain_dataset(demo_run, tmp_path, synthetic_root, capsys):
    """``--set eval.datasets=[...]`` on a finished run adds to its cross-domain results: results.json keeps
    the training-time dukemtmc and gains each new dataset, the .mat's eval_*_<label> keys match it (none
    stale), and two folder datasets are told apart by their labels."""
    out, _ = demo_run
    before = json.loads((out / "results.json").read_text())
    features = stamp(out / "features.mat")
    cuhk = f"{{name: cuhk03, root: {tmp_path / 'cuhk'}, cuhk03_boxes: labeled, synthetic: {{ids: 5, images_per_id: 4}}}}"
    assert evaluate_main([str(out), "--device", "cpu", "--set", f"eval.datasets=[{cuhk}]"]) == 0
    results = json.loads((out / "results.json").read_text())
    assert list(results["datasets"]) == ["dukemtmc", "cuhk03"]
    # only what the evaluation adds is written: the query/gallery results as they were, features.mat untouched
    assert {k: v for k, v in results.items() if k != "datasets"} == {k: v for k, v in before.items() if k != "datasets"}
    assert stamp(out / "features.mat") == features
    assert results["datasets"]["cuhk03"]["root"] == str(tmp_path / "cuhk" / "labeled")
    m = loadmat(out / "mini_batch_data.mat")
    assert m["eval_epoch_cuhk03"][0].tolist() == [6] and m["eval_epoch_dukemtmc"][0].tolist() == [6]
    assert m["eval_mAP_cuhk03"][0][0] == pytest.approx(results["datasets"]["cuhk03"]["mAP"])
    assert m["eval_mAP_dukemtmc"][0][0] == pytest.approx(results["datasets"]["dukemtmc"]["mAP"])

    pattern = r"^(?P<pid>-1|\d+)_c(?P<cam>\d)s"
    folders = ", ".join(f"{{name: folder, root: {synthetic_root}, pattern: '{pattern}', label: {label}}}"
                        for label in ("site_a", "site_b"))
    assert evaluate_main([str(out), "--device", "cpu", "--set", f"eval.datasets=[{folders}]"]) == 0, \
        capsys.readouterr().err
    results = json.loads((out / "results.json").read_text())
    assert list(results["datasets"]) == ["dukemtmc", "cuhk03", "site_a", "site_b"]
    m = loadmat(out / "mini_batch_data.mat")
    on_mat = sorted(k[len("eval_mAP_"):] for k in m if k.startswith("eval_mAP_"))
    assert on_mat == sorted(results["datasets"])  # no stale key, none missing
    for label in ("site_a", "site_b", "cuhk03"):
        assert m[f"eval_mAP_{label}"][0][-1] == pytest.approx(results["datasets"][label]["mAP"])
    assert "site_a (cross-domain):" in capsys.readouterr().out


def stamp(path: Path) -> tuple[int, int, int]:
    """(inode, size, modification time): any write shows, in place or renamed into place, even of the same bytes."""
    st = path.stat()
    return st.st_ino, st.st_size, st.st_mtime_ns


def real_copy(root: Path, to: Path) -> Path:
    """A copy of a synthetic dataset that is not marked synthetic: data as a user's real folder holds it."""
    shutil.copytree(root, to, ignore=shutil.ignore_patterns("synthetic.json"))
    return to


def test_a_synthetic_demo_run_evaluates_on_another_root_with_the_advice_it_gives(demo_run, tmp_path, capsys):
    """A run trained on a generated dataset, evaluated on real data elsewhere: the error's advice
    (--set data.synthetic=null) is accepted at evaluation, and the results go beside the run's own."""
    out, _ = demo_run
    other = real_copy(out.parent.parent / "synthetic", tmp_path / "market-real")
    own = {name: stamp(out / name) for name in ("results.json", "features.mat", "mini_batch_data.mat")}
    assert evaluate_main([str(out), "--device", "cpu", "--set", f"data.root={other}"]) == 2
    advice = capsys.readouterr().err
    assert "--set data.synthetic=null" in advice, advice
    assert evaluate_main([str(out), "--device", "cpu", "--set", f"data.root={other}",
                          "--set", "data.synthetic=null"]) == 0
    assert f"wrote {out / 'results_on_market-real.json'} (other settings than the run's" in capsys.readouterr().out
    assert {name: stamp(out / name) for name in own} == own  # never over the run's own results
    assert json.loads((out / "results_on_market-real.json").read_text())["num_valid_queries"] > 0


def test_a_real_data_run_evaluated_on_another_root_writes_apart(trained_demo_run, synthetic_root, tmp_path, capsys):
    """Its own evaluation settings, another data.root: results_on_<folder>.json; results.json and features.mat
    as they were."""
    run = tmp_path / "run"
    shutil.copytree(trained_demo_run, run)
    other = real_copy(synthetic_root, tmp_path / "elsewhere")
    own = {name: stamp(run / name) for name in ("results.json", "features.mat", "mini_batch_data.mat")}
    assert evaluate_main([str(run), "--device", "cpu", "--set", f"data.root={other}"]) == 0
    assert f"wrote {run / 'results_on_elsewhere.json'}" in capsys.readouterr().out
    assert {name: stamp(run / name) for name in own} == own
    same = json.loads((run / "results_on_elsewhere.json").read_text())  # the same images: the same numbers
    assert same["mAP"] == pytest.approx(json.loads((run / "results.json").read_text())["mAP"], abs=1e-6)


def test_evaluate_cli_errors_are_one_line(tmp_path, capsys):
    assert evaluate_main([str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.strip() == f"error: {tmp_path}: no config.yaml, so it is not a run directory of train.py; pass one"


def test_cross_domain_needs_a_run_not_a_features_file(tmp_path):
    from reid.errors import ReidError
    from reid.evaluate import evaluate_features_file

    with pytest.raises(ReidError, match="eval.datasets: a cross-domain evaluation needs a run directory"):
        evaluate_features_file(tmp_path / "f.mat", ["eval.datasets=[dukemtmc]"])
