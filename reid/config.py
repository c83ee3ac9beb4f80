"""Experiment configuration: a typed schema, YAML files with ``_base_`` inheritance,
``--set key.path=value`` overrides, and validation before any work starts.

Every key is documented once, in ``configs/base.yaml``; the dataclasses below are
the schema (types, defaults, allowed values). Experiment files start with
``_base_: base.yaml`` and change only what differs.

Example::

    cfg = load_config("configs/soft.yaml", overrides=["train.epochs=5", "data.size=[128,64]"])
    cfg.train.epochs            # 5
    cfg.criterion               # [{'name': 'soft_cross_entropy', 'weight': 1.0}]
    to_yaml(cfg)                # the resolved config, as saved into the run directory
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import os
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Optional, Union

import yaml

from .errors import ConfigError


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
RESUMABLE_CHANGES = ("train.epochs", "train.compile", "train.deterministic", "train.sync_bn", "train.tensorboard",
                     "eval.", "output.",
                     "checkpoint.", "imports", "data.cache_dir", "data.device_cache")


# ----------------------------------------------------------------------------- loading

class Origins(str):
    """Where a config's values came from: the file (the string itself) and, per dotted key, the
    ``--set`` that gave it; an error about a value names the one it came from (see :func:`_where`)."""

    def __new__(cls, default: str, by_key: dict[str, str] | None = None) -> "Origins":
        self = super().__new__(cls, default)
        self.by_key = dict(by_key or {})
        return self


def _where(origin: str, *keys: str) -> str:
    """The origin of the first of ``keys`` that a ``--set`` gave (or a section or list above it), else the file."""
    by_key = getattr(origin, "by_key", {})
    for key in keys:
        for given, source in reversed(list(by_key.items())):  # the last --set of a key wins
            if key == given or key.startswith((given + ".", given + "[")):
                return source
    return str(origin)


def load_config(path: str | os.PathLike, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Read ``path`` (following ``_base_``), apply ``key.path=value`` overrides, validate.

    An error about a value names where it came from: the config file, or the ``--set`` that gave it.
    """
    path = Path(path)
    raw = _read_with_bases(path, seen=())
    given: dict[str, str] = {}
    for item in overrides:
        key, value = parse_override(item)
        set_dotted(raw, key, value, origin=f"--set {item}")
        given[key] = f"--set {item}"
    cfg = from_dict(raw, origin=Origins(str(path), given))
    cfg.source = str(path)
    return cfg


def from_dict(raw: dict, origin: str = "config") -> Config:
    """Validate a plain dict (as read from YAML) into a :class:`Config`."""
    cfg = _build(Config, raw, prefix="", origin=origin)
    cfg.criterion = normalise_criterion(cfg.criterion, origin)
    _check_cross_field(cfg, origin)
    return cfg


def parse_override(item: str) -> tuple[str, Any]:
    """``"train.epochs=5"`` -> ``("train.epochs", 5)``; the value is parsed as YAML."""
    if "=" not in item:
        raise ConfigError(f"--set {item!r}: expected key.path=value, e.g. --set train.epochs=5")
    key, text = item.split("=", 1)
    try:
        value = yaml.safe_load(text) if text.strip() else None
    except yaml.YAMLError:
        value = text
    return key.strip(), value


def _read_with_bases(path: Path, seen: tuple[Path, ...]) -> dict:
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found; pass an existing file to --config (see configs/)")
    if path.resolve() in seen:
        raise ConfigError(f"{path}: _base_ chain loops back to itself; remove the cycle")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        why = e.strerror if isinstance(e, OSError) else f"not UTF-8 text: {e.reason} at byte offset {e.start}"
        raise ConfigError(f"{path}: cannot read it ({why}); pass a YAML config file") from e
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise ConfigError(f"{path}{where}: not valid YAML ({getattr(e, 'problem', e)}); fix the syntax") from e
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of keys at the top level")
    if isinstance(data.get("imports"), list):
        data["imports"] = [_resolve_import(path, name) for name in data["imports"]]
    base = data.pop("_base_", None)
    if base is None:
        return data
    merged = _read_with_bases((path.parent / base), seen + (path.resolve(),))
    _deep_merge(merged, data)
    return merged


