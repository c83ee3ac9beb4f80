"""What the launch commands (``paired.sh``, ``study.sh``) share on the command line.

Example::

    parser = Parser(prog="study.sh", description="...")
    add_run_arguments(parser, "the configs to compare")   # CONFIG..., --set, --gpus, --device, --trainer
    args = parser.parse_intermixed_args(argv)
    return run_launch(lambda: body(args))   # error: ... / exit codes, Ctrl-C
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Callable, NoReturn, Sequence

from ..cli import EXIT_INTERRUPTED, run_main
from ..errors import ReidError
from .jobs import LaunchInterrupted, OutputClosed
from .runs import LaunchError

EXIT_RUN_FAILED = 1
EXIT_OUTPUT_CLOSED = 141  # 128 + SIGPIPE, what a shell reports for a command ended by a closed pipe


class Parser(argparse.ArgumentParser):
    """argparse with the project's one-line ``error: ...`` and exit code 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"error: {message}; see {self.prog} --help\n")


def add_run_arguments(p: argparse.ArgumentParser, configs_help: str) -> None:
    """The configs, and ``--set``, ``--gpus``, ``--device``, ``--trainer``: how every run of the command is trained."""
    p.add_argument("configs", nargs="*", metavar="CONFIG", help=configs_help)
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                   help="config override forwarded to every run (repeatable)")
    p.add_argument("--gpus", default="", metavar="IDS", help="GPU ids, e.g. 0,1: each run pinned to one "
                   "(CUDA_VISIBLE_DEVICES)")
    p.add_argument("--device", default=None, choices=["cpu", "cuda", "auto"], help="forwarded to train.py")
    # the trainer script, run by $PYTHON: scripts/paired.sh and scripts/study.sh pass their checkout's train.py,
    # so users never give it and --help does not show it
    p.add_argument("--trainer", default=None, help=argparse.SUPPRESS)


def check_configs(configs: Sequence[str]) -> list[Path]:
    """The config paths, each checked to exist."""
    for c in configs:
        if not Path(c).is_file():
            raise LaunchError(f"config {c} not found; pass existing config files (see configs/)")
    return [Path(c) for c in configs]


def check_sets(sets: Sequence[str], reserved: dict[str, str] | None = None) -> None:
    """Every ``--set`` is ``key=value``; ``reserved`` keys (the command sets them) are refused with why."""
    for s in sets:
        if "=" not in s:
            raise LaunchError(f"--set {s} is not key=value, e.g. --set train.epochs=5")
        key = s.split("=", 1)[0].strip()
        if reserved and key in reserved:
            raise LaunchError(f"--set {s}: {reserved[key]}")


def write_comparison(run_dirs: Sequence[Path], out: Path, decisions: Sequence[str] | None = None) -> bool:
    """Compare the runs into ``out`` (PNG) and ``out`` with ``.md``; print the table. False on failure."""
    from ..analysis import compare

    try:
        png, table = compare(run_dirs, out=out, decisions=decisions)
    except ReidError as e:
        print(f"error: the comparison of {', '.join(map(str, run_dirs))} failed: {e}", file=sys.stderr)
        return False
    print(table, end="")
    print(f"wrote {png} and {png.with_suffix('.md')}")
    return True


def run_launch(body: Callable[[], int]) -> int:
    """Run ``body`` as a command: ``error: ...`` and exit 2 for user mistakes, 130 after Ctrl-C/SIGTERM,
    141 when standard output closes (``| head``): the runs are stopped, and stderr says which."""
    def guarded() -> int:
        try:
            return body()
        except KeyboardInterrupt as e:
            print(interrupted_message(e.stopped if isinstance(e, LaunchInterrupted) else []), file=sys.stderr)
            return EXIT_INTERRUPTED
        except OutputClosed as e:
            _silence_stdout()
            stopped = ", ".join(job.label for job in e.stopped)
            if stopped:
                logs = ", ".join(str(job.log_path) for job in e.stopped)
                print(f"output closed: stopped run(s) {stopped} at their next step (each keeps its checkpoint; "
                      f"their output is in {logs}); no other run was started; rerun the same command to resume "
                      "them", file=sys.stderr)
            else:
                print("output closed: no run is running and no other run was started; rerun the same command "
                      "to train the rest (finished runs are not redone)", file=sys.stderr)
            return EXIT_OUTPUT_CLOSED
        except BrokenPipeError:
            _silence_stdout()
            print("output closed: no run is running (none had started, or all had ended); rerun the same command "
                  "to train what is left (finished runs are not redone)", file=sys.stderr)
            return EXIT_OUTPUT_CLOSED

    return run_main(guarded)


def interrupted_message(stopped: Sequence) -> str:
    """What Ctrl-C left: the stopped runs with a checkpoint resume, the others start again."""
    from ..engine.checkpoint import CheckpointStore

    saved = [job.label for job in stopped if CheckpointStore(job.run_dir).last.is_file()]
    unsaved = [job.label for job in stopped if job.label not in saved]
    parts = []
    if saved:
        parts.append(f"{', '.join(saved)} stopped with a checkpoint, and the same command resumes "
                     f"{'them' if len(saved) > 1 else 'it'}")
    if unsaved:
        parts.append(f"{', '.join(unsaved)} stopped before {'their' if len(unsaved) > 1 else 'its'} first "
                     "checkpoint, and the same command starts " + ("them" if len(unsaved) > 1 else "it") + " again")
    if not parts:
        parts.append("no run was training; the same command trains what is left")
    return f"interrupted: {'; '.join(parts)} (finished runs are not redone)"


def _silence_stdout() -> None:
    """Point stdout at /dev/null, so that Python's flush at exit does not fail again on the closed pipe."""
    import os

    try:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    except (OSError, ValueError):
        pass
