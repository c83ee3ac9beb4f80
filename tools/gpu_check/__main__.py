"""The prepared GPU check (scripts/gpu_check.sh; options and exit status there). The parts of
parts.py run one after the other, each in a process forked from this one (torch is imported once)
under its own time limit, all within ``--time-limit``. Whenever a part starts or ends, ``--out``
gets report.md, report.json and logs.tar.gz, each written atomically, so a check killed at any
moment (SIGTERM or SIGKILL) leaves the report of the parts that finished."""

from __future__ import annotations

import argparse
import ctypes
import io
import json
import os
import shutil
import signal
import sys
import tarfile
import tempfile
import time
import traceback
from contextlib import suppress
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

from reid.cli import EXIT_INTERRUPTED, error_line, run_main
from reid.errors import ReidError
from reid.io import atomic_write_bytes, atomic_write_text

# name, report title, seconds it may take in the full check and with --tiny. The full check's limits add up
# to 635 s, more than its 570 s (within one device command's 10 minutes): a part gets what is left when less
# (on an H200 parts 1 to 5 took about 10, 15, 150, 115, 70 s; 6 to 8 are estimated at 30, 40, 80 s).
PARTS = (
    ("environment", "1. GPU, driver, torch and CUDA", 15, 60),
    ("cuda_tests", "2. Tests that need CUDA", 30, 60),
    ("speed", "3. Speed: bench.py train and a full-size epoch", 160, 90),
    ("real_images", "4. Real images from scratch: bf16 vs fp32, standard vs soft", 140, 120),
    ("determinism", "5. train.deterministic: kill, resume, speed", 90, 120),
    ("profile", "6. Profile: wall vs GPU-busy time per step, host time per phase", 50, 90),
    ("graphs", "7. train.cuda_graphs: eager vs captured, same state", 60, 30),
    ("packing", "8. Packed runs: images/s of N runs on one GPU, --per-gpu auto", 90, 90),
)


def parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="scripts/gpu_check.sh", description="The prepared GPU check.")
    p.add_argument("--market-root", type=Path, help="the Market-1501 (mini) set")
    p.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    p.add_argument("--tiny", action="store_true", help="synthetic data, tiny images and models: the CPU rehearsal")
    p.add_argument("--out", type=Path, default=Path("outputs/gpu_check"))
    p.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "reid_gpu_check")
    p.add_argument("--time-limit", type=float, help="seconds for the whole check (default 570, 780 with --tiny)")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    args = p.parse_args(argv)
    args.scale = "tiny" if args.tiny else "full"
    args.time_limit = args.time_limit or (780 if args.tiny else 570)
    args.out, args.work = args.out.resolve(), args.work.resolve()
    args.market_root = args.market_root.resolve() if args.market_root else None
    return args


def check_args(args: argparse.Namespace) -> None:
    if args.device == "cpu" and not args.tiny:
        raise ReidError("--device cpu: the full check trains ResNet-50 at 256x128 and would take hours on a CPU; "
                        "add --tiny for the CPU rehearsal")
    if args.market_root is not None and not args.market_root.is_dir():
        raise ReidError(f"--market-root {args.market_root}: no such folder; pass the folder holding "
                        "bounding_box_train/, query/ and bounding_box_test/")
    if args.out.exists() and any(args.out.iterdir()) and not (args.out / "report.json").exists():
        raise ReidError(f"--out {args.out}: the folder holds files that are not a GPU check's report; "
                        "choose an empty or new folder")
    if args.work == args.out or args.out in args.work.parents:
        raise ReidError(f"--work {args.work}: inside --out, whose files come back from the device; "
                        "choose a scratch folder elsewhere (default under /tmp)")


def now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def new_report(args: argparse.Namespace) -> dict[str, Any]:
    """The report before any part has run: every part ``not run``, with its limit for this scale."""
    column = 3 if args.tiny else 2
    return {"started": now(), "finished": None, "device": args.device, "scale": args.scale,
            "market_root": str(args.market_root) if args.market_root else None, "out": str(args.out),
            "work": str(args.work), "time_limit_s": args.time_limit,
            "parts": [{"name": p[0], "title": p[1], "budget_s": p[column], "status": "not run", "error": None,
                       "seconds": None, "tables": [], "notes": [], "pngs": [], "facts": {}, "errors": []}
                      for p in PARTS]}