def _resolve_import(config: Path, name: Any) -> Any:
    """A relative ``.py`` path of ``imports`` is taken from the folder of the config file that lists it
    (then, as before, from the working directory); modules are left to the Python path."""
    if not isinstance(name, str) or not name.endswith(".py") or Path(name).is_absolute():
        return name
    beside = config.parent / name
    if beside.is_file():
        return str(beside)
    if Path(name).is_file():
        return name
    raise ConfigError(f"{config}: imports: {name} not found; looked in the config file's folder "
                      f"{config.parent.resolve()} and in the working directory {Path.cwd()}; give the .py path "
                      "relative to the config file")


def _deep_merge(into: dict, new: dict) -> None:
    for key, value in new.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict) and key != "synthetic":
            _deep_merge(into[key], value)
        else:
            into[key] = value


def set_dotted(raw: dict, key: str, value: Any, origin: str) -> None:
    node = raw
    parts = key.split(".")
    for part in parts[:-1]:
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            raise ConfigError(f"{origin}: '{part}' is not a section, so '{key}' cannot be set")
        node = child
    node[parts[-1]] = value


# ----------------------------------------------------------------------------- validation

def all_keys(cls: type = Config, prefix: str = "") -> list[str]:
    """Every valid dotted key of the schema, e.g. ``train.epochs``."""
    keys = []
    for f in dataclasses.fields(cls):
        if f.metadata.get("internal"):
            continue
        hints = typing.get_type_hints(cls)
        if dataclasses.is_dataclass(hints[f.name]):
            keys += all_keys(hints[f.name], f"{prefix}{f.name}.")
        else:
            keys.append(prefix + f.name)
    return keys


