"""The check's report: ``report.json`` (everything, machine-readable) and ``report.md``
rendered from it, both rewritten atomically whenever a part starts or ends.

A part's status is one of ``ok``, ``failed: <error line>``, ``timed out after N s``,
``running``, ``interrupted`` or ``not run``.

Example::

    report = new_report(parts, budgets={"environment": 20}, device="cuda", scale="full", market_root=None)
    write_report(Path("outputs/gpu_check"), report)
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Optional, Sequence

from ..io import atomic_write_text
from .parts import Part

REPORT_MD, REPORT_JSON = "report.md", "report.json"


def now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def new_report(parts: Sequence[Part], budgets: dict[str, int], device: str, scale: str,
               market_root: Optional[Path], notes: Sequence[str] = ()) -> dict[str, Any]:
    return {
        "started": now(), "finished": None, "device": device, "scale": scale,
        "market_root": str(market_root) if market_root else None, "notes": list(notes),
        "parts": [{"name": p.name, "title": p.title, "budget_s": budgets[p.name], "status": "not run",
                   "error": None, "seconds": None, "tables": [], "notes": [], "pngs": [], "facts": {}, "errors": []}
                  for p in parts],
    }


def status_text(part: dict[str, Any]) -> str:
    if part["status"] == "failed":
        return f"failed: {part['error']}"
    if part["status"] == "timed out":
        return f"timed out after {part['budget_s']} s"
    return part["status"]


def write_report(out: Path, report: dict[str, Any]) -> None:
    atomic_write_text(out / REPORT_JSON, json.dumps(report, indent=2, default=str) + "\n")
    atomic_write_text(out / REPORT_MD, render_markdown(report))


def render_markdown(report: dict[str, Any]) -> str:
    lines = header_lines(report)
    for part in report["parts"]:
        lines += ["", f"## {part['title']}", "", f"status: {status_text(part)}" + timing(part)]
        lines += part_body(part)
    return "\n".join(lines) + "\n"


def header_lines(report: dict[str, Any]) -> list[str]:
    env = next((p["facts"] for p in report["parts"] if p["name"] == "environment"), {})
    card = env.get("card", "(not known yet)")
    done = [p["seconds"] for p in report["parts"] if p["seconds"] is not None]
    lines = [f"# GPU check: {card}", "",
             f"- date: {report['started']}" + (f", finished {report['finished']}" if report["finished"] else
                                               " (still running)"),
             f"- card: {card}; driver {env.get('driver', '?')}; torch {env.get('torch', '?')}, "
             f"CUDA {env.get('cuda_build', '?')}, cuDNN {env.get('cudnn', '?')}",
             f"- device {report['device']}, {report['scale']} check; data: {report['market_root'] or 'synthetic'}",
             f"- time: {sum(done):.0f} s{' in all' if report['finished'] else ' so far'}; the part budgets add up "
             f"to {sum(p['budget_s'] for p in report['parts'])} s",
             *[f"- {n}" for n in report["notes"]],
             "", "| part | status | seconds | budget s |", "|---|---|---|---|"]
    for p in report["parts"]:
        seconds = f"{p['seconds']:.1f}" if p["seconds"] is not None else ""
        lines.append(f"| {cell(p['title'])} | {cell(status_text(p))} | {seconds} | {p['budget_s']} |")
    return lines


def timing(part: dict[str, Any]) -> str:
    return f" ({part['seconds']:.1f} s of {part['budget_s']} s)" if part["seconds"] is not None else ""


def part_body(part: dict[str, Any]) -> list[str]:
    lines: list[str] = []
    for error in part["errors"][1:]:  # the first is the status line's
        lines.append(f"- also failed: {error}")
    for table in part["tables"]:
        lines += ["", f"{table['title']}:", "", "| " + " | ".join(map(cell, table["columns"])) + " |",
                  "|" + "---|" * len(table["columns"])]
        lines += ["| " + " | ".join(map(cell, row)) + " |" for row in table["rows"]]
    if part["notes"]:
        lines.append("")
        lines += [f"- {note}" for note in part["notes"]]
    for png in part["pngs"]:
        lines += ["", f"![{png}]({png})", f"`{png}`"]
    return lines


def cell(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")
