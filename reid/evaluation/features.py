"""Feature extraction, distances, the evaluation entry point and features.mat.

Example::

    >>> model.eval()
    >>> qf = extract_features(model, q_images, size=(256, 128), device="cuda",
    ...                       flip=True, amp_dtype=torch.float16)
    >>> gf = extract_features(model, g_images, size=(256, 128), device="cuda", flip=True)
    >>> results = evaluate_features(qf, gf, q_pids, q_cams, g_pids, g_cams)
    >>> write_features_mat(run_dir / "features.mat", qf, q_pids, q_cams, gf, g_pids, g_cams)
    >>> evaluate_features(**read_features_mat(run_dir / "features.mat"))   # scored again from the file
"""

from __future__ import annotations

import os
import sys
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import ReidError
from ..io import atomic_savemat
from .ranking import AP_RULES, rank_metrics

DISTANCES = ("cosine", "euclidean")
# features.mat keys (layumi's Person_reID_baseline_pytorch names, read by other re-ID tools)
# and the evaluate_features arguments they hold.
FEATURES_MAT_KEYS = {"query_f": "qf", "query_label": "q_pids", "query_cam": "q_cams",
                     "gallery_f": "gf", "gallery_label": "g_pids", "gallery_cam": "g_cams"}


def _eval_transform(images_uint8: torch.Tensor, size: Sequence[int], channels_last: bool) -> torch.Tensor:
    # Imported at call time: reid.data is another module's, and tests may patch this.
    from ..data import eval_transform

    return eval_transform(images_uint8, size, channels_last=channels_last)


def _to_device(images_uint8: torch.Tensor, device: torch.device) -> torch.Tensor:
    from ..data.augment import async_to

    return async_to(images_uint8, device)


@torch.no_grad()
def extract_features(
    model: torch.nn.Module,
    images_uint8: torch.Tensor,
    size: Sequence[int],
    batch_size: int = 256,
    device: str | torch.device = "cpu",
    flip: bool = False,
    amp_dtype: torch.dtype | None = None,
    channels_last: bool = False,
    progress: bool | None = None,
    desc: str = "features",
    keep_on_device: bool = False,
) -> torch.Tensor:
    """Retrieval features of uint8 images, (N, D) float32, L2-normalised, on the CPU
    (on ``device`` with ``keep_on_device``, e.g. to rank them there).

    Batches are copied to ``device`` through pinned memory without waiting, and transformed
    with ``reid.data.eval_transform`` (resize + normalise, in ``channels_last`` memory when
    asked). With ``flip`` the feature is f(x) + f(hflip(x)) before normalisation. The caller
    puts the model in eval mode (and on ``device``). Features stay on the device until the
    end: at most one copy to the host, no per-batch sync.

    Example::

        >>> f = extract_features(model, images, size=(256, 128), device="cuda", flip=True,
        ...                      amp_dtype=torch.float16, channels_last=True)
    """
    device = torch.device(device)
    n = images_uint8.shape[0]
    if progress is None:
        progress = sys.stderr.isatty()
    chunks: list[torch.Tensor] = []
    starts = range(0, n, batch_size)
    if progress and n > batch_size:
        from tqdm import tqdm

        starts = tqdm(starts, desc=desc, unit="batch", leave=False)
    use_amp = amp_dtype is not None
    for s in starts:
        x = _eval_transform(_to_device(images_uint8[s : s + batch_size], device), size, channels_last)
        with torch.autocast(device_type=device.type, dtype=amp_dtype, enabled=use_amp):
            chunks.append(retrieval_feature(model, x, flip))
    if not chunks:
        return torch.zeros(0, int(getattr(model, "feature_dim", 0)), device=device if keep_on_device else "cpu")
    features = torch.cat(chunks)
    return features if keep_on_device else features.cpu()


def retrieval_feature(model: torch.nn.Module, x: torch.Tensor, flip: bool) -> torch.Tensor:
    """The L2-normalised (N, D) float32 feature of normalised images ``x`` (N, 3, H, W).

    With ``flip`` it is f(x) + f(hflip(x)) before normalisation. The one definition of the
    feature: :func:`extract_features` calls it per batch, the ONNX export traces it.

    Example::

        >>> f = retrieval_feature(model.eval(), eval_transform(images, (256, 128)), flip=True)
    """
    f = model(x).float()
    if flip:
        f = f + model(x.flip(3)).float()
    return F.normalize(f.reshape(f.shape[0], -1), dim=1)


