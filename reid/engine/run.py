"""A training run from its config: the run directory and its lock, resuming, the process group,
the data, model and criterion from the registries, then :class:`reid.engine.trainer.Trainer`.

Every random choice derives from ``(seed, epoch, step)``, so a run resumed from any
checkpoint replays exactly what the uninterrupted run would have done, and two
runs with the same seed and different criteria see the same batches.

Example::

    cfg = load_config("configs/demo_soft.yaml", overrides=["train.epochs=2"])
    run_dir = train(cfg, device="cpu", resume="auto")
    loadmat(run_dir / "mini_batch_data.mat")["train_acc"][0]
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import torch

from ..config import (Config, experiment_differences, import_plugins, run_dir as config_run_dir, to_dict, to_yaml,
                      untuned_defaults)
from ..errors import CheckpointError, ConfigError, Interrupted
from ..io import atomic_write_text
from ..machine import machine_line
from . import distributed, graphs
from .board import check_tensorboard_installed
from .builder import build_criterion_from_config, build_data, build_model_from_config, build_split, check_names
from .checkpoint import CheckpointStore, RunLock, is_finished, load_checkpoint
from .cpu_bf16 import require_cpu_bf16
from .device import autocast_dtype, configure_backends, resolve_device
from .stopping import Position
from .trainer import Trainer


def check_device_options(cfg: Config, device: torch.device, world_size: int = 1) -> None:
    autocast_dtype(cfg.train.precision, device)  # fp16 needs CUDA
    if cfg.train.sync_bn is True and device.type != "cuda":
        raise ConfigError("train.sync_bn = true needs CUDA devices (PyTorch's SyncBatchNorm has no CPU "
                          "implementation); set it to auto or false for a CPU run (BatchNorm then stays per process)")
    if cfg.train.cuda_graphs is True and device.type not in graphs.CAPTURE.device_types:
        raise ConfigError(f"train.cuda_graphs = true needs CUDA (a captured step replays CUDA kernels) and this run "
                          f"trains on {device.type}; set it to auto or false, or train on a GPU")
    if cfg.train.batch_size < 2 * world_size:  # BatchNorm cannot train on one image
        if world_size == 1:
            raise ConfigError(f"train.batch_size = {cfg.train.batch_size}: BatchNorm needs at least 2 images per "
                              "training batch; set train.batch_size >= 2")
        raise ConfigError(f"train.batch_size = {cfg.train.batch_size} is the global batch, split over {world_size} "
                          f"processes, and each needs at least 2 images; set train.batch_size >= {2 * world_size} "
                          "or start fewer processes")


def check_cpu_bf16(cfg: Config, device: torch.device, dist: distributed.DistInfo, model: torch.nn.Module,
                   num_classes: int) -> None:
    """bf16 on the CPU trains only where this CPU's bf16 kernels pass the self-test on the run's model (rank 0
    runs it; every rank raises its verdict)."""
    if device.type != "cpu" or autocast_dtype(cfg.train.precision, device) != torch.bfloat16:
        return
    problem = None
    if dist.is_main:
        try:
            require_cpu_bf16(cfg, model, num_classes, dist.world_size)
        except ConfigError as e:
            problem = str(e)
    problem = distributed.broadcast_object(problem)
    if problem:
        raise ConfigError(problem)


def find_resume_state(store: CheckpointStore, resume: Optional[str]) -> tuple[Optional[dict], Optional[Path]]:
    if resume is None:
        if store.last.exists() or store.previous.exists():
            raise CheckpointError(f"{store.folder.parent} already holds a run; continue it with --resume auto, "
                                  "or set output.name to start a new one")
        return None, None
    if resume == "auto":
        return store.load_latest()
    return load_checkpoint(resume), Path(resume)


def check_same_experiment(state: dict, cfg: Config, path: Path) -> None:
    differing = experiment_differences(state["config"], to_dict(cfg))
    if differing:
        raise CheckpointError(f"{path} was written by a different experiment (differs in {', '.join(differing)}); "
                              "resume with the same config, or set output.name to start a new run")


def train(cfg: Config, device: str = "auto", resume: Optional[str] = None, progress: bool = True) -> Path:
    """Train (or resume) the run described by ``cfg``; returns its run directory.

    While it trains, SIGTERM or SIGUSR1 (a cluster's preemption or time-limit warning) stops it at the
    next step boundary: the checkpoint and the ``.mat`` are written, then :class:`reid.signals.Stopped`
    says where (``--resume auto`` continues exactly there). Ctrl-C raises :class:`reid.errors.Interrupted`,
    whose message says where the last checkpoint is and how many steps resuming redoes.
    """
    dev = resolve_device(device)
    configure_backends(cfg.train.deterministic, cfg.train.tf32)  # before CUDA starts (cuBLAS workspace)
    dist = distributed.init_distributed(dev.type)
    try:
        return _train_in_group(cfg, dev, dist, resume, progress)
    finally:  # whether the run finished, stopped, failed or had nothing to do
        distributed.shutdown_distributed()


def _train_in_group(cfg: Config, dev: torch.device, dist: distributed.DistInfo, resume: Optional[str],
                    progress: bool) -> Path:
    if dist.enabled and dev.type == "cuda":
        dev = torch.device("cuda", dist.local_rank)
    import_plugins(cfg)
    check_names(cfg)  # before the run directory is touched
    check_device_options(cfg, dev, dist.world_size)
    if cfg.train.tensorboard:
        check_tensorboard_installed()
    out = config_run_dir(cfg)
    fresh = not out.exists()
    lock = RunLock(out).acquire() if dist.is_main else None
    try:
        return _train_locked(cfg, out, dev, dist, resume, progress)
    except BaseException as e:
        if lock and fresh:
            remove_if_only_lock(out)
        if isinstance(e, KeyboardInterrupt) and not isinstance(e, Interrupted):
            raise Interrupted("interrupted before training started: this start saved nothing; start again with "
                              "--resume auto") from e
        raise
    finally:
        if lock:
            lock.release()


def remove_if_only_lock(run_dir: Path) -> None:
    """Remove a run directory this process created when a failed start left nothing in it but ``.lock``
    (the lock is still held, so no other process is using it)."""
    try:
        if [p.name for p in run_dir.iterdir()] == [".lock"]:
            (run_dir / ".lock").unlink()
            run_dir.rmdir()
    except OSError:
        pass  # another process wrote there meanwhile: leave it


def _train_locked(cfg: Config, out: Path, dev: torch.device, dist: distributed.DistInfo,
                  resume: Optional[str], progress: bool) -> Path:
    store = CheckpointStore(out)
    state, state_path = find_resume_state(store, resume) if dist.is_main else (None, None)
    if dist.enabled:  # every rank continues from the checkpoint rank 0 chose
        state_path = distributed.broadcast_object(state_path)
        if not dist.is_main and state_path is not None:
            state = load_checkpoint(state_path)
    if state is not None:
        check_same_experiment(state, cfg, state_path)
        if is_finished(state, cfg.train.epochs):
            if dist.is_main:
                print(f"{out}: already finished ({state['epoch']} epochs); nothing to do")
                drop_previous(store)
            return out
    dataset, split = build_split(cfg)
    torch.manual_seed(cfg.seed)  # model initialisation
    model = build_model_from_config(cfg, split.num_classes)
    check_cpu_bf16(cfg, dev, dist, model, split.num_classes)  # before the run directory holds anything
    criterion = build_criterion_from_config(cfg, split, model.feature_dim)
    if not dist.is_main:
        distributed.barrier()  # rank 0 decodes and caches the images first; the others read its cache
    data = build_data(cfg, dataset, split, progress=progress and dist.is_main)
    if dist.is_main:
        distributed.barrier()
    if dist.is_main:
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out / "config.yaml", to_yaml(cfg))
    trainer = Trainer(cfg, out, dev, data, model, criterion, dist, progress=progress)
    start = Position()
    if state is not None:
        start = trainer.load_state_dict(state)
        trainer.log(f"resumed from {state_path} at epoch {start.epoch}, step {start.step}")
    else:
        synthetic = "a synthetic " if cfg.data.synthetic is not None else ""
        source = f" ({cfg.source})" if cfg.source else ""
        trainer.log(f"training {out.name}{source}: {split.num_classes} identities, {len(split.train)} train / "
                    f"{len(split.val)} val images of {synthetic}{cfg.data.name} at {dataset.root}, criterion "
                    f"{' + '.join(criterion.names)}, device {dev}")
        trainer.log(f"machine: {machine_line(trainer.machine)}")
        for warning in untuned_defaults(cfg):
            trainer.log(f"warning: {warning}")
    note = distributed.per_process_batchnorm_note(model, cfg.train.sync_bn, dev, dist.world_size)
    if note:
        trainer.log(note)
    try:
        with trainer.stops.listening():  # SIGTERM/SIGUSR1: stop at the next step boundary, checkpointed
            trainer.fit(start)
    except KeyboardInterrupt as e:
        raise Interrupted(trainer.position.interrupted_message()) from e
    if dist.is_main:  # fit returns only once the run has finished, its last checkpoint written
        drop_previous(store)
    return out


def drop_previous(store: CheckpointStore) -> None:
    """A finished run keeps ``checkpoints/last.pt`` alone. ``previous.pt`` is kept while a run trains so that a
    crash during a checkpoint write leaves a checkpoint to resume from; a finished run is not written again
    (one extended to more epochs keeps a ``previous.pt`` again while it trains), so the copy only doubles its
    disk."""
    try:
        store.previous.unlink(missing_ok=True)
    except OSError:
        pass  # a read-only run directory: the run is finished all the same
