"""A model's evaluation on query vs gallery: features extracted on the device, scored there, and
optionally written to ``features.mat``; the same on each cross-domain dataset (``eval.datasets``).

The trainer evaluates with these, and so does ``python -m reid.evaluate`` on a run directory.

Example::

    results = evaluate_model(model, data, cfg, torch.device("cuda"), torch.bfloat16, channels_last=True,
                             features_path=run_dir / "features.mat")
    results["mAP"], results["cmc"][0]
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Callable, Optional

import torch
from torch import nn

from .features import evaluate_features, extract_features, write_features_mat
from .report import eval_settings

if TYPE_CHECKING:
    from ..config import Config
    from ..engine.builder import EvalSet, RetrievalData, RunData


def evaluate_model(model: nn.Module, data: RunData | RetrievalData, cfg: Config, device: torch.device,
                   amp_dtype: Optional[torch.dtype], channels_last: bool, features_path: Optional[Path] = None,
                   between_phases: Callable[[], None] = lambda: None) -> dict:
    """Extract query/gallery features on ``device`` and score them there (optionally writing features.mat).
    ``between_phases`` is called after each extraction: the trainer's raises when told to stop."""
    was_training = model.training
    model.eval()
    kw = dict(size=tuple(cfg.data.size), batch_size=cfg.eval.batch_size, device=device, flip=cfg.eval.flip,
              amp_dtype=amp_dtype, channels_last=channels_last, keep_on_device=True)
    try:
        qf = extract_features(model, data.query.images, **kw)
        between_phases()
        gf = extract_features(model, data.gallery.images, **kw)
        between_phases()
    finally:
        model.train(was_training)
    results = evaluate_features(qf, gf, data.query.pids, data.query.camids, data.gallery.pids, data.gallery.camids,
                                distance=cfg.eval.distance, rerank=cfg.eval.rerank, ap=cfg.eval.ap,
                                max_rank=cfg.eval.max_rank)
    results["settings"] = eval_settings(cfg.eval)
    if features_path is not None:
        write_features_mat(features_path, qf, data.query.pids, data.query.camids,
                           gf, data.gallery.pids, data.gallery.camids)
    return results


def evaluate_datasets(model: nn.Module, eval_sets: list[EvalSet], cfg: Config, device: torch.device,
                      amp_dtype: Optional[torch.dtype], channels_last: bool, progress: bool = True,
                      between_phases: Callable[[], None] = lambda: None) -> dict[str, dict]:
    """Cross-domain: :func:`evaluate_model` on each ``eval.datasets`` entry's query/gallery,
    as ``{name: results}`` (each with its ``root``); images come back from the image cache."""
    out = {}
    for eval_set in eval_sets:
        data = eval_set.load(cfg, progress)
        between_phases()
        out[eval_set.name] = evaluate_model(model, data, cfg, device, amp_dtype, channels_last,
                                            between_phases=between_phases)
        out[eval_set.name]["root"] = eval_set.root
    return out
