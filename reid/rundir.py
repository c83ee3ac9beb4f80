"""What the tools that read a finished run need from its directory, with errors that
say what is missing and how to make it, and the one loader of a run's model (evaluate,
embed, export and ``reid.load_model`` use it).

A run directory (``output.root/output.name``) holds ``config.yaml``,
``checkpoints/last.pt`` and, once evaluated, ``features.mat`` and ``results.json``.

Example::

    >>> cfg = read_run_config("outputs/soft")
    >>> features = run_features_path("outputs/soft")   # outputs/soft/features.mat
    >>> run = load_run_model("outputs/soft", device="cpu")
    >>> run.model, run.cfg, run.state["epoch"], run.device
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

import yaml

from .config import Config, from_dict
from .errors import ReidError

if TYPE_CHECKING:
    import torch


def read_run_config(run_dir: str | Path) -> Config:
    """The resolved config of ``run_dir`` (its ``config.yaml``), validated, its relative paths resolved
    (:func:`resolve_recorded_paths`)."""
    config_file = run_config_file(run_dir)
    cfg = from_dict(yaml.safe_load(config_file.read_text()), origin=str(config_file))
    return resolve_recorded_paths(cfg, run_dir)


def run_config_file(run_dir: str | Path) -> Path:
    """``run_dir/config.yaml``, which must exist: train.py writes it into every run directory."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise ReidError(f"{run_dir}: no such run directory; pass a folder written by train.py (outputs/<name>)")
    config_file = run_dir / "config.yaml"
    if not config_file.is_file():
        raise ReidError(f"{run_dir}: no config.yaml, so it is not a run directory of train.py; pass one")
    return config_file


def training_folder(cfg: Config, run_dir: str | Path) -> Optional[Path]:
    """The folder train.py ran in, when the run directory still sits at the relative
    ``output.root/output.name`` its config records (else None).

    Example::

        >>> training_folder(cfg, "/home/me/reid/outputs/soft")   # output.root: outputs, output.name: soft
        PosixPath('/home/me/reid')
    """
    recorded = Path(cfg.output.root) / (cfg.output.name or Path(run_dir).name)
    if recorded.is_absolute():
        return None
    here = Path(run_dir).resolve()
    n = len(recorded.parts)
    return here.parents[n - 1] if here.parts[-n:] == recorded.parts and len(here.parts) > n else None


def resolve_recorded_paths(cfg: Config, run_dir: str | Path) -> Config:
    """Make the run's relative dataset, cache and plug-in paths usable from any folder: each stays
    as it is when it exists from the current folder, else is taken relative to the folder the run
    was trained in (:func:`training_folder`), so ``data.root: data/synthetic-demo`` still finds the
    checkout's data when a run is evaluated from elsewhere. Changes ``cfg`` in place; returns it."""
    base = training_folder(cfg, run_dir)
    if base is None:
        return cfg

    def resolved(path: str) -> str:
        return path if Path(path).is_absolute() or Path(path).exists() else str(base / path)

    cfg.data.root, cfg.data.cache_dir = resolved(cfg.data.root), resolved(cfg.data.cache_dir)
    for source in cfg.eval.datasets:
        source.root = resolved(source.root)
    cfg.imports = [resolved(m) if m.endswith(".py") else m for m in cfg.imports]
    return cfg


@dataclass
class RunModel:
    """A run's model with its weights loaded, and what it was loaded from."""

    cfg: Config
    state: dict[str, Any]  # the checkpoint (epoch, history, ...)
    model: "torch.nn.Module"
    device: "torch.device"


def load_run_model(run_dir: str | Path, checkpoint: str | Path | None = None, device: str = "auto",
                   cfg: Optional[Config] = None) -> RunModel:
    """The model of ``run_dir``'s checkpoint (``checkpoints/last.pt`` unless ``checkpoint``) on ``device``
    (auto, cpu or cuda), built from ``cfg`` (default: the run's config.yaml, :func:`read_run_config`).

    Example::

        >>> run = load_run_model("outputs/soft", device="cpu")
        >>> run.model(images)
    """
    from .config import import_plugins
    from .engine.builder import build_model_from_config
    from .engine.checkpoint import load_checkpoint
    from .engine.device import resolve_device

    cfg = resolve_recorded_paths(cfg, run_dir) if cfg is not None else read_run_config(run_dir)
    state = load_checkpoint(run_checkpoint_path(run_dir, checkpoint))
    dev = resolve_device(device)
    import_plugins(cfg)
    cfg.model.pretrained = "none"  # the checkpoint holds every weight
    model = build_model_from_config(cfg, checkpoint_num_classes(state, cfg))
    model.load_state_dict(state["model"])
    return RunModel(cfg, state, model.to(dev), dev)


def checkpoint_num_classes(state: dict, cfg: Config) -> int:
    """Identities the model was trained on: its classifier's rows, else the training split's size."""
    weight = state["model"].get("classifier.weight")
    if weight is not None:
        return int(weight.shape[0])
    from .engine.builder import build_split

    return build_split(cfg)[1].num_classes  # a model of another layout: count the identities


def run_checkpoint_path(run_dir: str | Path, checkpoint: str | Path | None = None) -> Path:
    """``checkpoint`` when given, else ``run_dir/checkpoints/last.pt``, which must exist."""
    last = Path(run_dir) / "checkpoints" / "last.pt"
    if checkpoint is not None:
        if not Path(checkpoint).is_file():
            raise ReidError(f"--checkpoint {checkpoint}: no such file; pass an existing .pt file of this run "
                            f"(e.g. {last})")
        return Path(checkpoint)
    if not last.is_file():
        raise ReidError(f"{last}: no checkpoint there, so the run has no model yet; finish training the run first "
                        "(python train.py --config CONFIG --resume auto, with the config it was started with) "
                        "or pass --checkpoint FILE")
    return last


def run_features_path(run_dir: str | Path) -> Path:
    """``run_dir/features.mat``, which must exist (it is written by every evaluation)."""
    path = Path(run_dir) / "features.mat"
    if not path.is_file():
        raise ReidError(f"{run_dir}: no features.mat; evaluate the run first: python -m reid.evaluate {run_dir}")
    return path
