"""What a launch trains: its runs (:class:`Job`, each a ``train.py`` process with its run directory),
how the trainer is called (:class:`TrainerCommand`), and where (:func:`device_slots`).

``scripts/paired.sh`` and ``scripts/study.sh`` plan their runs with these, then run them
locally (:func:`reid.launch.jobs.run_jobs`), on SLURM (:mod:`reid.launch.slurm`), or print
their commands. Run directories are resolved here, in this process, as ``train.py`` resolves them.

Example::

    trainer = TrainerCommand.of("train.py", device="cuda")   # the shell scripts pass --trainer
    job = Job("soft_s0", Path("configs/soft.yaml"), ["seed=0", "output.name=soft_s0"])
    job.resolve()                                             # job.run_dir, job.epochs
    trainer.argv(job)                                         # [python, "train.py", "--config", ...]
    device_slots(["0", "1"], per_gpu=2)                       # ["0", "1", "0", "1"]
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from ..errors import ReidError


class LaunchError(ReidError):
    """A command line or a config the launcher cannot start runs from."""


@dataclass
class Job:
    """One training run: ``label`` names it in the output, ``overrides`` are its ``--set`` values.

    ``run_dir`` and ``epochs`` are filled by :meth:`resolve`.
    """

    label: str
    config: Path
    overrides: list[str]
    run_dir: Path | None = None
    epochs: int | None = None

    def resolve(self) -> None:
        """Read the run directory and the number of epochs that ``train.py --config config --set
        overrides...`` trains; :class:`LaunchError` naming the config and why when it does not load."""
        from ..config import load_config, run_dir

        try:
            cfg = load_config(self.config, list(self.overrides))
        except ReidError as e:
            raise LaunchError(f"cannot resolve the run directory of {self.config}: {e}") from e
        self.run_dir, self.epochs = run_dir(cfg), cfg.train.epochs

    @property
    def log_path(self) -> Path | None:
        """Where the job's output is appended: ``<run_dir>.log``, beside the run directory."""
        return None if self.run_dir is None else self.run_dir.with_name(self.run_dir.name + ".log")


@dataclass
class TrainerCommand:
    """How to call the trainer: ``python`` runs ``script`` with ``args`` (``--resume auto`` ...).

    Example::

        trainer = TrainerCommand.of("train.py", device="cpu")
        trainer.argv(Job("a", Path("configs/soft.yaml"), ["seed=0"]))
        # -> [python, "train.py", "--config", "configs/soft.yaml", "--set", "seed=0", "--resume", "auto",
        #     "--device", "cpu"]
    """

    python: str
    script: Path
    args: list[str]

    @classmethod
    def of(cls, script: str | os.PathLike | None, device: str | None = None) -> "TrainerCommand":
        """``script`` (the trainer, ``train.py``: the launch scripts pass theirs as ``--trainer``) run by
        ``PYTHON`` (default: this interpreter) with ``--resume auto`` and ``--device``."""
        if script is None:
            raise LaunchError("no trainer given: start the launcher through scripts/paired.sh or scripts/study.sh, "
                              "which pass their checkout's train.py, or add --trainer PATH/train.py")
        script = Path(script)
        if not script.is_file():
            raise LaunchError(f"--trainer {script}: no such file; give the path of the project's train.py "
                              "(scripts/paired.sh and scripts/study.sh pass the one of their checkout)")
        args = ["--resume", "auto"] + (["--device", device] if device else [])
        return cls(os.environ.get("PYTHON") or sys.executable, script, args)

    def argv(self, job: Job) -> list[str]:
        """The command line that trains ``job``."""
        return [self.python, str(self.script), "--config", str(job.config),
                *(a for s in job.overrides for a in ("--set", s)), *self.args]


def parse_gpus(text: str | None) -> list[str]:
    """``"0,1"`` -> ``["0", "1"]``; None or ``""`` -> ``[]`` (no pinning).

    Example::

        parse_gpus("0,1")   # -> ["0", "1"]
    """
    if not text:
        return []
    ids = [g.strip() for g in text.split(",")]
    if any(not g or " " in g for g in ids):
        raise LaunchError(f"--gpus {text}: give GPU ids separated by commas, e.g. --gpus 0,1")
    if len(set(ids)) != len(ids):
        raise LaunchError(f"--gpus {text}: a GPU is listed twice; list each once and use --per-gpu to pack runs")
    return ids


def device_slots(gpus: Sequence[str], per_gpu: int = 1, jobs: int = 1) -> list[str | None]:
    """Where runs go: one entry per run that may train at once, its ``CUDA_VISIBLE_DEVICES`` or None.

    With GPUs, ``per_gpu`` runs share each GPU, the GPUs taken in turn so that the first
    runs spread over all of them; without, ``jobs`` runs at once, not pinned.

    Example::

        device_slots(["0", "1"], per_gpu=2)   # -> ["0", "1", "0", "1"]
        device_slots([], jobs=1)              # -> [None]: one run at a time
    """
    if per_gpu < 1 or jobs < 1:
        raise LaunchError(f"runs at once must be at least 1 (got --per-gpu {per_gpu}, --jobs {jobs})")
    if gpus:
        return [g for _ in range(per_gpu) for g in gpus]
    return [None] * jobs


MAX_PER_GPU = 8          # runs packed on one GPU at most: beyond, their host threads compete more than they gain
MEMORY_HEADROOM = 0.9    # share of the GPU's free memory the packed runs may take (the rest: fragmentation, others)
CONTEXT_BYTES = 2**29    # a process's CUDA context and its kernels, beyond what PyTorch's allocator reserves


def runs_per_gpu(free_bytes: int, run_peak_bytes: int) -> tuple[int, str]:
    """How many runs share one GPU (``--per-gpu auto``) and why: as many as fit in ``MEMORY_HEADROOM`` of the
    GPU's free memory at one run's measured peak (plus its CUDA context), at least 1, at most ``MAX_PER_GPU``.

    Example::

        runs_per_gpu(free_bytes=80 * 2**30, run_peak_bytes=9 * 2**30)   # -> (7, "...")
    """
    per_run = run_peak_bytes + CONTEXT_BYTES
    fit = int(MEMORY_HEADROOM * free_bytes // per_run)
    n = max(1, min(MAX_PER_GPU, fit))
    gib = 2**30
    why = (f"{free_bytes / gib:.1f} GiB free, one run's peak {run_peak_bytes / gib:.1f} GiB + "
           f"{CONTEXT_BYTES / gib:.1f} GiB CUDA context: {fit} fit in {MEMORY_HEADROOM:.0%} of the free memory")
    if fit > MAX_PER_GPU:
        why += f", capped at {MAX_PER_GPU} (more runs compete for the host more than they gain)"
    elif fit < 1:
        why += "; one run at a time"
    return n, why


def check_distinct_run_dirs(jobs: Sequence[Job]) -> None:
    """Raise :class:`LaunchError` when two jobs would train into the same run directory."""
    seen: dict[Path, Job] = {}
    for job in jobs:
        if job.run_dir is None:
            continue
        other = seen.setdefault(job.run_dir, job)
        if other is not job:
            raise LaunchError(f"{other.config} and {job.config} both resolve to the run directory {job.run_dir}; "
                              "give them different output.name (or config file names)")
