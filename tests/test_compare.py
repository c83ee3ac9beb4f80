"""reid.analysis + scripts/compare.py on .mat files written here per DESIGN.md contract 3.

Oracles are computed in the tests from the arrays (numpy weighted means, np.convolve,
hand-computed epoch positions), never with the functions under test.
"""

from __future__ import annotations

import importlib.util
import json
import struct
from pathlib import Path

import numpy as np
import pytest
from scipy.io import loadmat, savemat

from reid.analysis import (
    compare,
    curve,
    epoch_positions,
    load_run,
    moving_average,
    paired_difference,
    parse_range,
    plot_runs,
    range_indices,
    study_figure,
    study_groups,
    summarize,
    summary_table,
)
from reid.errors import ReidError

REPO = Path(__file__).resolve().parents[1]


def make_arrays(epochs: int = 3, n_train: int = 50, batch: int = 32, n_val: int = 40, val_batch: int = 16,
                seed: int = 0, speed: float = 1.0, criterion: str = "cross_entropy", evals: int = 0) -> dict:
    """Realistic-looking contract-3 arrays: rising accuracy, falling loss, noise, partial last batches."""
    rng = np.random.default_rng(seed)
    train_per_epoch = n_train  # mini-batches per epoch, the last one partial
    tb = np.full(train_per_epoch, batch, dtype=float)
    tb[-1] = 7  # partial last train batch
    n_vb = -(-n_val // val_batch)
    vb = np.full(n_vb, val_batch, dtype=float)
    vb[-1] = n_val - val_batch * (n_vb - 1) or val_batch
    t = np.arange(epochs * train_per_epoch) / train_per_epoch
    train_acc = np.clip(1 - np.exp(-speed * (t + 0.05)) + rng.normal(0, 0.05, t.size), 0, 1)
    train_loss = 6 * np.exp(-speed * t) + 0.2 + rng.normal(0, 0.15, t.size)
    val_e = np.repeat(np.arange(1, epochs + 1), n_vb).astype(float)
    val_acc = np.clip(1 - np.exp(-speed * val_e * 0.8) + rng.normal(0, 0.08, val_e.size), 0, 1)
    val_loss = 6 * np.exp(-speed * val_e) + 0.4 + rng.normal(0, 0.2, val_e.size)
    arrays = {
        "train_loss": train_loss, "train_acc": train_acc,
        "train_epoch": np.repeat(np.arange(1, epochs + 1), train_per_epoch).astype(float),
        "train_lr": np.full(t.size, 0.05), "train_batch_size": np.tile(tb, epochs),
        "val_loss": val_loss, "val_acc": val_acc, "val_epoch": val_e, "val_batch_size": np.tile(vb, epochs),
        "eval_epoch": np.arange(1, evals + 1, dtype=float), "eval_rank1": np.linspace(0.5, 0.8, evals),
        "eval_rank5": np.linspace(0.7, 0.9, evals), "eval_rank10": np.linspace(0.8, 0.95, evals),
        "eval_mAP": np.linspace(0.3, 0.6, evals),
    }
    arrays = {k: np.asarray(v, dtype=np.float64).reshape(1, -1) for k, v in arrays.items()}  # 1xN rows
    arrays["criterion"] = criterion
    arrays["config"] = f"seed: 0\ncriterion:\n  name: {criterion}\n"
    return arrays


def write_run(run_dir: Path, arrays: dict, results: dict | None = None) -> Path:
    run_dir.mkdir(parents=True, exist_ok=True)
    savemat(run_dir / "mini_batch_data.mat", arrays)
    if results is not None:
        (run_dir / "results.json").write_text(json.dumps(results))
    return run_dir


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()[:24]
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def oracle_val_per_epoch(mat: Path, key: str) -> dict[int, float]:
    m = loadmat(mat)
    v, w, e = m[key][0], m["val_batch_size"][0], m["val_epoch"][0]
    return {int(ep): float(np.average(v[e == ep], weights=w[e == ep])) for ep in np.unique(e)}


# --------------------------------------------------------------------------- summary numbers


def test_summary_matches_weighted_means_from_mat(tmp_path):
    run_dir = write_run(tmp_path / "soft", make_arrays(epochs=4, seed=1, criterion="soft_cross_entropy"))
    mat = run_dir / "mini_batch_data.mat"
    acc, loss = oracle_val_per_epoch(mat, "val_acc"), oracle_val_per_epoch(mat, "val_loss")
    # The weighting matters here: the last val batch has 8 images, not 16.
    m = loadmat(mat)
    assert m["val_batch_size"][0][-1] != m["val_batch_size"][0][0]

    s = summarize(load_run(run_dir))
    assert s["name"] == "soft" and s["criterion"] == "soft_cross_entropy"
    assert s["epochs"] == int(m["train_epoch"][0].max()) == 4
    assert s["val_acc_final"] == pytest.approx(acc[4])
    assert s["val_acc_best"] == pytest.approx(max(acc.values()))
    assert s["val_acc_best_epoch"] == max(acc, key=acc.get)
    assert s["val_loss_final"] == pytest.approx(loss[4])
    assert s["val_loss_best"] == pytest.approx(min(loss.values()))
    assert s["val_loss_best_epoch"] == min(loss, key=loss.get)
    assert s["rank1"] is None and s["mAP"] is None

    table = summary_table([load_run(run_dir)])
    row = table.splitlines()[2]
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[0] == "soft" and cells[1] == "soft_cross_entropy" and cells[2] == "4"
    assert cells[3] == f"{100 * acc[4]:.2f}%"
    best = max(acc, key=acc.get)
    assert cells[4] == f"{100 * acc[best]:.2f}% (ep {best})"
    assert cells[5] == f"{loss[4]:.4f}"
    assert cells[7] == "-" and cells[8] == "-"


def test_rank1_map_from_mat_eval_arrays_then_results_json(tmp_path):
    a = write_run(tmp_path / "evaluated", make_arrays(evals=3), results={"rank1": 0.1, "mAP": 0.05})
    m = loadmat(a / "mini_batch_data.mat")
    s = summarize(load_run(a))
    assert s["rank1"] == pytest.approx(m["eval_rank1"][0][-1]) and s["mAP"] == pytest.approx(m["eval_mAP"][0][-1])
    assert s["eval_epoch"] == 3 and s["eval_source"] == "mat"

    # eval_* absent: results.json is used.
    arrays = {k: v for k, v in make_arrays().items() if not k.startswith("eval_")}
    b = write_run(tmp_path / "json_only", arrays, results={"rank1": 0.873, "mAP": 0.701, "rank5": 0.95})
    s = summarize(load_run(b))
    assert (s["rank1"], s["mAP"], s["eval_source"]) == (0.873, 0.701, "results.json")
    cells = [c.strip() for c in summary_table([load_run(b)]).splitlines()[2].strip("|").split("|")]
    assert cells[7] == "87.30%" and cells[8] == "70.10%"

    # eval_* present but empty (not evaluated yet), no results.json: nothing.
    c = write_run(tmp_path / "not_evaluated", make_arrays(evals=0))
    assert summarize(load_run(c))["rank1"] is None


def test_partial_last_val_epoch_is_left_out(tmp_path):
    arrays = make_arrays(epochs=3)
    # Drop the last val mini-batch of epoch 3, as if the file were written during validation.
    for k in ("val_loss", "val_acc", "val_epoch", "val_batch_size"):
        arrays[k] = arrays[k][:, :-1]
    run_dir = write_run(tmp_path / "mid_val", arrays)
    acc = oracle_val_per_epoch(run_dir / "mini_batch_data.mat", "val_acc")
    s = summarize(load_run(run_dir))
    assert s["val_partial_epoch"] == 3 and s["val_epochs"] == [1, 2]
    assert s["val_acc_final"] == pytest.approx(acc[2])


def test_run_in_progress_without_val_yet(tmp_path):
    arrays = make_arrays(epochs=1)
    for k in ("val_loss", "val_acc", "val_epoch", "val_batch_size"):
        arrays[k] = np.zeros((1, 0))
    run_dir = write_run(tmp_path / "early", arrays)
    s = summarize(load_run(run_dir))
    assert s["val_acc_final"] is None and s["epochs"] == 1
    png, table = compare([run_dir], out=tmp_path / "early.png")
    assert png.is_file() and "| early |" in table


# --------------------------------------------------------------------------- curves


def test_epoch_positions_hand_values():
    np.testing.assert_allclose(epoch_positions(np.array([1, 1, 1, 1, 2, 2, 2, 2])),
                               [0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 1.75, 2.0])
    # A run in progress: epoch 3 has 2 of its 4 mini-batches so far -> not stretched.
    np.testing.assert_allclose(epoch_positions(np.array([1, 1, 1, 1, 2, 2, 2, 2, 3, 3])),
                               [0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 1.75, 2.0, 2.25, 2.5])
    np.testing.assert_allclose(epoch_positions(np.array([1, 1, 1])), [1 / 3, 2 / 3, 1.0])
    assert epoch_positions(np.array([])).size == 0


def test_curve_x_epoch_uses_each_groups_epochs(tmp_path):
    run = load_run(write_run(tmp_path / "r", make_arrays(epochs=2, n_train=5, n_val=40, val_batch=16)))
    xs, ys = curve(run, "val_acc", x="epoch")
    np.testing.assert_allclose(xs, [1 / 3, 2 / 3, 1.0, 4 / 3, 5 / 3, 2.0])  # 3 val batches per epoch
    np.testing.assert_allclose(ys, 100 * run.arrays["val_acc"])  # accuracy drawn in %
    xs, _ = curve(run, "train_loss", x="epoch")
    np.testing.assert_allclose(xs, np.concatenate([np.arange(1, 6) / 5, 1 + np.arange(1, 6) / 5]))
    xs, _ = curve(run, "train_loss", x="batch")
    np.testing.assert_array_equal(xs, np.arange(1, 11))


@pytest.mark.parametrize("n", [1, 2, 5, 12])
def test_moving_average_vs_numpy_convolution(n):
    y = np.random.default_rng(n).normal(size=40)
    got = moving_average(y, n)
    assert got.shape == y.shape
    np.testing.assert_allclose(got[n - 1:], np.convolve(y, np.ones(n) / n, mode="valid"))
    np.testing.assert_allclose(got[: n - 1], np.cumsum(y)[: n - 1] / np.arange(1, n))
    with pytest.raises(ReidError):
        moving_average(y, 0)


def test_smoothing_before_range_and_range_selection(tmp_path):
    long_run = load_run(write_run(tmp_path / "long", make_arrays(epochs=4, n_train=25)))   # 100 train batches
    short_run = load_run(write_run(tmp_path / "short", make_arrays(epochs=1, n_train=25)))  # 25, in progress
    longest = 100
    assert range_indices(longest, (0.0, 0.1)) == (0, 10)
    assert range_indices(longest, (0.25, 0.5)) == (25, 50)
    assert range_indices(longest, (0.0, 1.0)) == (0, 100)

    y = long_run.arrays["train_loss"]
    xs, ys = curve(long_run, "train_loss", smooth=5, window=(25, 50))
    np.testing.assert_array_equal(xs, np.arange(26, 51))
    # Smoothed on the whole curve first: the value at index 25 averages indices 21..25.
    np.testing.assert_allclose(ys, np.convolve(y, np.ones(5) / 5, mode="valid")[21:46])
    # The shorter run has nothing in that window (drawn as far as it goes)...
    xs, ys = curve(short_run, "train_loss", window=(25, 50))
    assert ys.size == 0
    # ...and what it has in the first tenth, aligned on the same x as the long run.
    xs, _ = curve(short_run, "train_loss", window=(0, 10))
    np.testing.assert_array_equal(xs, np.arange(1, 11))

    assert parse_range("0:0.1") == (0.0, 0.1)
    assert parse_range(":0.5") == (0.0, 0.5) and parse_range("0.5:") == (0.5, 1.0)
    for bad in ("0.1", "0.5:0.2", "a:b", "0:2", "-1:0.5"):
        with pytest.raises(ReidError, match="range"):
            parse_range(bad)


# --------------------------------------------------------------------------- figure + files


def test_compare_writes_png_of_expected_size_and_md(tmp_path):
    root = tmp_path / "outputs"
    a = write_run(root / "standard", make_arrays(epochs=5, seed=1, speed=0.8, evals=1, criterion="cross_entropy"))
    b = write_run(root / "soft", make_arrays(epochs=3, seed=2, speed=1.2, criterion="soft_cross_entropy"))
    png, table = compare([a, b])
    assert png == root / "compare_standard_vs_soft.png"  # default: named after the runs, in their common parent
    assert png_size(png) == (1200, 800)  # 2x2 panels of 6x4 in at 100 dpi
    md = png.with_suffix(".md").read_text()
    assert table in md and "| standard |" in table and "| soft |" in table
    assert "cross_entropy" in table and "soft_cross_entropy" in table

    png1, _ = compare([a, b / "mini_batch_data.mat"], out=tmp_path / "one.png", metrics="train_acc",
                      smooth=10, x="epoch", range_="0:0.1")
    assert png_size(png1) == (600, 400) and (tmp_path / "one.md").is_file()
    png3 = plot_runs([load_run(a)], tmp_path / "three.png", metrics=["train_loss", "train_acc", "val_acc"])
    assert png_size(png3) == (1200, 800)


def test_same_directory_names_are_told_apart(tmp_path):
    a = write_run(tmp_path / "x" / "soft", make_arrays())
    b = write_run(tmp_path / "y" / "soft", make_arrays(seed=3))
    _, table = compare([a, b], out=tmp_path / "c.png")
    assert "| x/soft |" in table and "| y/soft |" in table


# --------------------------------------------------------------------------- errors


def test_errors_name_the_path_and_what_is_missing(tmp_path):
    with pytest.raises(ReidError, match="no such file"):
        load_run(tmp_path / "nope")
    (tmp_path / "empty_dir").mkdir()
    with pytest.raises(ReidError, match=r"empty_dir.*not a run directory"):
        load_run(tmp_path / "empty_dir")
    (tmp_path / "notes.txt").write_text("hi")
    with pytest.raises(ReidError, match=r"notes\.txt.*not a run directory or a \.mat"):
        load_run(tmp_path / "notes.txt")
    (tmp_path / "garbage.mat").write_bytes(b"not a mat file at all" * 10)
    with pytest.raises(ReidError, match=r"garbage\.mat.*cannot be read"):
        load_run(tmp_path / "garbage.mat")

    arrays = make_arrays()
    del arrays["val_acc"], arrays["val_batch_size"]
    savemat(tmp_path / "partial.mat", arrays)
    with pytest.raises(ReidError, match=r"partial\.mat: missing key\(s\) val_acc, val_batch_size"):
        load_run(tmp_path / "partial.mat")

    arrays = make_arrays()
    arrays["train_acc"] = arrays["train_acc"][:, :-3]
    savemat(tmp_path / "uneven.mat", arrays)
    with pytest.raises(ReidError, match=r"uneven\.mat.*different lengths"):
        load_run(tmp_path / "uneven.mat")

    run = load_run(write_run(tmp_path / "ok", make_arrays()))
    with pytest.raises(ReidError, match=r"no per-mini-batch metric 'val_acc5'.*train_lr"):
        plot_runs([run], tmp_path / "x.png", metrics=["val_acc5"])
    with pytest.raises(ReidError, match=r"\.png"):
        plot_runs([run], tmp_path / "x.jpg")


def test_cli_prints_table_and_error_without_traceback(tmp_path, capsys):
    a = write_run(tmp_path / "standard", make_arrays())
    script = REPO / "scripts" / "compare.py"
    # scripts/compare.py in-process (fast), loaded by path so no module name can clash.
    spec = importlib.util.spec_from_file_location("compare_cli", script)
    compare_cli = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(compare_cli)
    assert compare_cli.main([str(a), str(tmp_path / "missing"), "--out", str(tmp_path / "c.png")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "missing" in err and "Traceback" not in err and len(err.splitlines()) == 1

    assert compare_cli.main([str(a), "--out", str(tmp_path / "c.png"), "--metrics", "train_acc,val_acc",
                             "--smooth", "3", "--x", "epoch", "--range", "0:0.5"]) == 0
    assert png_size(tmp_path / "c.png") == (1200, 400)
    with pytest.raises(ReidError):
        compare_cli.main([str(tmp_path / "missing"), "--debug"])


# --------------------------------------------------------------------------- studies over seeds


def write_seed_run(run_dir: Path, seed: int, **kw) -> Path:
    arrays = make_arrays(seed=seed, evals=1, **kw)
    arrays["config"] = f"seed: {seed}\n"
    return write_run(run_dir, arrays)


def test_paired_difference_hand_computed():
    d = paired_difference({0: 50.0, 1: 52.0, 2: 51.0, 3: 40.0}, {0: 51.0, 1: 52.5, 2: 50.0})
    assert d.seeds == [0, 1, 2] and d.diffs == [1.0, 0.5, -1.0]  # seed 3 has no partner: left out
    assert d.mean == pytest.approx(1 / 6) and (d.wins, d.losses) == (2, 1)
    # sd = sqrt(((5/6)^2 + (1/3)^2 + (7/6)^2) / 2) = sqrt(13/12); t(0.975, 2) = 4.302652729911275
    half = 4.302652729911275 * np.sqrt(13 / 12) / np.sqrt(3)
    assert d.ci == pytest.approx((1 / 6 - half, 1 / 6 + half))
    one = paired_difference({0: 1.0}, {0: 3.0})
    assert one.mean == 2.0 and one.ci is None and one.wins == 1


def test_study_groups_by_name_suffix_or_folder_and_seed_from_config(tmp_path):
    runs = [load_run(write_seed_run(tmp_path / f"{name}_s{s}", s)) for s in (2, 0) for name in ("std", "soft")]
    groups = study_groups(runs)
    assert [(g.name, list(g.runs)) for g in groups] == [("std", [0, 2]), ("soft", [0, 2])]

    # paired.sh runs of several seeds in one folder each: grouped by name, seed from the config
    runs = [load_run(write_seed_run(tmp_path / f"seed{s}" / "soft", s)) for s in (0, 1)]
    assert [(g.name, list(g.runs)) for g in study_groups(runs)] == [("soft", [0, 1])]
    # one seed per name: an ordinary comparison, not a study
    assert study_groups([load_run(write_seed_run(tmp_path / n, 0)) for n in ("a", "b")]) is None

    twin = load_run(write_seed_run(tmp_path / "again" / "soft", 1))
    with pytest.raises(ReidError, match=r"of soft both have seed 1.*pass only one"):
        study_groups([*runs, twin])


def test_compare_on_a_study_writes_bands_and_the_table_over_seeds(tmp_path):
    dirs = [write_seed_run(tmp_path / f"{name}_s{s}", s, speed=speed)
            for s in (0, 1, 2) for name, speed in (("std", 1.0), ("soft", 1.3))]
    png, table = compare(dirs, out=tmp_path / "study.png", metrics="train_acc", band="std")
    assert png_size(png) == (600, 400)
    md = png.with_suffix(".md").read_text()
    assert table in md and "band = ±1 std" in md and "| soft − std | rank-1 |" in table
    assert "| std | 0, 1, 2 |" in table and "| soft | 0, 1, 2 |" in table

    fig = study_figure(study_groups([load_run(d) for d in dirs]), metrics=["train_acc"], band="std")
    (ax,) = fig.axes
    for name, band in zip(("std", "soft"), ax.collections):
        curves = np.stack([100 * loadmat(tmp_path / f"{name}_s{s}" / "mini_batch_data.mat")["train_acc"][0]
                           for s in (0, 1, 2)])
        lo, hi = curves.mean(0) - curves.std(0, ddof=1), curves.mean(0) + curves.std(0, ddof=1)
        ys = band.get_paths()[0].vertices[:, 1]
        assert ys.min() == pytest.approx(lo.min()) and ys.max() == pytest.approx(hi.max())
    with pytest.raises(ReidError, match="band 'iqr' is not one of minmax, std"):
        study_figure(study_groups([load_run(d) for d in dirs]), band="iqr")


# --------------------------------------------------------------------------- what a new user trips over


def test_default_output_is_named_after_the_runs_so_calls_do_not_overwrite_each_other(tmp_path, capsys):
    root = tmp_path / "outputs"
    a, b, c = (write_run(root / n, make_arrays(seed=i)) for i, n in enumerate(("standard", "soft", "ls")))
    first, _ = compare([a, b])
    second, _ = compare([a, c])
    assert (first, second) == (root / "compare_standard_vs_soft.png", root / "compare_standard_vs_ls.png")
    assert first.is_file() and first.with_suffix(".md").is_file() and second.is_file()
    study = [write_seed_run(root / f"{n}_s{s}", s) for s in (0, 1) for n in ("std", "soft")]
    assert compare(study, metrics="train_acc")[0] == root / "study_std_vs_soft.png"  # as study.sh names it
    spec = importlib.util.spec_from_file_location("compare_cli", REPO / "scripts" / "compare.py")
    cli = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cli)
    assert cli.main([str(b), str(c)]) == 0
    assert f"wrote {root / 'compare_soft_vs_ls.png'}" in capsys.readouterr().out


def with_eval(arrays: dict, seed: int = 0, **settings) -> dict:
    """``arrays`` whose resolved config has ``seed`` and an ``eval`` section with ``settings``."""
    arrays["config"] = f"seed: {seed}\neval:\n" + "".join(f"  {k}: {str(v).lower()}\n" for k, v in settings.items())
    return arrays


def test_tables_say_which_settings_produced_rank1_and_map(tmp_path):
    """compare's table names each run's evaluation settings: from its results.json, else from its config."""
    plain = write_run(tmp_path / "standard", with_eval(make_arrays(evals=1), distance="cosine", rerank=False,
                                                         flip=True, ap="standard"))
    settings = {"distance": "euclidean", "rerank": True, "flip": False, "ap": "trapezoid"}
    reranked = write_run(tmp_path / "soft", make_arrays(evals=1),
                         results={"rank1": 0.6, "mAP": 0.5, "epoch": 1, "settings": settings})
    not_evaluated = write_run(tmp_path / "new", make_arrays(evals=0))
    table = summary_table([load_run(d) for d in (plain, reranked, not_evaluated)])
    header, _, *rows = table.splitlines()
    assert header.split("|")[-2].strip() == "evaluated with"
    evaluated = [row.split("|")[-2].strip() for row in rows]
    assert evaluated == ["cosine distance, no re-ranking, flip, AP standard",
                         "euclidean distance, re-ranking, no flip, AP trapezoid", "-"]

    dirs = []
    for s in (0, 1):
        for name, rerank in (("a", False), ("b", True)):
            arrays = with_eval(make_arrays(seed=s, evals=1), seed=s, distance="cosine", rerank=rerank, flip=True,
                               ap="standard")
            dirs.append(write_run(tmp_path / f"{name}_s{s}", arrays))
    study = compare(dirs, out=tmp_path / "study.png", metrics="train_acc")[1].splitlines()
    assert study[0].split("|")[-2].strip() == "evaluated with"
    assert study[2].endswith("| cosine distance, no re-ranking, flip, AP standard |")
    assert study[3].endswith("| cosine distance, re-ranking, flip, AP standard |")
    # a .mat without the settings (not written by train.py) says so rather than guessing
    bare = summary_table([load_run(write_run(tmp_path / "bare", make_arrays(evals=1)))]).splitlines()[2]
    assert bare.endswith("| settings not recorded |")


def test_format_results_names_the_settings():
    from reid.evaluation import format_results

    r = {"rank1": 0.5, "rank5": 0.6, "rank10": 0.7, "mAP": 0.4, "num_valid_queries": 3,
         "settings": {"distance": "cosine", "rerank": True, "flip": True, "ap": "standard"}}
    assert format_results(r).splitlines()[0] == "evaluated with: cosine distance, re-ranking, flip, AP standard"
    legacy = {k: v for k, v in r.items() if k != "settings"} | {"distance": "euclidean", "rerank": False,
                                                                "ap_rule": "trapezoid"}
    assert format_results(legacy).splitlines()[0] == "evaluated with: euclidean distance, no re-ranking, AP trapezoid"


def test_val_panels_have_integer_ticks_and_epoch_boundaries(tmp_path):
    from reid.analysis.plot import epoch_boundaries

    dirs = [write_seed_run(tmp_path / f"a_s{s}", s, epochs=3, n_val=40, val_batch=16) for s in (0, 1)]
    runs = [load_run(d) for d in dirs]
    # 3 val batches per epoch (16, 16, 8): epochs start at 0-based 3 and 6, i.e. between batches 3|4 and 6|7
    assert epoch_boundaries(runs, "val_acc", (0, 9)) == [3.5, 6.5]
    assert epoch_boundaries(runs, "val_acc", (4, 9)) == [6.5]
    fig = study_figure(study_groups(runs), metrics=["val_acc", "train_acc"])
    val_ax, train_ax = fig.axes
    fig.canvas.draw()
    for ax in (val_ax, train_ax):
        ticks = ax.get_xticks()
        assert np.all(ticks == np.round(ticks)), ticks
    marks = [line for line in val_ax.lines if line.get_label() == "epoch boundary" or line.get_linestyle() == ":"]
    assert sorted(float(line.get_xdata()[0]) for line in marks) == [3.5, 6.5]
    assert not [line for line in train_ax.lines if line.get_linestyle() == ":"]


def test_study_without_val_data_draws_no_val_panel_and_no_row_of_dashes(tmp_path):
    """data.val_per_id: 0 logs no val mini-batch: the default panels and the tables leave val out."""
    dirs = []
    for s in (0, 1):
        for name in ("std", "soft"):
            arrays = make_arrays(seed=s, evals=1)
            for key in ("val_loss", "val_acc", "val_epoch", "val_batch_size"):
                arrays[key] = np.zeros((1, 0))
            arrays["config"] = f"seed: {s}\n"
            dirs.append(write_run(tmp_path / f"{name}_s{s}", arrays))
    png, table = compare(dirs, out=tmp_path / "study.png")
    assert png_size(png) == (1200, 400)  # train_loss and train_acc only
    assert "final val acc" not in table
    assert not [line for line in table.splitlines() if line.startswith("| soft − std") and "| - | - |" in line]
    assert "| soft − std | rank-1 |" in table


def test_settings_tag_names_what_differs_from_the_runs_own():
    from reid.evaluation import settings_tag

    own = {"distance": "cosine", "rerank": False, "flip": True, "ap": "standard"}
    assert settings_tag(own, own) == ""  # the run's own settings: results.json itself
    assert settings_tag({**own, "rerank": True}, own) == "rerank"
    assert settings_tag({**own, "distance": "euclidean", "flip": False}, own) == "euclidean_noflip"
    assert settings_tag({**own, "ap": "trapezoid"}, {**own, "rerank": True}) == "norerank_trapezoid"


# --------------------------------------------------------------------------- runs of different criteria


def with_criterion_free(arrays: dict, offset: float, seed: int = 0) -> dict:
    """``arrays`` with the criterion-free keys of a run whose loss is its plain cross entropy + ``offset``
    (0: cross entropy; about 9 for soft cross entropy), and random per-epoch ECE/confidence/feature ratio."""
    rng = np.random.default_rng(seed + 100)
    epochs = np.unique(arrays["val_epoch"][0])
    out = dict(arrays)
    out["train_nll"] = arrays["train_loss"] - offset
    out["val_nll"] = arrays["val_loss"] - offset
    out["val_summary_epoch"] = epochs.reshape(1, -1)
    for key in ("val_ece", "val_confidence", "val_feature_ratio"):
        out[key] = rng.uniform(0.05, 0.95, epochs.size).reshape(1, -1)
    return out


def drawn_panels(monkeypatch) -> list[list[str]]:
    """The titles of the panels of every figure the analysis writes (one list per figure), and its suptitle."""
    from reid.analysis import plot

    figures, save = [], plot._save

    def spy(fig, out_path, fmt):
        figures.append([ax.get_title() for ax in fig.axes if ax.get_visible()] + [fig._suptitle.get_text()])
        return save(fig, out_path, fmt)

    monkeypatch.setattr(plot, "_save", spy)
    return figures


def table_rows(table: str) -> dict[str, dict[str, str]]:
    """A Markdown table's rows by their first cell, each as {column title: cell}."""
    lines = [line for line in table.splitlines() if line.startswith("| ")]
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    return {cells[0]: dict(zip(header, cells)) for cells in
            ([c.strip() for c in line.strip("|").split("|")] for line in lines[1:])}


def test_runs_of_different_criteria_are_drawn_and_tabulated_with_the_plain_cross_entropy(tmp_path, monkeypatch):
    figures = drawn_panels(monkeypatch)
    root = tmp_path / "outputs"
    a = write_run(root / "standard", with_criterion_free(make_arrays(epochs=4, seed=1, evals=1), 0.0))
    b = write_run(root / "soft", with_criterion_free(make_arrays(epochs=4, seed=2, evals=1,
                                                                 criterion="soft_cross_entropy"), 9.0, seed=2))
    png, table = compare([a, b])
    *panels, title = figures[-1]
    assert panels == ["train_nll", "train_acc", "val_nll", "val_acc"] and png_size(png) == (1200, 800)
    assert "each loss has its own scale" in title
    assert "each criterion's loss has its own scale" in table and "train_nll/val_nll" in table
    rows = table_rows(table)
    assert "final val loss" not in rows["standard"] and "best val loss" not in rows["standard"]  # never ranked by it
    for name, run in (("standard", a), ("soft", b)):
        m = loadmat(run / "mini_batch_data.mat")
        nll = oracle_val_per_epoch(run / "mini_batch_data.mat", "val_nll")
        best = min(nll, key=nll.get)
        assert rows[name]["final val NLL"] == f"{nll[4]:.4f}"
        assert rows[name]["best val NLL"] == f"{nll[best]:.4f} (ep {best})"
        assert rows[name]["val ECE"] == f"{100 * m['val_ece'][0, -1]:.2f}%"
        assert rows[name]["val confidence"] == f"{100 * m['val_confidence'][0, -1]:.2f}%"
        assert rows[name]["feature ratio"] == f"{m['val_feature_ratio'][0, -1]:.4f}"
    # asked for, the losses are drawn
    compare_main = runpy_main()
    assert compare_main([str(a), str(b), "--metrics", "train_loss,val_loss", "--out", str(tmp_path / "l.png")]) == 0
    assert figures[-1][:-1] == ["train_loss", "val_loss"]


def test_runs_of_one_criterion_keep_the_loss_panels_and_columns(tmp_path, monkeypatch):
    figures = drawn_panels(monkeypatch)
    a = write_run(tmp_path / "a", with_criterion_free(make_arrays(seed=1), 0.0))
    b = write_run(tmp_path / "b", with_criterion_free(make_arrays(seed=2), 0.0, seed=2))
    _, table = compare([a, b], out=tmp_path / "same.png")
    *panels, title = figures[-1]
    assert panels == ["train_loss", "train_acc", "val_loss", "val_acc"] and "scale" not in title
    rows = table_rows(table)
    assert {"final val loss", "best val loss", "final val NLL", "val ECE"} <= set(rows["a"])
    assert "scale" not in table and "note:" not in table


def test_a_mat_from_before_the_criterion_free_keys_still_compares_with_a_note(tmp_path, monkeypatch, capsys):
    figures = drawn_panels(monkeypatch)
    old = write_run(tmp_path / "old", make_arrays(seed=1))  # no train_nll, val_nll, val_ece ...
    new = write_run(tmp_path / "new", with_criterion_free(make_arrays(seed=2, criterion="soft_cross_entropy"), 9.0))
    assert runpy_main()([str(old), str(new), "--out", str(tmp_path / "mixed.png")]) == 0
    out = capsys.readouterr().out
    assert figures[-1][:-1] == ["train_loss", "train_acc", "val_loss", "val_acc"]  # old has no NLL to draw
    notes = [line for line in out.splitlines() if line.startswith("note:")]
    assert len(notes) == 1 and notes[0].startswith("note: old: no train_nll/val_nll/val_ece") and "own loss" in notes[0]
    rows = table_rows(out)
    assert rows["old"]["final val NLL"] == rows["old"]["val ECE"] == "-" and rows["new"]["val ECE"] != "-"


def test_the_study_table_gives_mean_and_sd_over_seeds_of_the_final_val_nll_and_ece(tmp_path):
    dirs = []
    for s in (0, 1, 2):
        for name, offset, criterion in (("std", 0.0, "cross_entropy"), ("soft", 9.0, "soft_cross_entropy")):
            arrays = with_criterion_free(make_arrays(seed=s, evals=1, criterion=criterion), offset, seed=s + 10 * (offset > 0))
            arrays["config"] = f"seed: {s}\n"
            dirs.append(write_run(tmp_path / f"{name}_s{s}", arrays))
    _, table = compare(dirs, out=tmp_path / "study.png")
    rows = table_rows(table)
    for name in ("std", "soft"):
        mats = [tmp_path / f"{name}_s{s}" / "mini_batch_data.mat" for s in (0, 1, 2)]
        nll = np.array([oracle_val_per_epoch(m, "val_nll")[3] for m in mats])
        ece = np.array([100 * loadmat(m)["val_ece"][0, -1] for m in mats])
        assert rows[name]["final val NLL"] == f"{nll.mean():.4f} ± {nll.std(ddof=1):.4f}"
        assert rows[name]["final val ECE"] == f"{ece.mean():.2f} ± {ece.std(ddof=1):.2f}%"
    assert "Decisions (mAP, vs std" in table  # decisions stay on retrieval
    assert not [line for line in table.splitlines() if "| soft − std | final val NLL" in line]


def runpy_main():
    import runpy

    return runpy.run_path(str(REPO / "scripts" / "compare.py"))["main"]
