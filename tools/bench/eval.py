"""Benchmark of the retrieval evaluation on a Market-1501-sized problem.

3,368 queries x 19,732 gallery (3,819 junk, 2,798 distractors, 751 identities over 6
cameras), 2048-d features clustered by identity. Times the distance, ranking + CMC +
mAP (+ mINP), and the whole ``evaluate_features``; compares with a per-query numpy loop
(torchreid's ``eval_market1501`` style), run on a subset of queries and extrapolated.

Usage: ``python scripts/bench.py eval`` or ``python -m tools.bench.eval [--loop-queries 300]``.
"""

from __future__ import annotations

import argparse
from typing import Any

import numpy as np
import torch

from .timing import timed


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--queries", type=int, default=3368)
    parser.add_argument("--gallery", type=int, default=19732)
    parser.add_argument("--junk", type=int, default=3819)
    parser.add_argument("--distractors", type=int, default=2798)
    parser.add_argument("--ids", type=int, default=751)
    parser.add_argument("--dim", type=int, default=2048)
    parser.add_argument("--noise", type=float, default=3.0, help="per-dimension noise / identity-centre spread")
    parser.add_argument("--repeats", type=int, default=3, help="timed repeats (best is reported)")
    parser.add_argument("--loop-queries", type=int, default=300, help="queries the numpy loop runs on")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--seed", type=int, default=0)


def market_like_problem(args: argparse.Namespace) -> dict[str, Any]:
    rng = np.random.default_rng(args.seed)
    n_id_imgs = args.gallery - args.junk - args.distractors
    per_id = rng.multinomial(n_id_imgs - args.ids, np.ones(args.ids) / args.ids) + 1
    g_pids = np.concatenate(
        [np.repeat(np.arange(1, args.ids + 1), per_id), np.zeros(args.distractors, np.int64), -np.ones(args.junk, np.int64)]
    )
    g_cams = rng.integers(1, 7, args.gallery)
    perm = rng.permutation(args.gallery)  # gallery order as in a file listing: mixed
    g_pids, g_cams = g_pids[perm], g_cams[perm]
    q_pids = np.sort(rng.integers(1, args.ids + 1, args.queries))
    q_cams = rng.integers(1, 7, args.queries)
    gen = torch.Generator().manual_seed(args.seed)
    centres = torch.randn(args.ids + 1, args.dim, generator=gen)

    def feats(pids: np.ndarray) -> torch.Tensor:
        f = torch.randn(len(pids), args.dim, generator=gen) * args.noise
        p = torch.from_numpy(pids)
        real = p > 0  # junk and distractors: no identity centre
        f[real] += centres[p[real]]
        return torch.nn.functional.normalize(f, dim=1)

    return dict(qf=feats(q_pids), gf=feats(g_pids), q_pids=q_pids, q_cams=q_cams, g_pids=g_pids, g_cams=g_cams)


def numpy_loop_eval(distmat: np.ndarray, q_pids, q_cams, g_pids, g_cams, max_rank: int = 50) -> dict[str, Any]:
    """Per-query numpy evaluation (the torchreid eval_market1501 pattern: one argsort of the
    whole matrix, then a Python loop over queries with boolean filtering)."""
    indices = np.argsort(distmat, axis=1, kind="stable")
    matches = (g_pids[indices] == q_pids[:, None]).astype(np.int32)
    all_cmc, all_ap = [], []
    for q in range(distmat.shape[0]):
        order = indices[q]
        remove = ((g_pids[order] == q_pids[q]) & (g_cams[order] == q_cams[q])) | (g_pids[order] == -1)
        raw = matches[q][~remove]
        if not raw.any():
            continue
        cmc = raw.cumsum()
        cmc[cmc > 1] = 1
        all_cmc.append(cmc[:max_rank])
        tmp = raw.cumsum() / (np.arange(len(raw)) + 1.0)
        all_ap.append((tmp * raw).sum() / raw.sum())
    return {"cmc": np.mean(all_cmc, 0), "mAP": float(np.mean(all_ap)), "num_valid_queries": len(all_ap)}


def _best(fn, repeats: int, device: torch.device) -> tuple[float, Any]:
    """Seconds of the fastest of ``repeats`` calls of ``fn``, and its result."""
    seconds, out = timed(fn, repeats, device=device)
    return min(seconds), out