def publish(report: dict[str, Any]) -> None:
    """Write report.json, report.md and logs.tar.gz (the parts' logs) into the report's ``out``."""
    out, logs = Path(report["out"]), Path(report["work"]) / "logs"
    atomic_write_text(out / "report.json", json.dumps(report, indent=2, default=str) + "\n")
    atomic_write_text(out / "report.md", render(report))
    archive = io.BytesIO()
    with tarfile.open(fileobj=archive, mode="w:gz") as tar:
        for log in sorted(logs.glob("*.log")):
            tar.add(log, arcname=f"logs/{log.name}")
    atomic_write_bytes(out / "logs.tar.gz", archive.getvalue())


def run_check(report: dict[str, Any], plan: Sequence[tuple[str, Callable[[], int]]], deadline: float,
              say: Callable[[str], None]) -> bool:
    """Run each ``(name, body)`` of ``plan`` (the report's parts, same order); True when all are ok.
    SIGTERM or Ctrl-C (as KeyboardInterrupt) stops the running part, reports it and is raised again."""
    try:
        for i, ((name, body), entry) in enumerate(zip(plan, report["parts"])):
            limit = min(entry["budget_s"], deadline - time.monotonic())
            if limit < min(entry["budget_s"], 5):  # too little time left to prove anything
                entry["error"] = f"no time left of the check's {report['time_limit_s']:.0f} s"
                continue
            entry["status"] = "running"
            publish(report)
            say(f"part {i + 1}/{len(plan)} {name} (limit {limit:.0f} s) ...")
            entry.update(run_part(name, body, Path(report["work"]), limit))
            say(f"part {i + 1}/{len(plan)} {name}: {status_text(entry)} ({entry['seconds']:.1f} s)")
            if entry["status"] == "interrupted":
                raise KeyboardInterrupt
            publish(report)
    finally:
        report["finished"] = now()
        publish(report)
    return all(p["status"] == "ok" for p in report["parts"])


def run_part(name: str, body: Callable[[], int], work: Path, limit_s: float) -> dict[str, Any]:
    """Fork a process that runs ``body`` (output into ``work/logs/<name>.log``); kill it and everything it
    started after ``limit_s``; its status, seconds and result (``work/parts/<name>.json``)."""
    (work / "logs").mkdir(parents=True, exist_ok=True)
    result_file = work / "parts" / f"{name}.json"
    result_file.unlink(missing_ok=True)
    started, ended, code = time.monotonic(), "timed out", None
    pid = os.fork()
    if pid == 0:
        os._exit(part_process(body, work / "logs" / f"{name}.log"))
    try:
        while time.monotonic() - started < limit_s:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                ended, code = "exited", os.waitstatus_to_exitcode(status)
                break
            time.sleep(0.02)
    except KeyboardInterrupt:
        ended = "interrupted"
    finally:  # also when it ended by itself: nothing it started outlives it
        for kill in (os.killpg, os.kill):
            with suppress(ProcessLookupError, PermissionError):
                kill(pid, signal.SIGKILL)
        with suppress(ChildProcessError):
            os.waitpid(pid, 0)
    result = json.loads(result_file.read_text()) if result_file.exists() else {}  # written atomically
    status, error = ended, None
    if ended == "exited":
        status, error = ("failed", result["errors"][0]) if result.get("errors") else ("ok", None)
        if code and not error:  # it ended without recording why: its log says
            log = (work / "logs" / f"{name}.log").read_text(errors="replace")
            status, error = "failed", f"exit code {code}: {error_line(log) or 'no output'} (see logs/{name}.log)"
    return {**result, "status": status, "error": error, "seconds": time.monotonic() - started}


