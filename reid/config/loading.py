"""Reading a config: YAML files with ``_base_`` inheritance, ``--set key.path=value`` overrides, and the
plug-in modules it imports; :func:`from_dict` builds the checked :class:`Config`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml

from ..errors import ConfigError
from .schema import Config
from .validation import Origins, _build, _check_cross_field, normalise_criterion


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