def run(args: argparse.Namespace) -> dict[str, Any]:
    from reid.engine.device import resolve_device
    from reid.evaluation import compute_distance, evaluate_features, rank_metrics

    p = market_like_problem(args)
    dev = resolve_device(args.device)
    qf, gf = p["qf"].to(dev), p["gf"].to(dev)
    keep = p["g_pids"] != -1
    gf_kept = gf[torch.from_numpy(np.nonzero(keep)[0]).to(dev)]
    kp, kc = p["g_pids"][keep], p["g_cams"][keep]

    t_dist_full, _ = _best(lambda: compute_distance(qf, gf), args.repeats, dev)
    t_dist, dist = _best(lambda: compute_distance(qf, gf_kept), args.repeats, dev)
    t_rank, r = _best(lambda: rank_metrics(dist, p["q_pids"], p["q_cams"], kp, kc), args.repeats, dev)
    t_total, res = _best(
        lambda: evaluate_features(qf, gf, p["q_pids"], p["q_cams"], p["g_pids"], p["g_cams"]), args.repeats, dev
    )
    # rank_metrics on the full matrix (junk still in) for comparison with evaluators that take it
    dist_full = compute_distance(qf, gf)
    t_rank_full, r_full = _best(
        lambda: rank_metrics(dist_full, p["q_pids"], p["q_cams"], p["g_pids"], p["g_cams"]), args.repeats, dev
    )

    nl = min(args.loop_queries, args.queries)
    sub = np.linspace(0, args.queries - 1, nl).astype(int)
    d_sub = dist_full[torch.from_numpy(sub).to(dev)].cpu().numpy()
    (t_loop_sub,), ref = timed(lambda: numpy_loop_eval(d_sub, p["q_pids"][sub], p["q_cams"][sub], p["g_pids"],
                                                        p["g_cams"]))
    t_loop = t_loop_sub * args.queries / nl
    ours_sub = rank_metrics(d_sub, p["q_pids"][sub], p["q_cams"][sub], p["g_pids"], p["g_cams"])
    map_diff = abs(ours_sub["mAP"] - ref["mAP"])
    cmc_diff = float(np.abs(ours_sub["cmc"] - ref["cmc"]).max())

    size = f"{args.queries} x {args.gallery} ({int(keep.sum())} non-junk), {args.dim}-d"
    rows = [
        ("distance (cosine, junk dropped first)", t_dist),
        ("distance (cosine, full gallery)", t_dist_full),
        ("ranking + CMC + mAP + mINP (non-junk gallery)", t_rank),
        ("ranking + CMC + mAP + mINP (full gallery incl. junk)", t_rank_full),
        ("evaluate_features total (distance + ranking)", t_total),
        (f"numpy per-query loop, ranking only ({nl} queries x {args.queries / nl:.2f})", t_loop),
    ]
    print(f"eval benchmark: {size}, device={dev}, torch threads={torch.get_num_threads()}, best of {args.repeats}")
    for name, t in rows:
        print(f"  {name:<62s} {t:7.3f} s")
    print(
        f"  results: rank-1 {res['rank1']:.4f}  mAP {res['mAP']:.4f}  mAP(trapezoid) {res['mAP_trapezoid']:.4f}"
        f"  mINP {res['mINP']:.4f}  valid {res['num_valid_queries']}"
    )
    print(f"  agreement with the numpy loop on its {nl} queries: |dmAP| = {map_diff:.2e}, max |dCMC| = {cmc_diff:.2e}")
    return {
        "problem": size,
        "device": str(dev),
        "distance_s": t_dist,
        "distance_full_gallery_s": t_dist_full,
        "ranking_s": t_rank,
        "ranking_full_gallery_s": t_rank_full,
        "total_s": t_total,
        "numpy_loop_extrapolated_s": t_loop,
        "numpy_loop_queries": nl,
        "rank1": res["rank1"],
        "mAP": res["mAP"],
        "mAP_trapezoid": res["mAP_trapezoid"],
        "mINP": res["mINP"],
        "num_valid_queries": res["num_valid_queries"],
        "loop_map_abs_diff": map_diff,
        "loop_cmc_max_abs_diff": cmc_diff,
        "full_gallery_mAP_equal": abs(r_full["mAP"] - r["mAP"]) < 1e-12,
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arguments(parser)
    run(parser.parse_args())
