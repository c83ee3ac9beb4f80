"""Run the parts one after the other, each in its own process group under its time budget,
and keep the report current.

A part that fails is reported with its error line, one that outlives its budget is killed
with everything it started and reported as timed out; either way the next part runs. The
report is rewritten when each part starts and ends, so a check that is itself killed
still leaves the finished parts on disk.

Example::

    plan = [PartRun("environment", "1. GPU", 20, [sys.executable, "-m", "reid.gpu_check.part", "environment", ...])]
    report = new_report(...)
    run_parts(plan, Path("outputs/gpu_check"), report)
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

from .context import REPO, child_env, stderr_error_line
from .report import now, status_text, write_report


@dataclass(frozen=True)
class PartRun:
    """A part as the runner sees it: its command gets ``--result FILE`` appended."""

    name: str
    title: str
    budget_s: float
    command: list[str]


def run_parts(plan: Sequence[PartRun], out: Path, report: dict[str, Any],
              say: Callable[[str], None] = print) -> bool:
    """Run every part of ``plan`` (entries of ``report["parts"]``, same order); True when all are ok.

    Ctrl-C or SIGTERM (as KeyboardInterrupt) stops the running part and everything it started,
    records it as interrupted and raises KeyboardInterrupt.
    """
    for i, (part, entry) in enumerate(zip(plan, report["parts"])):
        entry["status"] = "running"
        write_report(out, report)
        say(f"part {i + 1}/{len(plan)} {part.name} (budget {part.budget_s:.0f} s) ...")
        entry.update(run_part(part, out))
        interrupted = entry["status"] == "interrupted"
        if interrupted or i == len(plan) - 1:
            report["finished"] = now()
        write_report(out, report)
        say(f"part {i + 1}/{len(plan)} {part.name}: {status_text(entry)} ({entry['seconds']:.1f} s)")
        if interrupted:
            raise KeyboardInterrupt
    return all(p["status"] == "ok" for p in report["parts"])


def run_part(part: PartRun, out: Path) -> dict[str, Any]:
    """Run one part under its budget; its status, error line, seconds and result (tables, notes, ...)."""
    result_path = out / "parts" / f"{part.name}.json"
    logs = out / "logs" / part.name
    for folder in (logs, result_path.parent):
        folder.mkdir(parents=True, exist_ok=True)
    stderr_path = logs / "part.err"
    started = time.monotonic()
    ended = "exited"
    with open(logs / "part.out", "wb") as stdout, open(stderr_path, "wb") as stderr:
        # its own process group, so that a timeout kills what it started too (train.py, paired.sh)
        proc = subprocess.Popen([*part.command, "--result", str(result_path)], stdout=stdout, stderr=stderr,
                                cwd=REPO, env=child_env(), preexec_fn=os.setpgrp)
        try:
            proc.wait(timeout=part.budget_s)
        except subprocess.TimeoutExpired:
            ended = "timed out"
        except KeyboardInterrupt:
            ended = "interrupted"
        finally:
            kill_group(proc)  # also when the part ended by itself: nothing it started outlives it
    result = read_result(result_path)
    status, error = part_status(ended, proc.returncode, result, stderr_path)
    return {**result, "status": status, "error": error, "seconds": time.monotonic() - started}


def part_status(ended: str, returncode: int, result: dict[str, Any], stderr_path: Path) -> tuple[str, Optional[str]]:
    """(status, error line) of a part that ``ended`` (exited | timed out | interrupted)."""
    if ended != "exited":
        return ended, None
    if result.get("errors"):
        return "failed", result["errors"][0]
    if returncode != 0:
        return "failed", f"exit code {returncode}: {stderr_error_line(stderr_path)}"
    return "ok", None


def kill_group(proc: subprocess.Popen) -> None:
    """SIGKILL the process group ``proc`` leads (it and everything it started), then reap ``proc``."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    proc.wait()


def read_result(path: Path) -> dict[str, Any]:
    """The part's result file (written atomically, so whole or absent)."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