def compute_distance(qf: Any, gf: Any, metric: str = "cosine") -> torch.Tensor:
    """(Q, G) float32 distance matrix on qf's device; smaller = closer.

    cosine: 1 - <q, g> of the L2-normalised features; euclidean: plain ||q - g|| via the
    matmul expansion, clamped at 0 before the square root.

    Example::

        >>> compute_distance(torch.eye(2), torch.eye(2))
        tensor([[0., 1.], [1., 0.]])
    """
    if metric not in DISTANCES:
        raise ValueError(f"metric must be one of {DISTANCES}, got {metric!r}")
    qf = torch.as_tensor(qf).float()
    gf = torch.as_tensor(gf).float().to(qf.device)
    if metric == "cosine":
        qf, gf = F.normalize(qf, dim=1), F.normalize(gf, dim=1)
    dot = _matmul_t(qf, gf)
    if metric == "cosine":
        return torch.sub(1.0, dot, out=dot) if dot.numel() else dot
    dot.mul_(-2).add_((qf * qf).sum(1)[:, None]).add_((gf * gf).sum(1)[None, :])
    return dot.clamp_(min=0).sqrt_()


def _matmul_t(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """a @ b.T. On the CPU through numpy: its OpenBLAS measured ~15-20% faster than
    torch's MKL on this AMD machine for the 3,368 x 19,732 x 2,048 product."""
    if a.device.type == "cpu" and os.environ.get("REID_TORCH_MATMUL") != "1":
        return torch.from_numpy(np.matmul(a.numpy(), b.numpy().T))
    return a @ b.t()


def evaluate_features(
    qf: Any,
    gf: Any,
    q_pids: Any,
    q_cams: Any,
    g_pids: Any,
    g_cams: Any,
    distance: str = "cosine",
    rerank: bool = False,
    ap: str = "standard",
    max_rank: int = 50,
) -> dict[str, Any]:
    """Distance + Market-1501 metrics, returned JSON-ready.

    Returns {"rank1", "rank5", "rank10", "mAP", "mAP_standard", "mAP_trapezoid", "mINP",
    "num_valid_queries", "num_query", "num_gallery", "cmc" (list of max_rank floats),
    "ap_rule", "distance", "rerank"}; metrics are fractions in [0, 1].

    Junk gallery images (pid -1) are dropped before the distance is computed (the protocol
    ignores them anyway; this saves ~20% of the matmul on Market-1501), except with
    ``rerank``, whose neighbourhoods are built from all gallery features as in the reference.

    Example::

        >>> r = evaluate_features(qf, gf, q_pids, q_cams, g_pids, g_cams, distance="cosine")
        >>> r["rank1"], r["mAP"]
    """
    if ap not in AP_RULES:
        raise ValueError(f"ap must be one of {AP_RULES}, got {ap!r}")
    qf = torch.as_tensor(qf)
    gf = torch.as_tensor(gf).to(qf.device)
    if not torch.isfinite(qf).all() or not torch.isfinite(gf).all():
        raise ReidError("the features contain NaN or inf, so nothing can be ranked; the model diverged or its "
                        "checkpoint is broken: evaluate an earlier checkpoint (--checkpoint) or retrain")
    g_pids_np = np.asarray(torch.as_tensor(g_pids).cpu()).reshape(-1)
    g_cams_np = np.asarray(torch.as_tensor(g_cams).cpu()).reshape(-1)
    if rerank:
        dist = re_ranking_distance(qf, gf)
        kept_pids, kept_cams = g_pids_np, g_cams_np
    else:
        keep = g_pids_np != -1
        if not keep.all():
            gf = gf[torch.from_numpy(np.nonzero(keep)[0]).to(gf.device)]
        kept_pids, kept_cams = g_pids_np[keep], g_cams_np[keep]
        dist = compute_distance(qf, gf, distance)
    r = rank_metrics(dist, q_pids, q_cams, kept_pids, kept_cams, max_rank=max(max_rank, 10), ap=ap)
    cmc = [float(v) for v in r["cmc"]]
    return {
        "rank1": cmc[0],
        "rank5": cmc[4],
        "rank10": cmc[9],
        "mAP": float(r["mAP"]),
        "mAP_standard": float(r["mAP_standard"]),
        "mAP_trapezoid": float(r["mAP_trapezoid"]),
        "mINP": float(r["mINP"]),
        "num_valid_queries": int(r["num_valid_queries"]),
        "num_query": int(qf.shape[0]),
        "num_gallery": int(len(g_pids_np)),
        "cmc": cmc[:max_rank],
        "ap_rule": ap,
        "distance": "rerank" if rerank else distance,
        "rerank": bool(rerank),
    }


def re_ranking_distance(qf: torch.Tensor, gf: torch.Tensor) -> torch.Tensor:
    from .rerank import re_ranking

    return re_ranking(qf, gf)


def write_features_mat(
    path: str | os.PathLike, qf: Any, q_pids: Any, q_cams: Any, gf: Any, g_pids: Any, g_cams: Any
) -> None:
    """Write features.mat atomically: query_f/gallery_f (N x D float32), *_label and *_cam (1 x N).

    Example::

        >>> write_features_mat(run_dir / "features.mat", qf, q_pids, q_cams, gf, g_pids, g_cams)
        >>> scipy.io.loadmat(run_dir / "features.mat")["query_f"].shape
        (3368, 2048)
    """

    def feats(f: Any) -> np.ndarray:
        return np.ascontiguousarray(np.asarray(torch.as_tensor(f).detach().cpu(), dtype=np.float32))

    def row(v: Any) -> np.ndarray:
        return np.asarray(torch.as_tensor(v).detach().cpu(), dtype=np.int64).reshape(1, -1)

    atomic_savemat(
        path,
        {
            "query_f": feats(qf),
            "query_label": row(q_pids),
            "query_cam": row(q_cams),
            "gallery_f": feats(gf),
            "gallery_label": row(g_pids),
            "gallery_cam": row(g_cams),
        },
    )


def read_features_mat(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """A features.mat (ours or any tool's with layumi's keys) as evaluate_features arguments.

    Returns {"qf", "gf"} (N x D float32) and {"q_pids", "q_cams", "g_pids", "g_cams"}
    (int64 vectors). A missing file, a missing key or rows that disagree is a ReidError.

    Example::

        >>> r = evaluate_features(**read_features_mat("outputs/soft/features.mat"))
    """
    from scipy.io import loadmat

    try:
        mat = loadmat(path)
    except FileNotFoundError:
        raise ReidError(f"{path}: no such features file; pass a .mat with the keys {', '.join(FEATURES_MAT_KEYS)}")
    except Exception as e:  # scipy raises several types for a file that is not a .mat
        raise ReidError(f"{path}: cannot be read as a MATLAB .mat file ({type(e).__name__}: {e}); "
                        "pass a file written by scipy.io.savemat or MATLAB's save") from e
    missing = [k for k in FEATURES_MAT_KEYS if k not in mat]
    if missing:
        raise ReidError(f"{path}: no {', '.join(missing)}; a features file holds {', '.join(FEATURES_MAT_KEYS)} "
                        "(features N x D, labels and cameras 1 x N)")
    out = {}
    for key, arg in FEATURES_MAT_KEYS.items():
        if key.endswith("_f"):
            out[arg] = np.ascontiguousarray(np.asarray(mat[key], dtype=np.float32))
        else:
            out[arg] = np.asarray(mat[key]).reshape(-1).astype(np.int64)
    for side, f, pids, cams in (("query", "qf", "q_pids", "q_cams"), ("gallery", "gf", "g_pids", "g_cams")):
        if out[f].ndim != 2 or not len(out[f]) == len(out[pids]) == len(out[cams]):
            raise ReidError(f"{path}: {side}_f has shape {out[f].shape} but {side}_label and {side}_cam have "
                            f"{len(out[pids])} and {len(out[cams])} entries; they need one row per image")
    if out["qf"].shape[1] != out["gf"].shape[1]:
        raise ReidError(f"{path}: query_f has {out['qf'].shape[1]} dimensions but gallery_f has "
                        f"{out['gf'].shape[1]}; both must come from the same model")
    return out