def part_process(body: Callable[[], int], log: Path) -> int:
    """In the forked child: its own process group, SIGKILLed when the check dies, output into ``log``."""
    try:
        os.setsid()
        with suppress(OSError, AttributeError):  # Linux prctl(PR_SET_PDEATHSIG, SIGKILL)
            ctypes.CDLL(None).prctl(1, signal.SIGKILL)
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, signal.SIG_DFL)
        fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        for stream in (sys.stdout, sys.stderr):
            stream.flush()
            os.dup2(fd, stream.fileno())
        return body()
    except BaseException:  # noqa: BLE001 - the child never returns into the check's own code
        traceback.print_exc()
        return 1
    finally:
        sys.stdout.flush()
        sys.stderr.flush()


def status_text(part: dict[str, Any]) -> str:
    if part["status"] == "timed out":
        return f"timed out after {part['seconds']:.0f} s"
    return part["status"] + (f": {part['error']}" if part["error"] else "")


def render(report: dict[str, Any]) -> str:
    """report.md: a header, the parts' status table, then a section per part."""
    env, done = report["parts"][0]["facts"], sum(p["seconds"] or 0 for p in report["parts"])
    lines = [f"# GPU check: {env.get('card', '(not known yet)')}", "",
             f"- started {report['started']}, " + (f"finished {report['finished']}" if report["finished"]
                                                   else "still running"),
             f"- driver {env.get('driver', '?')}; torch {env.get('torch', '?')}, CUDA {env.get('cuda_build', '?')}, "
             f"cuDNN {env.get('cudnn', '?')}",
             f"- device {report['device']}, {report['scale']} check; data: {report['market_root'] or 'synthetic'}",
             f"- {done:.0f} s {'in all' if report['finished'] else 'so far'} of the check's limit of "
             f"{report['time_limit_s']:.0f} s; runs and logs in {report['work']}",
             "", "| part | status | seconds | limit s |", "|---|---|---|---|"]
    lines += [f"| {cell(p['title'])} | {cell(status_text(p))} | {p['seconds'] or 0:.1f} | {p['budget_s']} |"
              for p in report["parts"]]
    for p in report["parts"]:
        lines += ["", f"## {p['title']}", "", f"status: {status_text(p)}"]
        lines += [f"- also failed: {e}" for e in p["errors"][1:]]
        for t in p["tables"]:
            lines += ["", f"{t['title']}:", "", "| " + " | ".join(map(cell, t["columns"])) + " |",
                      "|" + "---|" * len(t["columns"]), *("| " + " | ".join(map(cell, r)) + " |" for r in t["rows"])]
        lines += ([""] if p["notes"] else []) + [f"- {n}" for n in p["notes"]]
        lines += [line for png in p["pngs"] for line in ("", f"![{png}]({png})")]
    return "\n".join(lines) + "\n"


def cell(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)

    def body() -> int:
        check_args(args)
        for stale in [args.out / "report.md", args.out / "report.json", args.out / "logs.tar.gz",
                      *args.out.glob("*.png")]:
            stale.unlink(missing_ok=True)
        args.out.mkdir(parents=True, exist_ok=True)
        for folder in ("logs", "parts", "runs"):  # a rerun replaces these; the image cache is kept
            shutil.rmtree(args.work / folder, ignore_errors=True)
        from . import parts  # imports torch once, before the parts are forked (it starts no CUDA)

        plan = [(name, lambda name=name: parts.run_part(name, args)) for name, *_ in PARTS]
        signal.signal(signal.SIGTERM, interrupt)
        try:
            ok = run_check(new_report(args), plan, time.monotonic() + args.time_limit,
                           say=lambda line: print(line, flush=True))
        except KeyboardInterrupt:
            print(f"interrupted; {args.out / 'report.md'} holds the parts that finished", file=sys.stderr)
            return EXIT_INTERRUPTED
        print(f"wrote {args.out / 'report.md'}", flush=True)
        return 0 if ok else 1

    return run_main(body, debug=args.debug)


if __name__ == "__main__":
    sys.exit(main())
