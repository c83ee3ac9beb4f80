"""Checking a config's values before any work starts: types, ranges, unknown keys (with the closest valid
key suggested), criterion entries and rules across keys; every error names the file or ``--set`` that
gave the value (:class:`Origins`). Also the warnings for defaults a run keeps outside their regime.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
import types
import typing
from typing import Any, Literal, Union

from ..errors import ConfigError
from .schema import AugmentConfig, Config, DataConfig, OptimConfig


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
