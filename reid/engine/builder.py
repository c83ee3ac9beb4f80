"""From a validated config to the objects a run needs: data, model, criterion.

Everything a user can get wrong is checked here, cheapest first, before any long
work starts: the dataset layout and split, the criterion's names and parameters,
the model and its weights, then the image caches (which find unreadable images).

Example::

    data = build_data(cfg)                    # lists files, splits, decodes once (cached)
    model = build_model_from_config(cfg, data.num_classes)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..config import Config
from ..data import DATASETS, Sample, TrainValSplit, load_image_cache, split_train_val
from ..data.synthetic import ensure_synthetic
from ..losses import CRITERIA, build_criterion
from ..models import MODELS, build_model


@dataclass
class RetrievalSet:
    """Cached images and labels of one evaluation split (query or gallery)."""

    images: torch.Tensor  # uint8 (N, 3, H, W)
    pids: np.ndarray
    camids: np.ndarray


@dataclass
class RunData:
    split: TrainValSplit
    train_images: torch.Tensor  # uint8 (N_train, 3, H, W), rows in split.train order
    val_images: torch.Tensor    # uint8 (N_val, 3, H, W), rows in split.val order
    train_labels: torch.Tensor  # int64
    val_labels: torch.Tensor
    query: RetrievalSet
    gallery: RetrievalSet

    @property
    def num_classes(self) -> int:
        return self.split.num_classes


def check_names(cfg: Config) -> None:
    """Unknown dataset, model or criterion names fail here, before any file is written."""
    DATASETS.get(cfg.data.name)
    MODELS.get(cfg.model.name)
    for spec in cfg.criterion:
        CRITERIA.get(spec["name"])


def dataset_root(cfg: Config) -> Path:
    """The dataset folder; a synthetic one is generated there on first use."""
    root = Path(cfg.data.root)
    if cfg.data.synthetic is not None:
        ensure_synthetic(root, **cfg.data.synthetic)
    return root


def build_split(cfg: Config) -> tuple[object, TrainValSplit]:
    dataset = DATASETS.get(cfg.data.name)(dataset_root(cfg))
    return dataset, split_train_val(dataset.train, cfg.data.val_per_id, cfg.seed)


def build_data(cfg: Config, dataset: object, split: TrainValSplit, progress: bool = True) -> RunData:
    """Decode every split once (or read the cache) into uint8 tensors."""
    size = tuple(cfg.data.cache_size)
    cache_dir = Path(cfg.data.cache_dir)
    train_all = load_image_cache([s.path for s in dataset.train], size, cache_dir, desc="train", progress=progress)
    row = {s.path: i for i, s in enumerate(dataset.train)}
    train_rows = torch.as_tensor([row[s.path] for s in split.train], dtype=torch.long)
    val_rows = torch.as_tensor([row[s.path] for s in split.val], dtype=torch.long)
    return RunData(
        split=split,
        train_images=train_all[train_rows],
        val_images=train_all[val_rows],
        train_labels=torch.as_tensor(split.train_labels, dtype=torch.long),
        val_labels=torch.as_tensor(split.val_labels, dtype=torch.long),
        query=retrieval_set(dataset.query, size, cache_dir, "query", progress),
        gallery=retrieval_set(dataset.gallery, size, cache_dir, "gallery", progress),
    )


def retrieval_set(samples: list[Sample], size: tuple, cache_dir: Path, desc: str, progress: bool) -> RetrievalSet:
    images = load_image_cache([s.path for s in samples], size, cache_dir, desc=desc, progress=progress)
    return RetrievalSet(images, np.array([s.pid for s in samples]), np.array([s.camid for s in samples]))


def build_model_from_config(cfg: Config, num_classes: int) -> nn.Module:
    m = cfg.model
    return build_model(m.name, num_classes, pretrained=m.pretrained, last_stride=m.last_stride,
                       neck=m.neck, dropout=m.dropout)


def build_criterion_from_config(cfg: Config, split: TrainValSplit, feat_dim: int) -> nn.Module:
    """The configured criterion; ``class_weight: balanced`` reads the split's images per identity."""
    counts = np.bincount(np.asarray(split.train_labels), minlength=split.num_classes).tolist()
    return build_criterion(cfg.criterion, split.num_classes, feat_dim=feat_dim, class_counts=counts)
