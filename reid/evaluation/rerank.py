"""k-reciprocal re-ranking (Zhong et al., "Re-ranking Person Re-identification with
k-reciprocal Encoding", CVPR 2017), vectorised and memory-bounded.

Same algorithm as the widely used reference implementation (``re_ranking.py`` of the
paper's code, also in torchreid / fast-reid):

1. original distance = squared Euclidean distance between all query + gallery features,
   each row divided by its maximum;
2. k-reciprocal neighbours R(i, k1) = {j in top-(k1+1) of i : i in top-(k1+1) of j};
   expanded with R(c, round(k1/2)) of each c in R(i, k1) when more than 2/3 of it lies in R(i, k1);
3. V[i, j] = exp(-d(i, j)) normalised over the expanded set (Gaussian kernel);
4. local query expansion: V[i] = mean of V over the top-k2 neighbours of i;
5. Jaccard distance 1 - sum(min(V_i, V_j)) / sum(max(V_i, V_j)) via an inverted index;
6. final = jaccard * (1 - lambda) + original * lambda, query x gallery block.

What differs from the reference is how, not what: no N x N matrix is ever held (N = 23,100
for Market-1501 would need 2.1 GB per float32 copy and the reference keeps four); the
distance rows are computed in chunks and only the top neighbours and row maxima are kept;
V is stored sparse (CSR-like, ~a few hundred non-zeros per row); the Jaccard step expands
(query entry, gallery entry) pairs sharing a column in chunks. Neighbour ties are broken by
``torch.topk`` (the reference's ``np.argsort`` quicksort is not stable either).

Example::

    >>> dist = re_ranking(qf, gf, k1=20, k2=6, lambda_value=0.3)   # (Q, G) float32
"""

from __future__ import annotations

import numpy as np
import torch

# Bounds for the temporary buffers (elements): distance row chunks, gathered features,
# Jaccard pairs.
_ROW_ELEMENTS = 1 << 24
_PAIR_ELEMENTS = 1 << 24


def _sq_dist_rows(x: torch.Tensor, sq: torch.Tensor, r0: int, r1: int) -> torch.Tensor:
    d = torch.addmm(sq[None, :], x[r0:r1], x.t(), alpha=-2.0)
    d += sq[r0:r1, None]
    return d.clamp_(min=0)


