"""Ranked-list pictures of a finished run: ``python -m reid.visualize RUN_DIR``.

One row per query: the query image (blue frame), then its top-K gallery images in
order, each framed green (same identity, another camera: a true match), red (another
identity, distractors included) or grey (junk, or the query's identity seen by the
query's camera: the protocol ignores both). Above the row: the query's file name, its AP
(the run's ``eval.ap`` rule) and the rank of its first true match among the images the
protocol keeps (grey ones do not count), i.e. what rank-1 and mAP are made of.

It reads the run's ``features.mat`` and the dataset named by its ``config.yaml``,
with the run's ``eval.distance`` (and ``eval.rerank``): no model, no GPU, no
extraction. Queries without a true match in the gallery are never picked.

Example::

    python -m reid.visualize outputs/soft                          # 8 random queries, top 10
    python -m reid.visualize outputs/soft --pick worst --queries 4 --top 20 --out worst.png
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from .cli import run_main
from .config import Config
from .data import Sample, decode_image
from .engine.builder import build_dataset
from .errors import ReidError
from .evaluation import compute_distance, rank_metrics, read_features_mat
from .evaluation.features import re_ranking_distance
from .io import atomic_write_with
from .rundir import read_run_config, run_features_path

# Frame colours (RGB).
QUERY = (30, 90, 220)
MATCH = (0, 160, 0)
WRONG = (220, 30, 30)
IGNORED = (160, 160, 160)
BACKGROUND = (255, 255, 255)
TEXT = (0, 0, 0)

# Layout in pixels: each image is shown at CELL_H x CELL_W inside a BORDER-wide frame.
CELL_H, CELL_W = 128, 64
BORDER = 4
GAP = 6            # between two gallery cells
QUERY_GAP = 18     # extra space after the query
MARGIN = 10
LINE = 14          # one line of text
TOP = MARGIN + 2 * LINE + 6   # title and legend lines
ROW_GAP = 10


@dataclass
class QueryRow:
    """One query of the picture: who it is, how it ranked, and its top-K gallery list."""

    index: int             # row of features.mat / position in dataset.query
    sample: Sample
    ap: float              # the eval.ap rule, in [0, 1]
    first_rank: int        # 1-based, among the gallery images the protocol keeps
    gallery: list[int]     # top-K gallery indices, closest first
    colours: list[tuple]   # MATCH, WRONG or IGNORED per gallery index


def _pick_worst(ap: np.ndarray, n: int, seed: int) -> np.ndarray:
    return np.argsort(ap, kind="stable")[:n]


def _pick_best(ap: np.ndarray, n: int, seed: int) -> np.ndarray:
    return np.argsort(-ap, kind="stable")[:n]


def _pick_random(ap: np.ndarray, n: int, seed: int) -> np.ndarray:
    return np.sort(np.random.default_rng(seed).choice(len(ap), size=min(n, len(ap)), replace=False))


# How the queries of the picture are chosen among those with a true match: name -> fn(ap, n, seed).
PICKS: dict[str, Callable[[np.ndarray, int, int], np.ndarray]] = {
    "worst": _pick_worst, "best": _pick_best, "random": _pick_random}


def frame_colour(q_pid: int, q_cam: int, g_pid: int, g_cam: int) -> tuple:
    """MATCH, WRONG or IGNORED for one gallery image of a query, by the Market-1501 protocol."""
    if g_pid == -1 or (g_pid == q_pid and g_cam == q_cam):
        return IGNORED
    return MATCH if g_pid == q_pid else WRONG


def check_matches_dataset(feats: dict, query: Sequence[Sample], gallery: Sequence[Sample], features_file: Path,
                          run_dir: Path) -> None:
    """features.mat rows must be the dataset's query and gallery images, in order."""
    for side, samples, pids, cams in (("query", query, "q_pids", "q_cams"), ("gallery", gallery, "g_pids", "g_cams")):
        same = (len(samples) == len(feats[pids]) and np.array_equal([s.pid for s in samples], feats[pids])
                and np.array_equal([s.camid for s in samples], feats[cams]))
        if not same:
            raise ReidError(f"{features_file}: its {len(feats[pids])} {side} rows are not the {len(samples)} {side} "
                            f"images of the run's dataset; evaluate the run again: python -m reid.evaluate {run_dir}")


