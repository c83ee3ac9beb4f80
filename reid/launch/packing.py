"""``study.sh --gpus 0 --per-gpu auto``: how many runs share one GPU, from the GPU's free memory and
one run's measured peak memory (:func:`reid.launch.runs.runs_per_gpu` decides; this module measures).

One run's peak is measured by a probe process on the GPU (``python -m reid.launch.packing CONFIG
[--set ...]``): the study's first run, built as ``train.py`` builds it, trains :data:`PROBE_STEPS`
steps into a temporary run directory and prints the peak memory PyTorch reserved. The free memory is
``nvidia-smi``'s. Both are plain functions, so the CPU tests give stand-ins for them.

Example::

    n, why = choose_per_gpu(["0"], job, trainer)     # e.g. (4, "61.2 GiB free, one run's peak 9.8 GiB ...")
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Callable, Optional, Sequence

from .runs import Job, LaunchError, TrainerCommand, runs_per_gpu

PROBE_STEPS = 5   # steps of the probe run: the first builds the optimiser's state, later ones the autotuned kernels
TAG = "peak_bytes "


def free_gpu_memory(gpu: str) -> int:
    """Free memory of GPU ``gpu`` (its id, as in ``--gpus``) in bytes, from ``nvidia-smi``."""
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=memory.free", "--format=csv,noheader,nounits", "-i", gpu],
                             capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise LaunchError(f"--per-gpu auto: cannot ask nvidia-smi for GPU {gpu}'s free memory ({e}); give "
                          "--per-gpu N instead") from e
    if out.returncode != 0 or not out.stdout.strip().isdigit():
        raise LaunchError(f"--per-gpu auto: nvidia-smi gave no free memory for GPU {gpu} "
                          f"({(out.stderr or out.stdout).strip() or 'no output'}); give --per-gpu N instead")
    return int(out.stdout.strip()) * 2**20  # MiB


def measured_peak_memory(trainer: TrainerCommand, job: Job, gpu: str) -> int:
    """One run's peak memory on GPU ``gpu`` in bytes: ``job``'s config trained :data:`PROBE_STEPS` steps by a
    probe process (the trainer's interpreter, pinned like the study's runs)."""
    cmd = [trainer.python, "-m", "reid.launch.packing", str(job.config), *(a for s in job.overrides
                                                                         for a in ("--set", s))]
    env = dict(os.environ, CUDA_VISIBLE_DEVICES=gpu)
    out = subprocess.run(cmd, capture_output=True, text=True, env=env)
    lines = [line for line in out.stdout.splitlines() if line.startswith(TAG)]
    if out.returncode != 0 or not lines:
        last = (out.stderr.strip().splitlines() or ["no output"])[-1]
        raise LaunchError(f"--per-gpu auto: the probe run of {job.label} on GPU {gpu} failed ({last}); give "
                          "--per-gpu N instead")
    return int(lines[-1][len(TAG):])


def choose_per_gpu(gpus: Sequence[str], job: Job, trainer: TrainerCommand,
                   free: Optional[Callable[[str], int]] = None,
                   peak: Optional[Callable[[TrainerCommand, Job, str], int]] = None) -> tuple[int, str]:
    """Runs per GPU for ``--per-gpu auto`` and why: what fits on the GPU with the least free memory, at the
    peak of ``job`` (the study's first run) measured on it."""
    free, peak = free or free_gpu_memory, peak or measured_peak_memory
    gpu = min(gpus, key=free)
    n, why = runs_per_gpu(free(gpu), peak(trainer, job, gpu))
    return n, f"GPU {gpu}: {why}"


def probe_peak_memory(config: str, sets: list[str], steps: int = PROBE_STEPS) -> int:
    """Train ``steps`` steps of the run ``config`` + ``sets`` describes (into a temporary run directory, on
    CUDA) as train.py would; the peak memory PyTorch reserved, in bytes."""
    import torch

    from ..config import load_config
    from ..engine.builder import build_criterion_from_config, build_data, build_model_from_config, build_split
    from ..engine.device import configure_backends
    from ..engine.distributed import DistInfo
    from ..engine.trainer import Trainer

    cfg = load_config(config, sets)
    configure_backends(cfg.train.deterministic, cfg.train.tf32)
    device = torch.device("cuda")
    dataset, split = build_split(cfg)
    model = build_model_from_config(cfg, split.num_classes)
    criterion = build_criterion_from_config(cfg, split, model.feature_dim)
    data = build_data(cfg, dataset, split, progress=False)
    with tempfile.TemporaryDirectory() as run_dir:
        trainer = Trainer(cfg, Path(run_dir), device, data, model, criterion, DistInfo(), progress=False)
        trainer.net.train()
        for step, idx in enumerate(trainer.sampler.batches(1)[:steps]):
            trainer.run_step(*trainer.train_batch(idx, 1, step))
        torch.cuda.synchronize(device)
    return torch.cuda.max_memory_reserved(device)


def main(argv: Optional[list[str]] = None) -> int:
    p = argparse.ArgumentParser(description="One run's peak GPU memory (study.sh --per-gpu auto's probe).")
    p.add_argument("config")
    p.add_argument("--set", dest="sets", action="append", default=[])
    args = p.parse_args(argv)
    print(f"{TAG}{probe_peak_memory(args.config, args.sets)}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
