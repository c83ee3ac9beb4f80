"""From a validated config to the objects a run needs: data, model, criterion.

Everything a user can get wrong is checked here, cheapest first, before any long
work starts: the dataset layout and split, the criterion's names and parameters,
the model and its weights, then the image caches (which find unreadable images).

Example::

    data = build_data(cfg)                    # lists files, splits, decodes once (cached)
    model = build_model_from_config(cfg, data.num_classes)
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..config import Config, DatasetConfig
from ..data import DATASETS, ReidDataset, Sample, TrainValSplit, load_image_cache, split_train_val
from ..data.synthetic import NotSyntheticError, ensure_synthetic
from ..errors import ConfigError, DatasetError, ReidError
from ..losses import CRITERIA, build_criterion, check_criterion_spec
from ..models import MODELS, build_model


@dataclass
class RetrievalSet:
    """Cached images and labels of one evaluation split (query or gallery)."""

    images: torch.Tensor  # uint8 (N, 3, H, W)
    pids: np.ndarray
    camids: np.ndarray


@dataclass
class RetrievalData:
    """Query and gallery of one evaluation."""

    query: RetrievalSet
    gallery: RetrievalSet


@dataclass
class EvalSet:
    """One ``eval.datasets`` entry: its query and gallery samples, decoded on demand (from the image cache)."""

    name: str
    root: str
    query: list[Sample]
    gallery: list[Sample]

    def load(self, cfg: Config, progress: bool = True) -> RetrievalData:
        size, cache_dir = tuple(cfg.data.cache_size), Path(cfg.data.cache_dir)
        return RetrievalData(retrieval_set(self.query, size, cache_dir, f"{self.name}_query", progress),
                             retrieval_set(self.gallery, size, cache_dir, f"{self.name}_gallery", progress))


@dataclass
class RunData:
    split: TrainValSplit
    train_images: torch.Tensor  # uint8 (N_train, 3, H, W), rows in split.train order
    val_images: torch.Tensor    # uint8 (N_val, 3, H, W), rows in split.val order
    train_labels: torch.Tensor  # int64
    val_labels: torch.Tensor
    query: RetrievalSet
    gallery: RetrievalSet
    eval_sets: list[EvalSet] = field(default_factory=list)  # cross-domain: eval.datasets

    @property
    def num_classes(self) -> int:
        return self.split.num_classes


def check_names(cfg: Config) -> None:
    """Unknown dataset, model or criterion names (and criterion parameters) fail here, before any file is written."""
    for source in [cfg.data, *cfg.eval.datasets]:
        DATASETS.get(source.name)
    MODELS.get(cfg.model.name)
    check_criterion_spec(cfg.criterion)
    for spec in cfg.criterion:
        criterion = CRITERIA.get(spec["name"])
        if getattr(criterion, "needs_identity_batches", False) and cfg.sampler.name != "pk":
            raise ConfigError(f"criterion '{spec['name']}' compares images of the same identity within a batch, which "
                              f"the {cfg.sampler.name} sampler does not guarantee; set sampler.name: pk (P x K batches: "
                              "train.batch_size / sampler.num_instances identities, sampler.num_instances images each)")


def build_dataset(source: DatasetConfig, key: str = "data") -> ReidDataset:
    """The dataset a config entry (``data``, or the ``eval.datasets`` entry named by ``key``) describes;
    with ``synthetic`` set, a synthetic one in that dataset's layout is generated at its root first
    (saying so on stdout: where, and that it is synthetic)."""
    if source.synthetic is not None:
        params = {"layout": source.name, **source.synthetic}
        if params["layout"] != source.name:
            raise ConfigError(f"{key}.synthetic: layout = {params['layout']!r}, but the dataset is {source.name}; "
                              "remove layout, the generator writes the layout of the dataset's name")
        if not Path(source.root).exists():
            print(f"generating a synthetic {source.name} dataset at {Path(source.root).resolve()} ({key}.synthetic "
                  "is set; it is not real data; it is made once and reused)", flush=True)
        try:
            ensure_synthetic(source.root, **params)
        except NotSyntheticError as e:
            # --set reaches no list entry, so an eval.datasets entry is fixed in the config file
            use_it = ("--set data.synthetic=null (or remove synthetic from the config)" if key == "data" else
                      f"remove synthetic from {key} in the config")
            raise DatasetError(f"{source.root}: {key}.synthetic is set, which generates a synthetic dataset at "
                               f"{key}.root, but this folder already holds other data (no synthetic.json); to use "
                               f"the data there, {use_it}; for a synthetic dataset, set {key}.root to a folder that "
                               "does not exist yet") from e
    return DATASETS.get(source.name).from_config(source)


def build_split(cfg: Config) -> tuple[ReidDataset, TrainValSplit]:
    dataset = build_dataset(cfg.data)
    return dataset, split_train_val(dataset.train, cfg.data.val_per_id, cfg.seed)


def build_eval_sets(cfg: Config) -> list[EvalSet]:
    """The query/gallery lists of every ``eval.datasets`` entry; an error names the entry and its key."""
    sets = []
    for i, source in enumerate(cfg.eval.datasets):
        try:
            dataset = build_dataset(source, f"eval.datasets[{i}]")
        except ReidError as e:  # the loaders name data.*; here the keys are the entry's
            message = re.sub(r"\bdata\.(?=root|pattern|cuhk03_boxes|synthetic)", f"eval.datasets[{i}].", str(e))
            raise type(e)(f"eval.datasets[{i}] ({source.key}): {message}") from e
        sets.append(EvalSet(source.key, str(dataset.root), dataset.query, dataset.gallery))
    return sets


def build_data(cfg: Config, dataset: ReidDataset, split: TrainValSplit, progress: bool = True) -> RunData:
    """Decode every split once (or read the cache) into uint8 tensors.

    The ``eval.datasets`` query/gallery images are decoded into the on-disk cache too, so
    an unreadable image fails now rather than after training, but they are not kept in
    memory: the final evaluation reads them back from the cache.
    """
    size = tuple(cfg.data.cache_size)
    cache_dir = Path(cfg.data.cache_dir)
    eval_sets = build_eval_sets(cfg)
    for eval_set in eval_sets:
        eval_set.load(cfg, progress)
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
        eval_sets=eval_sets,
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