def ranked_rows(feats: dict, query: Sequence[Sample], gallery: Sequence[Sample], cfg: Config, queries: int,
                top: int, pick: str, seed: int = 0) -> tuple[list[QueryRow], dict]:
    """The picked queries' rows, and rank_metrics' result (with per-query AP) for all of them."""
    if cfg.eval.rerank:
        dist = re_ranking_distance(feats["qf"], feats["gf"])
    else:
        dist = compute_distance(feats["qf"], feats["gf"], cfg.eval.distance)
    metrics = rank_metrics(dist, feats["q_pids"], feats["q_cams"], feats["g_pids"], feats["g_cams"],
                           max_rank=10, ap=cfg.eval.ap, per_query=True)
    valid = np.flatnonzero(metrics["query_first_rank"] > 0)
    if not len(valid):
        raise ReidError("no query has a true match in the gallery, so there is no ranked list to show")
    chosen = valid[PICKS[pick](metrics["query_ap"][valid], queries, seed)]
    rows = []
    for q in chosen:
        order = np.argsort(dist[q].numpy(), kind="stable")[:top]
        rows.append(QueryRow(int(q), query[q], float(metrics["query_ap"][q]), int(metrics["query_first_rank"][q]),
                             order.tolist(), [frame_colour(query[q].pid, query[q].camid, gallery[j].pid,
                                                           gallery[j].camid) for j in order]))
    return rows, metrics


# ----------------------------------------------------------------------------- drawing

def cell_box(row: int, col: int) -> tuple[int, int, int, int]:
    """Outer box (x0, y0, x1, y1), inclusive, of the frame in ``row`` and column ``col`` (0: the query)."""
    x0 = MARGIN + col * (CELL_W + 2 * BORDER + GAP) + (QUERY_GAP if col else 0)
    y0 = TOP + row * (LINE + CELL_H + 2 * BORDER + LINE + ROW_GAP) + LINE
    return x0, y0, x0 + CELL_W + 2 * BORDER - 1, y0 + CELL_H + 2 * BORDER - 1


def _framed(draw: ImageDraw.ImageDraw, canvas: Image.Image, box: tuple, path: str, colour: tuple) -> None:
    draw.rectangle(box, fill=colour)
    canvas.paste(Image.fromarray(decode_image(path, (CELL_H, CELL_W))), (box[0] + BORDER, box[1] + BORDER))


def _identity(sample: Sample) -> str:
    return "junk" if sample.pid == -1 else f"id {sample.pid} c{sample.camid}"


def render_grid(rows: Sequence[QueryRow], gallery: Sequence[Sample], title: str) -> Image.Image:
    """The picture: a title, a legend, then one framed row per query (see the module docstring)."""
    top = max((len(r.gallery) for r in rows), default=0)
    width = cell_box(0, top)[2] + 1 + MARGIN
    height = cell_box(len(rows), 0)[1] - LINE - ROW_GAP + MARGIN
    canvas = Image.new("RGB", (width, height), BACKGROUND)
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default()
    draw.text((MARGIN, MARGIN), title, fill=TEXT, font=font)
    x = MARGIN
    for colour, meaning in ((MATCH, "same identity, other camera"), (WRONG, "other identity"),
                            (IGNORED, "junk or same camera (ignored by the protocol)")):
        draw.rectangle((x, MARGIN + LINE + 2, x + 9, MARGIN + LINE + 11), fill=colour)
        draw.text((x + 14, MARGIN + LINE), meaning, fill=TEXT, font=font)
        x += 14 + int(draw.textlength(meaning, font=font)) + 16
    for i, row in enumerate(rows):
        qbox = cell_box(i, 0)
        draw.text((qbox[0], qbox[1] - LINE), f"{Path(row.sample.path).name}  {_identity(row.sample)}  "
                  f"AP {100 * row.ap:.1f}%  first true match: rank {row.first_rank}", fill=TEXT, font=font)
        _framed(draw, canvas, qbox, row.sample.path, QUERY)
        draw.text((qbox[0], qbox[3] + 2), "query", fill=TEXT, font=font)
        for k, (j, colour) in enumerate(zip(row.gallery, row.colours), 1):
            box = cell_box(i, k)
            _framed(draw, canvas, box, gallery[j].path, colour)
            draw.text((box[0], box[3] + 2), f"{k} {_identity(gallery[j])}", fill=TEXT, font=font)
    return canvas


