"""``python -m reid.evaluate --features FILE.mat``: a features file scored alone gives the
run's own results; files that are not features files are named with what they lack."""

from __future__ import annotations

import json

import numpy as np
from scipy.io import loadmat, savemat

from reid.evaluate import main
from reid.evaluation import format_results


def test_features_file_reproduces_results_json(trained_demo_run, capsys):
    assert main(["--features", str(trained_demo_run / "features.mat")]) == 0
    results = json.loads((trained_demo_run / "results.json").read_text())
    assert results["num_valid_queries"] > 0 and 0 < results["mAP_trapezoid"] < results["mAP_standard"] < 1
    said, table = capsys.readouterr().out.split("\n", 1)
    assert table == format_results(results).split("\n", 1)[1] + "\n"  # both AP rules, rank-k, mINP, valid queries
    # the settings it was scored with; whether the features were flip-averaged is not known from the file
    assert said == "evaluated with: cosine distance, no re-ranking, AP standard"


def test_eval_settings_apply_to_a_features_file(trained_demo_run, tmp_path, capsys):
    # layumi's own files store float64 features and N x 1 labels: read the same way
    m = loadmat(trained_demo_run / "features.mat")
    other = {k: (v.astype(np.float64) if k.endswith("_f") else v.T) for k, v in m.items() if not k.startswith("__")}
    savemat(tmp_path / "pytorch_result.mat", other)
    assert main(["--features", str(tmp_path / "pytorch_result.mat"), "--set", "eval.ap=trapezoid"]) == 0
    results = json.loads((trained_demo_run / "results.json").read_text())
    said, head, values = capsys.readouterr().out.splitlines()
    assert said == "evaluated with: cosine distance, no re-ranking, AP trapezoid"
    assert head.split()[3] == "mAP(trapezoid)" and values.split()[3] == f"{100 * results['mAP_trapezoid']:.1f}%"


def test_bad_features_files_and_arguments_are_one_line_errors(tmp_path, capsys):
    savemat(tmp_path / "partial.mat", {"query_f": np.zeros((2, 4)), "query_label": [[1, 2]]})
    assert main(["--features", str(tmp_path / "partial.mat")]) == 2
    assert capsys.readouterr().err.strip() == (
        f"error: {tmp_path / 'partial.mat'}: no query_cam, gallery_f, gallery_label, gallery_cam; a features file "
        "holds query_f, query_label, query_cam, gallery_f, gallery_label, gallery_cam (features N x D, labels and "
        "cameras 1 x N)")
    assert main(["--features", str(tmp_path / "none.mat")]) == 2
    assert "no such features file" in capsys.readouterr().err
    (tmp_path / "text.mat").write_text("not a mat file")
    assert main(["--features", str(tmp_path / "text.mat")]) == 2
    assert "cannot be read as a MATLAB .mat file" in capsys.readouterr().err
    savemat(tmp_path / "rows.mat", {"query_f": np.zeros((2, 4)), "query_label": [[1, 2, 3]], "query_cam": [[1, 1]],
                                    "gallery_f": np.zeros((1, 4)), "gallery_label": [[1]], "gallery_cam": [[2]]})
    assert main(["--features", str(tmp_path / "rows.mat")]) == 2
    assert "query_f has shape (2, 4) but query_label and query_cam have 3 and 2 entries" in capsys.readouterr().err
    assert main(["--features", str(tmp_path / "rows.mat"), "--set", "data.root=x"]) == 2
    assert "only eval.* keys apply to a features file" in capsys.readouterr().err
    savemat(tmp_path / "nan.mat", {"query_f": np.full((1, 4), np.nan), "query_label": [[1]], "query_cam": [[1]],
                                   "gallery_f": np.ones((1, 4)), "gallery_label": [[1]], "gallery_cam": [[2]]})
    assert main(["--features", str(tmp_path / "nan.mat")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: the features contain NaN or inf") and "Traceback" not in err and err.count("\n") == 1