def _reciprocal(rank: torch.Tensor, k: int) -> torch.Tensor:
    """mask[i, m] = i is among the top-k of rank[i, m] (rank: (N, >=k) neighbour lists)."""
    fwd = rank[:, :k]
    n = rank.shape[0]
    out = torch.empty(fwd.shape, dtype=torch.bool, device=rank.device)
    step = max(1, _ROW_ELEMENTS // (k * k))
    for r0 in range(0, n, step):
        r1 = min(n, r0 + step)
        back = rank[fwd[r0:r1], :k]  # (n, k, k)
        me = torch.arange(r0, r1, device=rank.device)[:, None, None]
        out[r0:r1] = (back == me).any(2)
    return out


def re_ranking(
    qf: torch.Tensor,
    gf: torch.Tensor,
    k1: int = 20,
    k2: int = 6,
    lambda_value: float = 0.3,
) -> torch.Tensor:
    """k-reciprocal re-ranked (Q, G) distance between query and gallery features.

    Args:
        qf, gf: (Q, D) and (G, D) features (tensors or arrays; the work runs on qf's device).
        k1, k2, lambda_value: the paper's parameters (defaults 20, 6, 0.3).

    Returns:
        (Q, G) float32 tensor on qf's device; smaller = closer.

    Example::

        >>> d = re_ranking(torch.randn(5, 8), torch.randn(12, 8))
        >>> d.shape
        torch.Size([5, 12])
    """
    qf = torch.as_tensor(qf)
    device = qf.device
    gf = torch.as_tensor(gf).to(device)
    x = torch.cat([qf, gf]).float().contiguous()
    num_q, n = qf.shape[0], x.shape[0]
    num_g = n - num_q
    if k1 < 1 or k2 < 1:
        raise ValueError(f"k1 and k2 must be >= 1, got k1={k1}, k2={k2}")
    if num_q == 0 or num_g == 0:
        return torch.zeros(num_q, num_g, device=device)
    k = k1 + 1
    kh = int(np.around(k1 / 2.0)) + 1
    top = min(n, max(k, k2, kh))
    k, kh, k2 = min(k, n), min(kh, n), min(k2, n)
    sq = (x * x).sum(1)

    # Pass 1: row maxima, top neighbours, and the normalised query x gallery block.
    rank = torch.empty(n, top, dtype=torch.int64, device=device)
    rowmax = torch.empty(n, device=device)
    original = torch.empty(num_q, num_g, device=device)
    step = max(1, _ROW_ELEMENTS // n)
    for r0 in range(0, n, step):
        r1 = min(n, r0 + step)
        d = _sq_dist_rows(x, sq, r0, r1)
        rowmax[r0:r1] = d.max(1).values
        vals, idx = torch.topk(d, top, dim=1, largest=False, sorted=True)
        rank[r0:r1] = idx
        if r0 < num_q:
            q1 = min(r1, num_q)
            original[r0:q1] = d[: q1 - r0, num_q:] / rowmax[r0:q1, None]
        del d
    rowmax = torch.where(rowmax > 0, rowmax, torch.ones_like(rowmax))

    # k-reciprocal sets and their expansion.
    r_mask = _reciprocal(rank, k)  # (N, k)
    h_mask = _reciprocal(rank, kh)  # (N, kh)
    fwd = rank[:, :k]
    width = k + k * kh
    exp_idx = torch.empty(n, width, dtype=torch.int64, device=device)
    step = max(1, _ROW_ELEMENTS // (k * kh * k))
    for r0 in range(0, n, step):
        r1 = min(n, r0 + step)
        rset = torch.where(r_mask[r0:r1], fwd[r0:r1], torch.full_like(fwd[r0:r1], -1))  # (m, k)
        cand = fwd[r0:r1]
        hset = rank[cand, :kh]  # (m, k, kh): half-size neighbour lists of the candidates
        hm = h_mask[cand]  # which of them are reciprocal
        inter = ((hset[..., None] == rset[:, None, None, :]).any(-1) & hm).sum(-1)
        accept = r_mask[r0:r1] & (inter.to(torch.float64) > 2.0 / 3.0 * hm.sum(-1).to(torch.float64))
        extra = torch.where(accept[..., None] & hm, hset, torch.full_like(hset, -1))
        exp_idx[r0:r1] = torch.cat([rset, extra.reshape(r1 - r0, k * kh)], 1)
    # Unique per row (np.unique in the reference): sort, blank repeats.
    exp_idx = torch.sort(exp_idx, dim=1).values
    dup = torch.zeros_like(exp_idx, dtype=torch.bool)
    dup[:, 1:] = exp_idx[:, 1:] == exp_idx[:, :-1]
    exp_idx[dup] = -1
    valid = exp_idx >= 0

    # Gaussian-kernel weights over each expanded set.
    v_val = torch.zeros(n, width, device=device)
    step = max(1, _ROW_ELEMENTS // (width * x.shape[1]))
    for r0 in range(0, n, step):
        r1 = min(n, r0 + step)
        j = exp_idx[r0:r1].clamp(min=0)
        dots = torch.einsum("md,mwd->mw", x[r0:r1], x[j])
        d = (sq[r0:r1, None] + sq[j] - 2 * dots).clamp_(min=0) / rowmax[r0:r1, None]
        w = torch.where(valid[r0:r1], torch.exp(-d.double()), torch.zeros((), dtype=torch.float64, device=device))
        v_val[r0:r1] = (w / w.sum(1, keepdim=True)).float()
    v_idx = exp_idx.clamp(min=0)

    # Local query expansion: V[i] <- mean of V over the top-k2 neighbours (sparse rows).
    crow, col, val = _query_expansion(v_idx, v_val, valid, rank[:, :k2], n, k2)

    # Jaccard distance, query rows x gallery rows, through the inverted (column) index.
    jac = _jaccard(crow, col, val, num_q, n)
    return jac * (1 - lambda_value) + original * lambda_value


def _query_expansion(
    v_idx: torch.Tensor, v_val: torch.Tensor, valid: torch.Tensor, nbr: torch.Tensor, n: int, k2: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """CSR (crow, col, val) of V_qe[i] = mean_{m < k2} V[nbr[i, m]] (V itself when k2 == 1)."""
    device = v_idx.device
    cols, vals, counts = [], [], []
    if k2 == 1:
        nbr = torch.arange(n, device=device)[:, None]
    step = max(1, _ROW_ELEMENTS // n)
    for r0 in range(0, n, step):
        r1 = min(n, r0 + step)
        m = r1 - r0
        dense = torch.zeros(m, n, device=device)
        src_rows = nbr[r0:r1]  # (m, k2)
        idx = v_idx[src_rows].reshape(m, -1)
        val = torch.where(valid[src_rows], v_val[src_rows], torch.zeros((), device=device)).reshape(m, -1)
        dense.scatter_add_(1, idx, val)
        if k2 != 1:
            dense /= k2
        rows, c = torch.nonzero(dense, as_tuple=True)
        cols.append(c)
        vals.append(dense[rows, c])
        counts.append(torch.bincount(rows, minlength=m))
    counts = torch.cat(counts)
    crow = torch.zeros(n + 1, dtype=torch.int64, device=device)
    crow[1:] = torch.cumsum(counts, 0)
    return crow, torch.cat(cols), torch.cat(vals)


def _jaccard(crow: torch.Tensor, col: torch.Tensor, val: torch.Tensor, num_q: int, n: int) -> torch.Tensor:
    device = col.device
    num_g = n - num_q
    # Inverted index over gallery rows: for each column, the gallery rows that use it.
    g0 = int(crow[num_q].item())
    g_rows = torch.repeat_interleave(torch.arange(num_g, device=device), crow[num_q + 1 :] - crow[num_q:-1])
    g_col, g_val = col[g0:], val[g0:]
    order = torch.argsort(g_col, stable=True)
    inv_rows, inv_val = g_rows[order], g_val[order]
    col_count = torch.bincount(g_col, minlength=n)
    col_ptr = torch.zeros(n + 1, dtype=torch.int64, device=device)
    col_ptr[1:] = torch.cumsum(col_count, 0)

    q_rows = torch.repeat_interleave(torch.arange(num_q, device=device), crow[1 : num_q + 1] - crow[:num_q])
    q_col, q_val = col[:g0], val[:g0]
    pairs_per_entry = col_count[q_col]
    pairs_per_query = torch.zeros(num_q, dtype=torch.int64, device=device).index_add_(0, q_rows, pairs_per_entry)
    out = torch.empty(num_q, num_g, device=device)
    # Group queries so that each group expands to at most _PAIR_ELEMENTS pairs.
    cum = torch.cumsum(pairs_per_query, 0).cpu().numpy()
    q_start = 0
    entry_ptr = crow[: num_q + 1].cpu().numpy()
    while q_start < num_q:
        base = cum[q_start - 1] if q_start else 0
        q_end = int(np.searchsorted(cum, base + _PAIR_ELEMENTS, side="right"))
        q_end = min(num_q, max(q_end, q_start + 1))
        e0, e1 = int(entry_ptr[q_start]), int(entry_ptr[q_end])
        cnt = pairs_per_entry[e0:e1]
        rep_row = torch.repeat_interleave(q_rows[e0:e1] - q_start, cnt)
        rep_val = torch.repeat_interleave(q_val[e0:e1], cnt)
        # positions inside each column's gallery list
        starts = torch.repeat_interleave(col_ptr[q_col[e0:e1]], cnt)
        offs = torch.arange(rep_row.numel(), device=device) - torch.repeat_interleave(torch.cumsum(cnt, 0) - cnt, cnt)
        pos = starts + offs
        tmin = torch.zeros((q_end - q_start) * num_g, device=device)
        tmin.index_add_(0, rep_row * num_g + inv_rows[pos], torch.minimum(rep_val, inv_val[pos]))
        tmin = tmin.view(q_end - q_start, num_g)
        out[q_start:q_end] = 1 - tmin / (2 - tmin)
        q_start = q_end
    return out
