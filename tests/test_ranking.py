"""Market-1501 ranking metrics: hand-computed cases and agreement with a per-query loop."""

import numpy as np
import pytest
import torch

from reid.evaluation import rank_metrics


def loop_reference(dist, qp, qc, gp, gc, max_rank):
    """Straightforward per-query evaluation (stable sort, explicit filtering)."""
    cmc_sum, ap_std, ap_trap, inp = np.zeros(max_rank), [], [], []
    for q in range(dist.shape[0]):
        order = np.argsort(dist[q], kind="stable")
        kept = [j for j in order if gp[j] != -1 and not (gp[j] == qp[q] and gc[j] == qc[q])]
        ranks = [r for r, j in enumerate(kept) if gp[j] == qp[q]]
        if not ranks:
            continue
        cmc = np.zeros(max_rank)
        cmc[ranks[0] :] = 1
        cmc_sum += cmc
        s = t = 0.0
        for i, r in enumerate(ranks, 1):
            p = i / (r + 1)
            p_old = 1.0 if r == 0 else (i - 1) / r
            s += p
            t += (p + p_old) / 2
        ap_std.append(s / len(ranks))
        ap_trap.append(t / len(ranks))
        inp.append(len(ranks) / (ranks[-1] + 1))
    n = len(inp)
    return {
        "cmc": cmc_sum / n,
        "mAP_standard": np.mean(ap_std),
        "mAP_trapezoid": np.mean(ap_trap),
        "mINP": np.mean(inp),
        "num_valid_queries": n,
    }


def test_hand_computed_protocol():
    # One query: pid 1, camera 1. Gallery in distance order (all distances distinct):
    #   j: 0     1     2     3     4     5
    #  pid 1     -1    0     1     2     1
    #  cam 1     2     3     2     1     3
    # j0: same pid + same camera -> removed; j1: junk -> removed; j2: distractor, kept negative.
    # Kept order: j2 (neg), j3 (match), j4 (neg), j5 (match) -> match ranks r = 1, 3 (0-based).
    dist = np.array([[0.0, 0.1, 0.2, 0.3, 0.4, 0.5]])
    g_p, g_c = [1, -1, 0, 1, 2, 1], [1, 2, 3, 2, 1, 3]
    r = rank_metrics(dist, [1], [1], g_p, g_c, max_rank=5)
    np.testing.assert_array_equal(r["cmc"], [0, 1, 1, 1, 1])
    # standard AP = (1/2 + 2/4) / 2 = 0.5
    assert r["mAP_standard"] == pytest.approx(0.5, abs=1e-12)
    # trapezoid: match 1 at r=1: p=1/2, p_old=0/1=0 -> 0.25; match 2 at r=3: p=2/4, p_old=1/3
    # -> (1/2 + 1/3)/2 = 5/12; AP = (1/4 + 5/12)/2 = 1/3
    assert r["mAP_trapezoid"] == pytest.approx(1 / 3, abs=1e-12)
    assert r["mAP"] == r["mAP_standard"]
    assert rank_metrics(dist, [1], [1], g_p, g_c, ap="trapezoid")["mAP"] == pytest.approx(1 / 3)
    # mINP = 2 matches / (last rank 3 + 1) = 0.5
    assert r["mINP"] == pytest.approx(0.5, abs=1e-12)
    assert r["num_valid_queries"] == 1


def test_first_rank_match_trapezoid_uses_precision_one():
    # Matches at kept ranks 0 and 2: standard = (1 + 2/3)/2 = 5/6;
    # trapezoid = ((1 + 1)/2 + (2/3 + 1/2)/2)/2 = (1 + 7/12)/2 = 19/24.
    dist = np.array([[0.1, 0.2, 0.3]])
    r = rank_metrics(dist, [5], [1], [5, 7, 5], [2, 2, 3], max_rank=3)
    assert r["mAP_standard"] == pytest.approx(5 / 6, abs=1e-12)
    assert r["mAP_trapezoid"] == pytest.approx(19 / 24, abs=1e-12)
    assert r["mINP"] == pytest.approx(2 / 3, abs=1e-12)
    np.testing.assert_array_equal(r["cmc"], [1, 1, 1])


def test_query_without_true_match_is_skipped_and_counted():
    # Query 0's only same-pid gallery image is from its own camera -> skipped.
    # Query 1 (pid 2) matches j1 at rank 0 -> AP 1.
    dist = np.array([[0.1, 0.2], [0.3, 0.1]])
    r = rank_metrics(dist, [1, 2], [1, 1], [1, 2], [1, 2], max_rank=2)
    assert r["num_valid_queries"] == 1
    assert r["mAP"] == pytest.approx(1.0)
    np.testing.assert_array_equal(r["cmc"], [1, 1])
    none = rank_metrics(dist[:1], [1], [1], [1, 2], [1, 2], max_rank=2)
    assert none["num_valid_queries"] == 0 and none["mAP"] == 0.0


