"""Running trainer processes: runs at once on device slots, their output, the final report.

What ``scripts/paired.sh`` and ``scripts/study.sh`` share when they train here:
:func:`run_jobs` runs a list of :class:`reid.launch.runs.Job` on *slots*
(:func:`reid.launch.runs.device_slots`): each slot runs one job at a time, pinned to its GPU
with ``CUDA_VISIBLE_DEVICES``; a job that fails does not stop the others.

Example::

    from reid.launch.jobs import report, run_jobs
    from reid.launch.runs import Job, TrainerCommand, device_slots

    trainer = TrainerCommand.of("train.py", device="cuda")
    jobs = [Job("soft_s0", Path("configs/soft.yaml"), ["seed=0", "output.name=soft_s0"])]
    for job in jobs:
        job.resolve()
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
from typing import IO, Sequence

from ..cli import ErrorLine
from ..signals import on_stop_signals
from .runs import Job, TrainerCommand


# What wakes run_jobs besides a job's end: a stop signal (SIGTERM, Ctrl-C).
STOP_SIGNAL = "stop signal"
# How often run_jobs looks whether its output closed while no job ends.
OUTPUT_CHECK_SECONDS = 0.2


class LaunchInterrupted(KeyboardInterrupt):
    """Ctrl-C or SIGTERM reached the launcher: ``stopped`` lists the runs it stopped (each has exited)."""

    def __init__(self, stopped: Sequence["Job"]) -> None:
        super().__init__("interrupted")
        self.stopped = list(stopped)


class OutputClosed(Exception):
    """The launcher's standard output closed (``| head``): ``stopped`` lists the runs it stopped."""

    def __init__(self, stopped: Sequence["Job"]) -> None:
        super().__init__("standard output closed")
        self.stopped = list(stopped)


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


def run_jobs(jobs: Sequence[Job], slots: Sequence[str | None], trainer: TrainerCommand,
             out: IO[str] | None = None) -> list[Outcome]:
    """Train ``jobs`` in order, each on the next free slot; return their outcomes in job order.

    Ctrl-C or SIGTERM stops every running trainer at its next step boundary, with a checkpoint (each
    resumes later with ``--resume auto``; a second Ctrl-C stops them at once), and raises
    :class:`LaunchInterrupted`, naming them, once they have exited. When ``out`` closes (the reader of a
    pipe exits, as ``| head`` does, seen at a write or within :data:`OUTPUT_CHECK_SECONDS`),
    the running trainers are stopped the same way and :class:`OutputClosed` is raised, naming
    them; no further run starts. Each trainer's log is written to its end either way.
    """
    out = out or sys.stdout
    done: queue.SimpleQueue = queue.SimpleQueue()  # a job's end, or a stop signal; put() is safe in a handler
    printer = _Printer(out, prefix=len(slots) > 1)
    outcomes: dict[int, Outcome] = {}
    pending = deque(range(len(jobs)))
    free: deque[str | None] = deque(slots)
    running: dict[int, subprocess.Popen] = {}
    try:
        # A stop signal only wakes the loop, which then stops every trainer it started: a signal that arrived
        # while a trainer was being started cannot leave that one unrecorded, running and holding its lock.
        with on_stop_signals(lambda signum, frame: done.put(STOP_SIGNAL), [signal.SIGTERM, signal.SIGINT]):
            while pending or running:
                while pending and free:
                    i, slot = pending.popleft(), free.popleft()
                    running[i] = _start(jobs[i], slot, trainer, printer, done, i)
                try:
                    ended = done.get(timeout=OUTPUT_CHECK_SECONDS)
                except queue.Empty:
                    ended = None
                if ended == STOP_SIGNAL:
                    raise LaunchInterrupted([jobs[i] for i in running])
                if printer.closed or pipe_closed(out):  # a run may be silent for minutes: look, do not wait
                    _stop(running.values())
                    raise OutputClosed([jobs[i] for i in running])
                if ended is not None:
                    i, outcome = ended
                    running.pop(i)
                    outcomes[i] = outcome
                    free.append(outcome.slot)
    except KeyboardInterrupt as e:
        _stop(running.values())
        raise e if isinstance(e, LaunchInterrupted) else LaunchInterrupted([jobs[i] for i in running]) from e
    return [outcomes[i] for i in range(len(jobs))]


def report(outcomes: Sequence[Outcome], err: IO[str] | None = None, out: IO[str] | None = None) -> bool:
    """Print one line per finished job, and one per reason the others failed (naming the jobs it hit, with
    their exit codes and logs); True when every job finished."""
    out, err = out or sys.stdout, err or sys.stderr
    failed: dict[str, list[Outcome]] = {}
    for o in outcomes:
        if o.ok:
            print(f"run {o.job.label} ({o.job.config}): finished: {o.job.run_dir}", file=out)
        else:
            failed.setdefault(o.error_line or "(no output)", []).append(o)
    for why, hit in failed.items():
        if len(hit) == 1:
            (o,) = hit
            print(f"error: run {o.job.label} ({o.job.config}) failed with exit code {o.returncode}; its error line: "
                  f"{why}; its run directory is {o.job.run_dir} (output in {o.job.log_path}); fix it and rerun "
                  "this command to resume", file=err)
        else:
            runs = ", ".join(f"{o.job.label} (exit code {o.returncode})" for o in hit)
            print(f"error: {len(hit)} runs failed with the same error line: {why}; runs {runs}; their output is in "
                  f"{hit[0].job.log_path.parent}/<run>.log; fix it and rerun this command to resume", file=err)
    out.flush()
    err.flush()
    return not failed


# ----------------------------------------------------------------------------- pieces


class _Printer:
    """Writes the jobs' output lines to ``out`` one whole line at a time; once ``out`` is closed
    (BrokenPipeError) it writes nothing more and says so in ``closed``. The output threads go on
    reading their trainer into its log, so no trainer blocks on a full pipe."""

    def __init__(self, out: IO[str], prefix: bool) -> None:
        self.out, self.prefix, self.lock, self.closed = out, prefix, threading.Lock(), False

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
                self.closed = True


def pipe_closed(out: IO[str]) -> bool:
    """Whether ``out`` is a pipe whose reader has gone (poll reports POLLERR whatever the mask)."""
    try:
        fd = out.fileno()
        if not stat.S_ISFIFO(os.fstat(fd).st_mode) or not hasattr(select, "poll"):
            return False
    except (AttributeError, OSError, ValueError):
        return False
    poller = select.poll()
    poller.register(fd, 0)
    return any(event & (select.POLLERR | select.POLLHUP) for _, event in poller.poll(0))


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
    """SIGTERM each trainer (it stops at its next step boundary with a checkpoint) and wait for all; a Ctrl-C
    meanwhile passes SIGINT on, which stops them at once (a trainer told to stop takes Ctrl-C as "now")."""
    procs = list(procs)
    _send(procs, signal.SIGTERM)
    while True:
        try:
            for proc in procs:
                proc.wait()
            return
        except KeyboardInterrupt:
            _send(procs, signal.SIGINT)


def _send(procs: Sequence[subprocess.Popen], signum: int) -> None:
    for proc in procs:
        try:
            proc.send_signal(signum)
        except ProcessLookupError:
            pass
