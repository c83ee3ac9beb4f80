"""Launching trainer processes: run directories, device slots, runs at once, the final report.

What ``scripts/paired.sh`` and ``scripts/study.sh`` share. A :class:`Job` is one
``train.py --config C --resume auto --set ...`` process; :func:`run_jobs` runs a list of
them on *slots* (:func:`device_slots`): each slot runs one job at a time, pinned to its GPU
with ``CUDA_VISIBLE_DEVICES``; a job that fails does not stop the others. Run directories
are resolved here, in this process (:meth:`Job.resolve`), as ``train.py`` resolves them.

Example::

    from reid.launch.jobs import Job, TrainerCommand, device_slots, report, run_jobs

    trainer = TrainerCommand.of("train.py", device="cuda")   # the shell scripts pass --trainer
    jobs = [Job("soft_s0", Path("configs/soft.yaml"), ["seed=0", "output.name=soft_s0"])]
    for job in jobs:
        job.resolve()   # job.run_dir, job.epochs
    outcomes = run_jobs(jobs, device_slots(["0", "1"], per_gpu=2), trainer)
    all_finished = report(outcomes)

Each job's output (stdout and stderr) goes to the terminal, prefixed ``[label]`` when
several jobs run at once, and is appended to ``<run_dir>.log`` beside the run directory;
its error line (:class:`reid.cli.ErrorLine`) is what :func:`report` shows for a failed job.
"""

from __future__ import annotations

import os
import queue
import select
import signal
import stat
import subprocess
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Sequence

from ..cli import ErrorLine
from ..errors import ReidError
from ..signals import on_stop_signals


# What wakes run_jobs besides a job's end: a stop signal (SIGTERM, Ctrl-C), or its output closed.
STOP_SIGNAL, OUTPUT_CLOSED = "stop signal", "output closed"


class LaunchError(ReidError):
    """A command line or a config the launcher cannot start runs from."""


class OutputClosed(Exception):
    """The launcher's standard output closed (``| head``): ``stopped`` lists the runs it stopped."""

    def __init__(self, stopped: Sequence["Job"]) -> None:
        super().__init__("standard output closed")
        self.stopped = list(stopped)


@dataclass
class Job:
    """One training run: ``label`` names it in the output, ``overrides`` are its ``--set`` values.

    ``run_dir`` and ``epochs`` are filled by :meth:`resolve`; ``error`` says why the job
    cannot start (its config does not load), in which case it is reported as failed.
    """

    label: str
    config: Path
    overrides: list[str]
    run_dir: Path | None = None
    epochs: int | None = None
    error: str | None = None

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
class Outcome:
    """How a job ended: the trainer's exit code (0 = finished) and its error line (:class:`reid.cli.ErrorLine`)."""

    job: Job
    returncode: int
    error_line: str = ""
    slot: str | None = field(default=None)

    @property
    def ok(self) -> bool:
        return self.returncode == 0


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


def run_jobs(jobs: Sequence[Job], slots: Sequence[str | None], trainer: TrainerCommand,
             out: IO[str] | None = None) -> list[Outcome]:
    """Train ``jobs`` in order, each on the next free slot; return their outcomes in job order.

    A job whose ``error`` is set is not started (its outcome carries the error, exit code 2).
    Ctrl-C or SIGTERM stops every running trainer (each resumes later with ``--resume auto``)
    and raises KeyboardInterrupt once they have exited. When ``out`` closes (the reader of a
    pipe exits, as ``| head`` does), the running trainers are stopped the same way and
    :class:`OutputClosed` is raised, naming them; no further run starts.
    """
    out = out or sys.stdout
    done: queue.SimpleQueue = queue.SimpleQueue()  # a job's end, or a wake-up; put() is safe in a signal handler
    printer = _Printer(out, prefix=len(slots) > 1, on_closed=lambda: done.put((OUTPUT_CLOSED, None)))
    outcomes: dict[int, Outcome] = {i: Outcome(job, 2, job.error) for i, job in enumerate(jobs) if job.error}
    pending = deque(i for i, job in enumerate(jobs) if not job.error)
    free: deque[str | None] = deque(slots)
    running: dict[int, subprocess.Popen] = {}
    watching = threading.Event()
    printer.watch(watching)
    try:
        # A stop signal only wakes the loop, which then stops every trainer it started: a signal that arrived
        # while a trainer was being started cannot leave that one unrecorded, running and holding its lock.
        with on_stop_signals(lambda signum, frame: done.put((STOP_SIGNAL, None)), [signal.SIGTERM, signal.SIGINT]):
            while pending or running:
                while pending and free and not printer.closed:
                    i, slot = pending.popleft(), free.popleft()
                    running[i] = _start(jobs[i], slot, trainer, printer, done, i)
                i, outcome = done.get()
                if i == STOP_SIGNAL:
                    raise KeyboardInterrupt
                if i == OUTPUT_CLOSED:
                    raise BrokenPipeError
                running.pop(i)
                outcomes[i] = outcome
                free.append(outcome.slot)
    except KeyboardInterrupt:
        _stop(running.values())
        raise
    except BrokenPipeError:
        _stop(running.values())
        raise OutputClosed([jobs[i] for i in running]) from None
    finally:
        watching.set()
    return [outcomes[i] for i in range(len(jobs))]