def test_ties_broken_by_gallery_order():
    # All distances equal: the kept order is the gallery order.
    # Gallery: j0 neg, j1 match, j2 neg -> match at rank 1: AP 1/2, CMC [0, 1].
    dist = np.zeros((1, 3), dtype=np.float32)
    r = rank_metrics(dist, [1], [1], [3, 1, 4], [2, 2, 2], max_rank=2)
    assert r["mAP"] == pytest.approx(0.5)
    np.testing.assert_array_equal(r["cmc"], [0, 1])
    # Same distances, match first in gallery order -> rank 0.
    r = rank_metrics(dist, [1], [1], [1, 3, 4], [2, 2, 2], max_rank=2)
    assert r["mAP"] == pytest.approx(1.0)


def test_short_gallery_cmc_stays_one_after_first_match():
    r = rank_metrics(np.array([[0.2, 0.1]]), [1], [1], [1, 2], [2, 2], max_rank=5)
    np.testing.assert_array_equal(r["cmc"], [0, 1, 1, 1, 1])


@pytest.mark.parametrize("seed", range(12))
def test_agrees_with_loop_on_random_problems(seed):
    rng = np.random.default_rng(seed)
    nq, ng, ids = rng.integers(1, 40), rng.integers(1, 150), rng.integers(1, 12)
    qp = rng.integers(1, ids + 1, nq)
    qc = rng.integers(1, 7, nq)
    gp = rng.integers(-1, ids + 1, ng)  # junk (-1) and distractors (0) included
    gc = rng.integers(1, 7, ng)
    kind = seed % 3
    if kind == 0:
        dist = rng.random((nq, ng))
    elif kind == 1:
        dist = rng.integers(0, 6, (nq, ng)).astype(np.float64)  # many ties
    else:
        dist = rng.random((nq, ng)).astype(np.float32).round(2)
    max_rank = int(rng.integers(1, 30))
    expected = loop_reference(dist, qp, qc, gp, gc, max_rank)
    for d in (dist, torch.from_numpy(dist)):
        got = rank_metrics(d, qp, qc, gp, gc, max_rank=max_rank)
        assert got["num_valid_queries"] == expected["num_valid_queries"]
        if expected["num_valid_queries"] == 0:
            continue
        for key in ("mAP_standard", "mAP_trapezoid", "mINP"):
            assert abs(got[key] - expected[key]) < 1e-9, key
        np.testing.assert_allclose(got["cmc"], expected["cmc"], atol=1e-9, rtol=0)


@pytest.mark.parametrize("seed", range(4))
def test_per_query_ap_and_first_rank_agree_with_loop(seed):
    rng = np.random.default_rng(100 + seed)
    nq, ng, ids = 25, 80, 6
    qp, qc = rng.integers(1, ids + 1, nq), rng.integers(1, 4, nq)
    gp, gc = rng.integers(-1, ids + 1, ng), rng.integers(1, 4, ng)
    dist = rng.integers(0, 8, (nq, ng)).astype(np.float32)  # ties included
    for rule in ("standard", "trapezoid"):
        got = rank_metrics(dist, qp, qc, gp, gc, ap=rule, per_query=True)
        for q in range(nq):
            one = loop_reference(dist[q : q + 1], qp[q : q + 1], qc[q : q + 1], gp, gc, ng)
            if one["num_valid_queries"] == 0:
                assert np.isnan(got["query_ap"][q]) and got["query_first_rank"][q] == 0
                continue
            assert got["query_ap"][q] == pytest.approx(one[f"mAP_{rule}"], abs=1e-12)
            first = int(np.argmax(one["cmc"] > 0)) + 1  # 1-based rank where the CMC reaches 1
            assert got["query_first_rank"][q] == first
        assert np.nanmean(got["query_ap"]) == pytest.approx(got["mAP"], abs=1e-12)
    assert "query_ap" not in rank_metrics(dist, qp, qc, gp, gc)


def test_chunking_does_not_change_results(monkeypatch):
    import reid.evaluation.ranking as ranking

    rng = np.random.default_rng(1)
    dist = rng.integers(0, 4, (30, 50)).astype(np.float32)
    args = (rng.integers(1, 5, 30), rng.integers(1, 4, 30), rng.integers(-1, 5, 50), rng.integers(1, 4, 50))
    full = rank_metrics(dist, *args)
    monkeypatch.setattr(ranking, "_CHUNK_ELEMENTS", 7)
    small = rank_metrics(dist, *args)
    assert small["mAP"] == full["mAP"] and np.array_equal(small["cmc"], full["cmc"])


def test_rejects_bad_input():
    with pytest.raises(ValueError, match="ap must be"):
        rank_metrics(np.zeros((1, 1)), [1], [1], [1], [2], ap="bogus")
    with pytest.raises(ValueError, match="g_pids"):
        rank_metrics(np.zeros((1, 2)), [1], [1], [1], [2, 2])
    with pytest.raises(ValueError, match="NaN"):
        rank_metrics(np.full((1, 1), np.nan), [1], [1], [1], [2])


@pytest.mark.cuda
def test_cuda_matches_cpu():
    rng = np.random.default_rng(0)
    dist = torch.from_numpy(rng.random((20, 70)).astype(np.float32))
    args = (rng.integers(1, 5, 20), rng.integers(1, 4, 20), rng.integers(-1, 5, 70), rng.integers(1, 4, 70))
    cpu = rank_metrics(dist, *args)
    gpu = rank_metrics(dist.cuda(), *args)
    assert abs(cpu["mAP"] - gpu["mAP"]) < 1e-12
