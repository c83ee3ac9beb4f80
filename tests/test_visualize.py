"""Ranked-list pictures: frame colours, AP and first-match rank on a hand-made features
file whose answer is known; the demo run's picture; what a run directory lacks."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy.io import loadmat, savemat

from reid.config import from_dict, to_yaml
from reid.data import Market1501
from reid.evaluate import main as evaluate_main
from reid.visualize import cell_box, main, visualize_run

# Query A (pid 1, camera 1) and the gallery in A's distance order, with what the protocol
# makes of each image for A:
GALLERY = [  # (name, pid, camera, angle from A in degrees)
    ("0001_c1s1_000010_01.png", 1, 1, 0),    # same identity, same camera: ignored (grey)
    ("-1_c2s1_000020_01.png", -1, 2, 10),    # junk: ignored (grey)
    ("0002_c2s1_000030_01.png", 2, 2, 20),   # other identity (red); B's only true match
    ("0001_c2s1_000040_01.png", 1, 2, 30),   # true match (green), kept rank 2
    ("0000_c3s1_000050_01.png", 0, 3, 40),   # distractor (red)
    ("0001_c3s1_000060_01.png", 1, 3, 50),   # true match (green), kept rank 4
]
QUERIES = [("0001_c1s1_000001_00.png", 1, 1, 0),   # A
           ("0002_c1s1_000002_00.png", 2, 1, 20)]  # B: at the angle of its match
# A keeps (red, green, red, green): matches at ranks 2 and 4, standard AP = (1/2 + 2/4) / 2 = 0.5.
# B's match is the closest image: AP 1, rank 1.
EXPECTED = {"0001_c1s1_000001_00.png": (0.5, 2), "0002_c1s1_000002_00.png": (1.0, 1)}
A_FRAMES = ["grey", "grey", "red", "green", "red", "green"]


def colour_name(rgb: tuple) -> str:
    r, g, b = (int(v) for v in rgb[:3])
    if r == g == b and 100 <= r <= 200:
        return "grey"
    if g > 120 and r < 60 and b < 60:
        return "green"
    if r > 180 and g < 80 and b < 80:
        return "red"
    if b > 180 and r < 80:
        return "blue"
    return f"other {rgb}"


def unit(deg: float) -> list[float]:
    return [math.cos(math.radians(deg)), math.sin(math.radians(deg))]


@pytest.fixture
def hand_made_run(tmp_path) -> Path:
    """A run directory (config.yaml + features.mat) over a 2-query, 6-gallery dataset of white images."""
    root = tmp_path / "market"
    white = Image.new("RGB", (32, 64), (255, 255, 255))
    for folder, items in (("bounding_box_train", [("0005_c1s1_000001_01.png", 5, 1, 0)]), ("query", QUERIES),
                          ("bounding_box_test", GALLERY)):
        (root / folder).mkdir(parents=True)
        for name, *_ in items:
            white.save(root / folder / name)
    ds = Market1501(root)
    angle = {name: deg for name, _, _, deg in QUERIES + GALLERY}
    feats = {side: np.array([unit(angle[Path(s.path).name]) for s in samples], dtype=np.float32)
             for side, samples in (("query", ds.query), ("gallery", ds.gallery))}
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text(to_yaml(from_dict({"data": {"root": str(root)}})))
    savemat(run / "features.mat", {
        "query_f": feats["query"], "query_label": [[s.pid for s in ds.query]], "query_cam": [[s.camid for s in ds.query]],
        "gallery_f": feats["gallery"], "gallery_label": [[s.pid for s in ds.gallery]],
        "gallery_cam": [[s.camid for s in ds.gallery]]})
    return run


def frame_colour_at(png: Image.Image, row: int, col: int, white_inside: bool = True) -> str:
    """The colour of the frame's left and top edges (the same, or the test fails)."""
    x0, y0, x1, y1 = cell_box(row, col)
    left = colour_name(png.getpixel((x0 + 1, (y0 + y1) // 2)))
    top = colour_name(png.getpixel(((x0 + x1) // 2, y0 + 1)))
    assert left == top
    if white_inside:
        assert png.getpixel(((x0 + x1) // 2, (y0 + y1) // 2)) == (255, 255, 255)
    return left


def test_frames_ap_and_first_match_of_a_known_answer(hand_made_run, tmp_path, capsys):
    out = tmp_path / "worst.png"
    assert main([str(hand_made_run), "--pick", "worst", "--top", "6", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "0001_c1s1_000001_00.png: AP 50.00%, first true match at rank 2" in printed
    assert "0002_c1s1_000002_00.png: AP 100.00%, first true match at rank 1" in printed
    png = Image.open(out).convert("RGB")
    assert frame_colour_at(png, 0, 0) == "blue" == frame_colour_at(png, 1, 0)  # the queries
    assert [frame_colour_at(png, 0, k) for k in range(1, 7)] == A_FRAMES       # worst first: A
    assert frame_colour_at(png, 1, 1) == "green"                               # B's match first
    assert png.size[0] == cell_box(0, 6)[2] + 1 + 10 and png.size[1] > cell_box(1, 0)[3]


def test_pick_orders_queries_and_rows_carry_ap(hand_made_run, tmp_path):
    _, best = visualize_run(hand_made_run, tmp_path / "b.png", queries=2, top=3, pick="best")
    _, worst = visualize_run(hand_made_run, tmp_path / "w.png", queries=1, top=3, pick="worst")
    path, rand = visualize_run(hand_made_run, queries=5, top=3, pick="random")
    assert path == hand_made_run / "ranked_random.png" and path.is_file()
    assert [Path(r.sample.path).name for r in best] == ["0002_c1s1_000002_00.png", "0001_c1s1_000001_00.png"]
    assert [Path(r.sample.path).name for r in worst] == ["0001_c1s1_000001_00.png"]
    for r in best + rand:
        assert (r.ap, r.first_rank) == pytest.approx(EXPECTED[Path(r.sample.path).name], abs=1e-6)
    assert len(rand) == 2  # all queries with a true match, no more


def test_evaluate_features_scores_the_hand_made_file(hand_made_run, capsys):
    assert evaluate_main(["--features", str(hand_made_run / "features.mat")]) == 0
    table = capsys.readouterr().out.splitlines()
    # rank-1: B only (1/2); standard mAP (0.5 + 1) / 2; trapezoid: A (1/4 + 5/12) / 2 = 1/3, B 1 -> 2/3
    assert table[0] == "evaluated with: cosine distance, no re-ranking, AP standard"  # a features file: no flip
    head, values = table[1].split(), table[2].split()
    got = dict(zip(head[:6], values[:6]))
    assert got == {"rank-1": "50.0%", "rank-5": "100.0%", "rank-10": "100.0%", "mAP(standard)": "75.0%",
                   "mAP(trapezoid)": "66.7%", "mINP": "75.0%"}
    assert values[-1] == "2/2"


def test_demo_run_picture_matches_an_independent_ranking(trained_demo_run, tmp_path, capsys):
    out = tmp_path / "demo.png"
    assert main([str(trained_demo_run), "--pick", "worst", "--queries", "3", "--top", "5", "--out", str(out)]) == 0
    lines = capsys.readouterr().out.splitlines()
    m = loadmat(trained_demo_run / "features.mat")
    qf, gf = m["query_f"], m["gallery_f"]
    qp, qc, gp, gc = (m[k][0] for k in ("query_label", "query_cam", "gallery_label", "gallery_cam"))
    per_query = []
    for q in range(len(qf)):  # plain per-query ranking and AP, numpy only
        order = np.argsort(1 - gf @ qf[q], kind="stable")
        kept = [j for j in order if gp[j] != -1 and not (gp[j] == qp[q] and gc[j] == qc[q])]
        ranks = [r for r, j in enumerate(kept, 1) if gp[j] == qp[q]]
        colours = ["grey" if gp[j] == -1 or (gp[j] == qp[q] and gc[j] == qc[q]) else
                   "green" if gp[j] == qp[q] else "red" for j in order[:5]]
        if ranks:
            per_query.append((sum(i / r for i, r in enumerate(ranks, 1)) / len(ranks), q, ranks[0], colours))
    worst = sorted(per_query)[:3]
    assert [line.split(": ", 1)[1] for line in lines[:3]] == [
        f"AP {100 * ap:.2f}%, first true match at rank {first}" for ap, _, first, _ in worst]
    png = Image.open(out).convert("RGB")
    for row, (_, _, _, colours) in enumerate(worst):
        assert frame_colour_at(png, row, 0, white_inside=False) == "blue"
        assert [frame_colour_at(png, row, k, white_inside=False) for k in range(1, 6)] == colours


def test_missing_features_or_config_say_what_to_do(hand_made_run, tmp_path, capsys):
    (hand_made_run / "features.mat").unlink()
    assert main([str(hand_made_run)]) == 2
    assert capsys.readouterr().err.strip() == (f"error: {hand_made_run}: no features.mat; evaluate the run first: "
                                               f"python -m reid.evaluate {hand_made_run}")
    assert main([str(tmp_path / "nowhere")]) == 2
    assert "no such run directory" in capsys.readouterr().err


def test_features_of_another_dataset_are_refused(hand_made_run, capsys):
    m = loadmat(hand_made_run / "features.mat")
    m["gallery_label"][0, 0] = 7
    savemat(hand_made_run / "features.mat", {k: v for k, v in m.items() if not k.startswith("__")})
    assert main([str(hand_made_run)]) == 2
    err = capsys.readouterr().err
    assert "6 gallery rows are not the 6 gallery images of the run's dataset" in err and "Traceback" not in err
