"""The config schema: every key with its type, default and allowed values (the dataclasses), and the
config written out (``to_yaml``), compared (``experiment_differences``) and placed (``run_dir``).

Every key is documented once, in ``configs/base.yaml``; these dataclasses mirror it.
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Optional

import yaml


def _opt(default: Any, **checks: Any) -> Any:
    """A field with a default and checks: ``min``, ``max`` (inclusive), ``gt`` (exclusive)."""
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: copy.deepcopy(default), metadata=checks)
    return field(default=default, metadata=checks)


@dataclass
class DatasetConfig:
    """Where one dataset is and how to read it: the first keys of ``data`` and each ``eval.datasets`` entry."""

    name: str = ""
    root: str = "data"
    synthetic: Optional[dict] = None
    cuhk03_boxes: Literal["detected", "labeled"] = "detected"
    pattern: Optional[str] = None


@dataclass
class EvalDatasetConfig(DatasetConfig):
    """An ``eval.datasets`` entry: a dataset, and the label its results are keyed by (default: its name)."""

    label: str = ""

    @property
    def key(self) -> str:
        """What results.json's ``datasets`` and the .mat's ``eval_*_<key>`` call this dataset's results."""
        return self.label or self.name


@dataclass
class DataConfig(DatasetConfig):
    name: str = "market1501"
    root: str = "data/Market-1501-v15.09.15"
    cache_dir: str = "data/cache"
    cache_size: list[int] = _opt([128, 64], min=8)
    size: list[int] = _opt([256, 128], min=8)
    val_per_id: int = _opt(1, min=0)
    device_cache: Literal["auto", "on", "off"] = "auto"


@dataclass
class AugmentConfig:
    flip: float = _opt(0.5, min=0.0, max=1.0)
    pad: int = _opt(10, min=0)
    erasing: float = _opt(0.0, min=0.0, max=1.0)
    erasing_area: list[float] = _opt([0.02, 0.4], gt=0.0, max=1.0)
    erasing_ratio: list[float] = _opt([0.3, 3.33], gt=0.0)


@dataclass
class SamplerConfig:
    name: Literal["random", "pk"] = "random"
    num_instances: int = _opt(4, min=1)


@dataclass
class ModelConfig:
    name: str = "resnet50"
    pretrained: str = "imagenet"
    last_stride: Literal[1, 2] = 2
    neck: Literal["fc512", "bnneck", "none"] = "fc512"
    dropout: float = _opt(0.5, min=0.0, max=1.0)


@dataclass
class OptimConfig:
    name: Literal["sgd", "adam", "adamw"] = "sgd"
    lr: float = _opt(0.05, gt=0.0)
    backbone_lr: Optional[float] = _opt(0.005, gt=0.0)
    momentum: float = _opt(0.9, min=0.0, max=1.0)
    nesterov: bool = True
    weight_decay: float = _opt(5e-4, min=0.0)
    betas: list[float] = _opt([0.9, 0.999], min=0.0, max=1.0)


@dataclass
class ScheduleConfig:
    name: Literal["constant", "step", "multistep", "cosine"] = "step"
    step_size: int = _opt(40, min=1)
    milestones: list[int] = _opt([40, 70], min=1)
    gamma: float = _opt(0.1, gt=0.0)
    min_lr_factor: float = _opt(0.0, min=0.0, max=1.0)
    warmup_epochs: int = _opt(0, min=0)
    warmup_factor: float = _opt(0.01, gt=0.0, max=1.0)


@dataclass
class TrainConfig:
    epochs: int = _opt(60, min=1)
    batch_size: int = _opt(32, min=1)
    precision: Literal["auto", "bf16", "fp16", "fp32"] = "auto"
    channels_last: Literal["auto", "on", "off"] = "auto"
    compile: bool = False
    cuda_graphs: Literal["auto", True, False] = "auto"
    sync_bn: Literal["auto", True, False] = "auto"
    deterministic: bool = False
    tf32: bool = True
    tensorboard: bool = False


@dataclass
class CheckpointConfig:
    every_steps: int = _opt(0, min=0)


@dataclass
class EvalConfig:
    every_epochs: int = _opt(0, min=0)
    batch_size: int = _opt(256, min=1)
    flip: bool = True
    distance: Literal["cosine", "euclidean"] = "cosine"
    rerank: bool = False
    ap: Literal["standard", "trapezoid"] = "standard"
    max_rank: int = _opt(50, min=10)
    datasets: list[EvalDatasetConfig] = _opt([])


@dataclass
class OutputConfig:
    root: str = "outputs"
    name: Optional[str] = None


@dataclass
class Config:
    seed: int = _opt(0, min=0)
    imports: list[str] = _opt([])
    criterion: Any = _opt([{"name": "cross_entropy"}])
    data: DataConfig = field(default_factory=DataConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    sampler: SamplerConfig = field(default_factory=SamplerConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    output: OutputConfig = field(default_factory=OutputConfig)
    # Not a user key: the config file it was loaded from; its stem is the default output.name.
    source: str = field(default="", metadata={"internal": True})


# Keys a resumed run may change without changing the experiment it continues.
# train.sync_bn decides, like the number of processes (which may change too), how BatchNorm sees the
# processes' shares; a run saved with the former default false (or true) resumes under auto.
RESUMABLE_CHANGES = ("train.epochs", "train.compile", "train.cuda_graphs", "train.deterministic", "train.sync_bn", "train.tensorboard",
                     "eval.", "output.",
                     "checkpoint.", "imports", "data.cache_dir", "data.device_cache")


def to_dict(cfg: Config) -> dict:
    out = dataclasses.asdict(cfg)
    out.pop("source", None)
    return out


def to_yaml(cfg: Config) -> str:
    """The resolved config as YAML text (saved as ``config.yaml`` in the run directory)."""
    return yaml.safe_dump(to_dict(cfg), sort_keys=False, default_flow_style=None)


def flatten(d: dict, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in d.items():
        if isinstance(value, dict) and key != "synthetic":
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[prefix + key] = value
    return out


def experiment_differences(saved: dict, current: dict) -> list[str]:
    """Keys whose values differ and that change the experiment (so a resume must refuse).

    A key that ``saved`` lacks (a checkpoint older than the key) counts as its default.
    """
    a, b = {**flatten(to_dict(Config())), **flatten(saved)}, flatten(current)
    keys = sorted(set(a) | set(b))
    return [k for k in keys if a.get(k) != b.get(k) and not k.startswith(RESUMABLE_CHANGES)]


def run_dir(cfg: Config) -> Path:
    """``output.root/output.name``; the name defaults to the config file's stem."""
    return Path(cfg.output.root) / (cfg.output.name or Path(cfg.source).stem or "run")