# ----------------------------------------------------------------------------- entry points

def visualize_run(run_dir: str | Path, out: str | Path | None = None, queries: int = 8, top: int = 10,
                  pick: str = "random", seed: int = 0) -> tuple[Path, list[QueryRow]]:
    """Draw ``run_dir``'s ranked lists into ``out`` (default RUN_DIR/ranked_<pick>.png); returns it and the rows.

    Example::

        >>> path, rows = visualize_run("outputs/soft", pick="worst", queries=4)
        >>> [(r.sample.path, r.ap, r.first_rank) for r in rows]
    """
    if pick not in PICKS:
        raise ReidError(f"--pick {pick}: choose one of {', '.join(PICKS)}")
    if queries < 1 or top < 1:
        raise ReidError(f"--queries {queries} --top {top}: both must be at least 1")
    run_dir = Path(run_dir)
    cfg = read_run_config(run_dir)
    features_file = run_features_path(run_dir)
    feats = read_features_mat(features_file)
    dataset = build_dataset(cfg.data)
    check_matches_dataset(feats, dataset.query, dataset.gallery, features_file, run_dir)
    rows, metrics = ranked_rows(feats, dataset.query, dataset.gallery, cfg, queries, top, pick, seed)
    distance = "re-ranked" if cfg.eval.rerank else cfg.eval.distance
    title = (f"{run_dir.name}: {pick} {len(rows)} of {metrics['num_valid_queries']} queries, top {top} of "
             f"{len(dataset.gallery)} gallery images ({distance}); mAP({cfg.eval.ap}) {100 * metrics['mAP']:.1f}%")
    image = render_grid(rows, dataset.gallery, title)
    out = Path(out) if out is not None else run_dir / f"ranked_{pick}.png"
    atomic_write_with(out, lambda f: image.save(f, format="PNG"))
    return out, rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m reid.visualize",
                                description="Draw the ranked gallery lists of a run's queries (from features.mat).")
    p.add_argument("run_dir")
    p.add_argument("--queries", type=int, default=8, help="rows, one query each (default 8)")
    p.add_argument("--top", type=int, default=10, help="gallery images per row (default 10)")
    p.add_argument("--pick", default="random", choices=list(PICKS),
                   help="which queries: lowest AP, highest AP, or a seeded random draw (default)")
    p.add_argument("--seed", type=int, default=0, help="seed of --pick random")
    p.add_argument("--out", default=None, help="PNG to write (default RUN_DIR/ranked_<pick>.png)")
    p.add_argument("--debug", action="store_true")
    args = p.parse_args(argv)

    def body() -> int:
        out, rows = visualize_run(args.run_dir, args.out, args.queries, args.top, args.pick, args.seed)
        for row in rows:
            print(f"{Path(row.sample.path).name}: AP {100 * row.ap:.2f}%, first true match at rank {row.first_rank}")
        print(f"wrote {out}")
        return 0

    return run_main(body, debug=args.debug)


if __name__ == "__main__":
    sys.exit(main())