def _build(cls: type, raw: Any, prefix: str, origin: str) -> Any:
    if not isinstance(raw, dict):
        raise ConfigError(f"{_where(origin, prefix.rstrip('.'))}: '{prefix.rstrip('.')}' must be a section of keys, "
                          f"got {raw!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if not f.metadata.get("internal")}
    for key in raw:
        if key not in fields:
            raise ConfigError(f"{_where(origin, prefix + str(key))}: unknown key '{prefix}{key}'"
                              f"{_suggest(prefix + str(key))}")
    values = {}
    for name, f in fields.items():
        if name not in raw:
            continue
        key, kind = prefix + name, hints[name]
        if dataclasses.is_dataclass(kind):
            values[name] = _build(kind, raw[name] if raw[name] is not None else {}, key + ".", origin)
        else:
            values[name] = _check_value(key, raw[name], kind, f.metadata, origin)
    return cls(**values)


# Names researchers bring from other code bases, mapped to ours.
SYNONYMS = {"learning_rate": "lr", "base_lr": "lr", "num_epochs": "epochs", "max_epoch": "epochs",
            "wd": "weight_decay", "bs": "batch_size", "lr_backbone": "backbone_lr", "loss": "criterion"}


def _suggest(key: str) -> str:
    """``; did you mean 'optim.lr'?`` for an unknown ``key``: first a key with the same last part (or its
    synonym) in any section, the key's own section first (``train.lr`` -> ``optim.lr``); then the closest
    key of its section; then the closest key or section anywhere."""
    section = key.rsplit(".", 1)[0] + "." if "." in key else ""
    leaf = key.rsplit(".", 1)[-1]
    keys = all_keys()
    for name in dict.fromkeys([leaf, SYNONYMS.get(leaf, leaf)]):
        same_leaf = sorted((k for k in keys if k.rsplit(".", 1)[-1] == name), key=lambda k: not k.startswith(section))
        if same_leaf and same_leaf[0] != key:
            return f"; did you mean '{same_leaf[0]}'?"
    siblings = [k for k in keys if k.startswith(section) and section]
    close = difflib.get_close_matches(key, siblings, n=1, cutoff=0.6)  # same section first
    if close:
        return f"; did you mean '{close[0]}'?"
    valid = keys + sorted({k.split(".")[0] for k in keys})
    close = difflib.get_close_matches(key, valid, n=1, cutoff=0.5)
    return f"; did you mean '{close[0]}'?" if close else "; see configs/base.yaml for the valid keys"


def _check_value(key: str, value: Any, kind: Any, checks: typing.Mapping, origin: str) -> Any:
    value = _coerce(key, value, kind, origin)
    for item in value if isinstance(value, list) else [value]:
        if isinstance(item, bool) or not isinstance(item, (int, float)):
            continue
        if "min" in checks and item < checks["min"]:
            raise ConfigError(f"{_where(origin, key)}: {key} = {value!r} is out of range; it must be >= {checks['min']}")
        if "gt" in checks and item <= checks["gt"]:
            raise ConfigError(f"{_where(origin, key)}: {key} = {value!r} is out of range; it must be > {checks['gt']}")
        if "max" in checks and item > checks["max"]:
            raise ConfigError(f"{_where(origin, key)}: {key} = {value!r} is out of range; it must be <= {checks['max']}")
    return value


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


# Scalar schema types: what a value must be, and how the error describes it.
_SCALARS: dict[type, tuple[Any, str]] = {
    bool: (lambda v: isinstance(v, bool), "true or false"),
    int: (lambda v: _is_number(v) and isinstance(v, int), "an integer"),
    float: (_is_number, "a number"),
    str: (lambda v: isinstance(v, str), "a string"),
    dict: (lambda v: isinstance(v, dict), "a section of keys"),
}


def _coerce(key: str, value: Any, kind: Any, origin: str) -> Any:
    """Check ``value`` against the annotation ``kind``; ints are accepted where floats are."""
    origin_kind = typing.get_origin(kind)
    if kind is Any:
        return value
    if origin_kind in (Union, types.UnionType):
        args = [a for a in typing.get_args(kind) if a is not type(None)]
        if value is None:
            return None
        return _coerce(key, value, args[0], origin)
    if origin_kind is Literal:
        choices = typing.get_args(kind)
        if isinstance(value, bool) and "on" in choices:  # YAML reads a bare on/off as true/false
            value = "on" if value else "off"
        if not any(value == c and isinstance(value, bool) == isinstance(c, bool) for c in choices):
            listed = ", ".join(str(c).lower() if isinstance(c, bool) else str(c) for c in choices)
            raise ConfigError(f"{_where(origin, key)}: {key} = {value!r} is not allowed; choose one of: {listed}")
        return value
    if origin_kind is list:
        (item_kind,) = typing.get_args(kind)
        if dataclasses.is_dataclass(item_kind):
            return _coerce_entries(key, value, item_kind, origin)
        pair = not key.endswith(("milestones", "imports"))
        if not isinstance(value, list) or (pair and len(value) != 2):
            shape = "two " if pair else ""
            raise ConfigError(f"{_where(origin, key)}: {key} = {value!r} must be a list of {shape}{item_kind.__name__}s")
        return [_coerce(key, v, item_kind, origin) for v in value]
    if kind in _SCALARS:
        accepts, described = _SCALARS[kind]
        if not accepts(value):
            raise ConfigError(f"{_where(origin, key)}: {key} = {value!r} must be {described}")
        return float(value) if kind is float else value
    raise TypeError(f"unsupported schema type for {key}: {kind}")  # a bug in the schema, not user input


def _coerce_entries(key: str, value: Any, kind: type, origin: str) -> list:
    """A list of sections (``eval.datasets``): each a mapping of ``kind``'s keys, or a bare name."""
    if not isinstance(value, list):
        raise ConfigError(f"{_where(origin, key)}: {key} = {value!r} must be a list, e.g. [{{name: dukemtmc, root: data}}]")
    entries = []
    for i, item in enumerate(value):
        item = {"name": item} if isinstance(item, str) else item
        where = f"{key}[{i}]"
        valid = [f.name for f in dataclasses.fields(kind)]
        unknown = [k for k in item if k not in valid] if isinstance(item, dict) else []
        if unknown:
            raise ConfigError(f"{_where(origin, where)}: {where}: unknown key '{unknown[0]}'; valid keys: {', '.join(valid)}")
        entries.append(_build(kind, item, prefix=f"{where}.", origin=origin))
    return entries


def import_plugins(cfg: Config) -> None:
    """Import the modules or .py files of ``imports`` (user criteria/models register themselves)."""
    import importlib
    import importlib.util

    for name in cfg.imports:
        try:
            if name.endswith(".py"):
                spec = importlib.util.spec_from_file_location(Path(name).stem, name)
                if spec is None or not Path(name).is_file():
                    raise FileNotFoundError(name)
                module = importlib.util.module_from_spec(spec)
                spec.loader.exec_module(module)  # type: ignore[union-attr]
            else:
                importlib.import_module(name)
        except FileNotFoundError as e:
            raise ConfigError(f"imports: {name} not found in the working directory {Path.cwd()}; give the path of "
                              "the .py file (in a config file: relative to that file)") from e
        except ImportError as e:
            raise ConfigError(f"imports: cannot import {name!r} ({e}); give a module on the Python path (searched: "
                              "the working directory and PYTHONPATH) or the path of a .py file") from e


def normalise_criterion(spec: Any, origin: str = "config") -> list[dict]:
    """``"ce"`` / ``{"name": ...}`` / list of those -> list of dicts, each with a ``name``."""
    items = spec if isinstance(spec, list) else [spec]
    out = []
    for item in items:
        if isinstance(item, str):
            item = {"name": item}
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            raise ConfigError(f"{_where(origin, 'criterion')}: criterion = {spec!r}; give a name or a list of "
                              "{{name: ..., weight: ...}} entries, e.g. criterion: soft_cross_entropy")
        out.append(dict(item))
    if not out:
        raise ConfigError(f"{_where(origin, 'criterion')}: criterion is empty; name at least one, e.g. criterion: cross_entropy")
    return out


def _check_cross_field(cfg: Config, origin: str) -> None:
    if cfg.sampler.name == "pk" and cfg.train.batch_size % cfg.sampler.num_instances:
        raise ConfigError(f"{_where(origin, 'train.batch_size', 'sampler.num_instances')}: train.batch_size = "
                          f"{cfg.train.batch_size} must be a multiple of "
                          f"sampler.num_instances = {cfg.sampler.num_instances} for the pk sampler")
    if cfg.schedule.name == "multistep" and sorted(cfg.schedule.milestones) != cfg.schedule.milestones:
        raise ConfigError(f"{_where(origin, 'schedule.milestones')}: schedule.milestones = {cfg.schedule.milestones} must be increasing")
    keys = [entry.key for entry in cfg.eval.datasets]
    for i, (entry, key) in enumerate(zip(cfg.eval.datasets, keys)):
        if not entry.name:
            raise ConfigError(f"{_where(origin, 'eval.datasets')}: eval.datasets[{i}] has no name; give each entry one, e.g. "
                              "{name: dukemtmc, root: data/DukeMTMC-reID}")
        if entry.label and not re.fullmatch(r"[A-Za-z][A-Za-z0-9_]*", entry.label):
            raise ConfigError(f"{_where(origin, 'eval.datasets')}: eval.datasets[{i}].label = {entry.label!r} must start with a letter and hold "
                              "only letters, digits and _ (it names the .mat's eval_*_<label> keys)")
        if key in keys[:i]:
            raise ConfigError(f"{_where(origin, 'eval.datasets')}: eval.datasets lists {key} twice; results are keyed by the dataset's label "
                              f"(default: its name), so give one of them its own, e.g. label: {key}_2")


# ----------------------------------------------------------------------------- output

def untuned_defaults(cfg: Config) -> list[str]:
    """Warnings for defaults tuned for an ImageNet-pretrained trunk at 256x128 that ``cfg`` keeps outside that
    regime, each naming the key to set: a random trunk still at the trunk's lower rate, and the 256x128 crop
    padding at another input size. The experiment is not changed; a value other than the default silences
    the warning.

    Example::

        untuned_defaults(load_config("configs/standard.yaml", ["model.pretrained=none"]))
        # -> ["model.pretrained is none, yet the random trunk trains at optim.backbone_lr = 0.005 ..."]
    """
    optim, augment, data = OptimConfig(), AugmentConfig(), DataConfig()
    out = []
    lr, backbone_lr = cfg.optim.lr, cfg.optim.backbone_lr
    if cfg.model.pretrained == "none" and backbone_lr == optim.backbone_lr and backbone_lr != lr:
        out.append(f"model.pretrained is none, yet the random trunk trains at optim.backbone_lr = {backbone_lr:g}, "
                   f"{backbone_lr / lr:.2g} x optim.lr = {lr:g} (the default for a pretrained trunk); set "
                   "optim.backbone_lr: null for one rate, or another value")
    size = list(cfg.data.size)
    if size != data.size and cfg.augment.pad == augment.pad > 0:
        same_share = max(1, round(augment.pad * size[1] / data.size[1]))
        out.append(f"augment.pad = {augment.pad} is tuned for data.size {data.size}, and data.size is {size}: the "
                   f"random crop shifts images by up to {augment.pad / size[1]:.0%} of their width; set augment.pad "
                   f"(e.g. {same_share}, the same share of the width)")
    return out


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