def report(outcomes: Sequence[Outcome], err: IO[str] | None = None, out: IO[str] | None = None) -> bool:
    """Print one line per job (finished, or failed with why); True when every job finished."""
    out, err = out or sys.stdout, err or sys.stderr
    for o in outcomes:
        job = o.job
        if o.ok:
            print(f"run {job.label} ({job.config}): finished: {job.run_dir}", file=out)
        elif job.error:
            print(f"error: run {job.label} ({job.config}) could not start: {job.error}; fix it and rerun this "
                  "command", file=err)
        else:
            print(f"error: run {job.label} ({job.config}) failed with exit code {o.returncode}; its error line: "
                  f"{o.error_line or '(no output)'}; its run directory is {job.run_dir} (output in "
                  f"{job.log_path}); fix it and rerun this command to resume", file=err)
    out.flush()
    err.flush()
    return all(o.ok for o in outcomes)


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


# ----------------------------------------------------------------------------- pieces


class _Printer:
    """Writes the jobs' output lines to ``out`` one whole line at a time.

    Once ``out`` is closed (BrokenPipeError) it writes nothing more and calls ``on_closed``
    once; the output threads go on reading their trainer (into its log), so no trainer
    blocks on a full pipe and every thread still reports its job's end.
    """

    def __init__(self, out: IO[str], prefix: bool, on_closed=lambda: None) -> None:
        self.out, self.prefix, self.lock = out, prefix, threading.Lock()
        self.on_closed, self.closed = on_closed, False

    def line(self, label: str, text: str) -> None:
        self._write((f"[{label}] " if self.prefix else "") + text.rstrip("\n") + "\n")

    def note(self, text: str) -> None:
        self._write(text + "\n")

    def _write(self, text: str) -> None:
        with self.lock:
            if self.closed:
                return
            try:
                self.out.write(text)
                self.out.flush()
            except BrokenPipeError:
                self._found_closed()

    def _found_closed(self) -> None:
        if not self.closed:
            self.closed = True
            self.on_closed()

    def watch(self, stop: threading.Event) -> None:
        """Notice a closed pipe while nothing is printed (a run may be silent for minutes): a thread
        polls ``out``, when it is a pipe, until ``stop`` is set."""
        try:
            fd = self.out.fileno()
            is_pipe = stat.S_ISFIFO(os.fstat(fd).st_mode)
        except (AttributeError, OSError, ValueError):
            return
        if not is_pipe or not hasattr(select, "poll"):
            return

        def poll() -> None:
            poller = select.poll()
            poller.register(fd, 0)  # POLLERR (the reader closed its end) is reported whatever the mask
            while not stop.is_set():
                if any(event & (select.POLLERR | select.POLLHUP) for _, event in poller.poll(200)):
                    with self.lock:
                        self._found_closed()
                    return

        threading.Thread(target=poll, name="output watcher", daemon=True).start()


def _start(job: Job, slot: str | None, trainer: TrainerCommand, printer: _Printer, done: queue.SimpleQueue,
           index: int) -> subprocess.Popen:
    env = dict(os.environ, PYTHONUNBUFFERED="1")  # lines reach the log as they are printed
    if slot is not None:
        env["CUDA_VISIBLE_DEVICES"] = slot
    where = f" on CUDA_VISIBLE_DEVICES={slot}" if slot is not None else ""
    printer.note(f"training {job.label} ({job.config}){where}")
    log = _open_log(job, printer)
    proc = subprocess.Popen(trainer.argv(job), env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, text=True, errors="replace", bufsize=1)

    def pump() -> None:
        why = ErrorLine()
        for text in proc.stdout:
            printer.line(job.label, text)
            if log is not None:
                log.write(text)
                log.flush()
            why.feed(text)
        if log is not None:
            log.close()
        done.put((index, Outcome(job, proc.wait(), str(why), slot)))

    threading.Thread(target=pump, name=f"output of {job.label}", daemon=True).start()
    return proc


def _open_log(job: Job, printer: _Printer) -> IO[str] | None:
    """The job's log opened for appending; None (after a warning) when it cannot be written:
    the run still trains, and the trainer reports an unwritable output.root itself."""
    path = job.log_path
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        log = open(path, "a", encoding="utf-8")
    except OSError as e:
        printer.note(f"warning: cannot write {path} ({e.strerror or e}); {job.label}'s output is shown here only")
        return None
    log.write(f"== {time.strftime('%Y-%m-%d %H:%M:%S')} {job.label}: {job.config} {' '.join(job.overrides)}\n")
    return log


def _stop(procs) -> None:
    """SIGTERM each trainer (it stops at its next step boundary with a checkpoint) and wait for all."""
    procs = list(procs)
    for proc in procs:
        _terminate(proc)
    for proc in procs:
        proc.wait()


def _terminate(proc: subprocess.Popen) -> None:
    try:
        proc.send_signal(signal.SIGTERM)
    except ProcessLookupError:
        pass
