"""Helpers the launcher tests share (fixtures are in conftest.py)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path


def stub_calls(tmp_path: Path) -> list[dict]:
    """The stub trainer's training calls (tests/stub_trainer.py), in the order they ended."""
    log = tmp_path / "calls.jsonl"
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


def run_snapshot(run_dir: Path) -> dict[str, tuple[int, str]]:
    """mtime (ns) and sha256 of every file of a run except log.txt (a resumed finished run may
    append a line saying so) and .lock (it names the process holding the run); its artefacts must not change."""
    return {str(p.relative_to(run_dir)): (p.stat().st_mtime_ns, hashlib.sha256(p.read_bytes()).hexdigest())
            for p in sorted(run_dir.rglob("*")) if p.is_file() and p.name not in ("log.txt", ".lock")}
