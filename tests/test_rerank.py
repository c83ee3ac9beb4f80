"""k-reciprocal re-ranking: agreement with a plain transcription of the reference
implementation (Zhong et al., CVPR 2017, re_ranking.py) and a mAP gain on clustered data."""

import numpy as np
import pytest
import torch

from reid.evaluation import rank_metrics, re_ranking


def reference_re_ranking(probFea, galFea, k1=20, k2=6, lambda_value=0.3):
    """The reference algorithm, transcribed loop for loop (features version, squared
    Euclidean original distance). Only change: a stable argsort, so ties are deterministic."""
    query_num = probFea.shape[0]
    all_num = query_num + galFea.shape[0]
    feat = np.concatenate([probFea, galFea]).astype(np.float64)
    sq = (feat**2).sum(1)
    original_dist = np.maximum(sq[:, None] + sq[None, :] - 2 * feat @ feat.T, 0).astype(np.float32)
    original_dist = np.transpose(original_dist / np.max(original_dist, axis=0))
    V = np.zeros_like(original_dist).astype(np.float32)
    initial_rank = np.argsort(original_dist, kind="stable").astype(np.int32)
    gallery_num = all_num
    for i in range(all_num):
        forward_k_neigh_index = initial_rank[i, : k1 + 1]
        backward_k_neigh_index = initial_rank[forward_k_neigh_index, : k1 + 1]
        fi = np.where(backward_k_neigh_index == i)[0]
        k_reciprocal_index = forward_k_neigh_index[fi]
        k_reciprocal_expansion_index = k_reciprocal_index
        for j in range(len(k_reciprocal_index)):
            candidate = k_reciprocal_index[j]
            candidate_forward_k_neigh_index = initial_rank[candidate, : int(np.around(k1 / 2.0)) + 1]
            candidate_backward_k_neigh_index = initial_rank[
                candidate_forward_k_neigh_index, : int(np.around(k1 / 2.0)) + 1
            ]
            fi_candidate = np.where(candidate_backward_k_neigh_index == candidate)[0]
            candidate_k_reciprocal_index = candidate_forward_k_neigh_index[fi_candidate]
            if len(np.intersect1d(candidate_k_reciprocal_index, k_reciprocal_index)) > 2.0 / 3 * len(
                candidate_k_reciprocal_index
            ):
                k_reciprocal_expansion_index = np.append(k_reciprocal_expansion_index, candidate_k_reciprocal_index)
        k_reciprocal_expansion_index = np.unique(k_reciprocal_expansion_index)
        weight = np.exp(-original_dist[i, k_reciprocal_expansion_index])
        V[i, k_reciprocal_expansion_index] = 1.0 * weight / np.sum(weight)
    original_dist = original_dist[:query_num,]
    if k2 != 1:
        V_qe = np.zeros_like(V, dtype=np.float32)
        for i in range(all_num):
            V_qe[i, :] = np.mean(V[initial_rank[i, :k2], :], axis=0)
        V = V_qe
    invIndex = []
    for i in range(gallery_num):
        invIndex.append(np.where(V[:, i] != 0)[0])
    jaccard_dist = np.zeros_like(original_dist, dtype=np.float32)
    for i in range(query_num):
        temp_min = np.zeros(shape=[1, gallery_num], dtype=np.float32)
        indNonZero = np.where(V[i, :] != 0)[0]
        indImages = [invIndex[ind] for ind in indNonZero]
        for j in range(len(indNonZero)):
            temp_min[0, indImages[j]] = temp_min[0, indImages[j]] + np.minimum(
                V[i, indNonZero[j]], V[indImages[j], indNonZero[j]]
            )
        jaccard_dist[i] = 1 - temp_min / (2.0 - temp_min)
    final_dist = jaccard_dist * (1 - lambda_value) + original_dist * lambda_value
    return final_dist[:query_num, query_num:]


@pytest.mark.parametrize("k1,k2,lam", [(20, 6, 0.3), (5, 1, 0.5), (7, 3, 0.0)])
def test_matches_reference_transcription(k1, k2, lam):
    rng = np.random.default_rng(k1)
    # clustered so that the reciprocal expansion actually fires
    centers = rng.normal(size=(8, 16))
    labels = rng.integers(0, 8, 80)
    feats = (centers[labels] + 0.7 * rng.normal(size=(80, 16))).astype(np.float32)
    feats /= np.linalg.norm(feats, axis=1, keepdims=True)
    qf, gf = feats[:20], feats[20:]
    expected = reference_re_ranking(qf, gf, k1, k2, lam)
    got = re_ranking(torch.from_numpy(qf), torch.from_numpy(gf), k1=k1, k2=k2, lambda_value=lam)
    assert got.shape == (20, 60) and got.dtype == torch.float32
    np.testing.assert_allclose(got.numpy(), expected, atol=1e-5, rtol=0)


def test_small_chunks_give_same_result(monkeypatch):
    import reid.evaluation.rerank as rr

    rng = np.random.default_rng(3)
    feats = torch.from_numpy(rng.normal(size=(50, 8)).astype(np.float32))
    full = re_ranking(feats[:10], feats[10:], k1=6, k2=3)
    monkeypatch.setattr(rr, "_ROW_ELEMENTS", 97)
    monkeypatch.setattr(rr, "_PAIR_ELEMENTS", 50)
    small = re_ranking(feats[:10], feats[10:], k1=6, k2=3)
    torch.testing.assert_close(small, full, atol=1e-6, rtol=0)


def test_improves_map_on_clustered_features():
    rng = np.random.default_rng(0)
    ids, per_id, dim = 30, 8, 32
    centers = rng.normal(size=(ids, dim))
    pids = np.repeat(np.arange(1, ids + 1), per_id)
    cams = np.tile(np.arange(1, per_id + 1), ids)
    feats = centers[pids - 1] + 1.1 * rng.normal(size=(len(pids), dim))
    feats = torch.nn.functional.normalize(torch.from_numpy(feats).float(), dim=1)
    is_q = cams == 1
    qf, gf = feats[is_q], feats[~is_q]
    args = (pids[is_q], cams[is_q], pids[~is_q], cams[~is_q])
    base = rank_metrics(1 - qf @ gf.t(), *args)["mAP"]
    rr = rank_metrics(re_ranking(qf, gf), *args)["mAP"]
    assert rr > base + 0.03, (base, rr)
