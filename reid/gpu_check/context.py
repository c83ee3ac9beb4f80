"""What a part of the check works with, inside its own process: where to write, which
device and data, and a result file kept current after every step.

A part is a sequence of steps. A step that raises is recorded with its error line and
the part goes on with the next step; the result file is rewritten (atomically) after
every step and table, so when the runner kills a part at its time budget the steps
that finished are still reported.

Example::

    ctx = PartContext("speed", out=Path("outputs/gpu_check"), device="cuda", tiny=False, market_root=None)
    with ctx.step("bench"):
        ctx.table("bench", ["loop", "images/s"], [["bare", "1234.5"]])
    ctx.failed            # False
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import traceback
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Optional, Sequence

from ..io import atomic_write_text
from .scale import Scale, scale_for

REPO = Path(__file__).resolve().parents[2]
CONFIGS = REPO / "configs"


class StepError(Exception):
    """A step's failure whose message is the error line to report."""


class PartContext:
    """Settings of one part and its result (tables, notes, figures, facts, errors)."""

    def __init__(self, name: str, out: Path, device: str, tiny: bool, market_root: Optional[Path],
                 result_path: Optional[Path] = None) -> None:
        self.name, self.out, self.device, self.tiny, self.market_root = name, Path(out), device, tiny, market_root
        self.scale: Scale = scale_for(tiny)
        self.result_path = result_path or self.out / "parts" / f"{name}.json"
        self.logs = self.out / "logs" / name
        self.result: dict[str, Any] = {"tables": [], "notes": [], "pngs": [], "facts": {}, "errors": []}

    # -- recording ---------------------------------------------------------------------
    @property
    def failed(self) -> bool:
        return bool(self.result["errors"])

    @contextmanager
    def step(self, label: str) -> Iterator[None]:
        """Run the body; an exception becomes ``label: error line`` in the result, and the part goes on."""
        print(f"== {label}", flush=True)
        try:
            yield
        except Exception as e:  # noqa: BLE001 - every failure of a step is reported, none stops the part
            traceback.print_exc()
            self.result["errors"].append(f"{label}: {error_line(e)}")
        self.save()

    def table(self, title: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
        """Add the table ``title``, or replace the one of that title (a table that grows row by row)."""
        table = {"title": title, "columns": list(columns), "rows": [list(map(str, r)) for r in rows]}
        tables = self.result["tables"]
        at = next((i for i, t in enumerate(tables) if t["title"] == title), len(tables))
        tables[at:at + 1] = [table]
        self.save()

    def note(self, text: str) -> None:
        self.result["notes"].append(text)
        self.save()

    def png(self, path: Path) -> None:
        self.result["pngs"].append(os.path.relpath(path, self.out))
        self.save()

    def fact(self, key: str, value: Any) -> None:
        """A machine-readable figure of the part (report.json)."""
        self.result["facts"][key] = value
        self.save()

    def save(self) -> None:
        atomic_write_text(self.result_path, json.dumps(self.result, indent=2, default=str) + "\n")

    # -- what the steps share ----------------------------------------------------------
    @property
    def runs(self) -> Path:
        return self.out / "runs"

    def data_root(self, require_market: bool) -> Path:
        """The Market-1501 mini set of --market-root (full check), else the generated synthetic set (always
        with --tiny); ``require_market``: the full check has no synthetic stand-in."""
        if self.market_root is not None and not self.tiny:
            return self.market_root
        if require_market and not self.tiny:
            raise StepError("no --market-root given; pass the folder holding bounding_box_train/, query/ and "
                            "bounding_box_test/ (the Market-1501 mini set)")
        from ..data.synthetic import ensure_synthetic

        return ensure_synthetic(self.out / "synthetic", **self.scale.synthetic)

    def run_overrides(self, data_root: Path, name: Optional[str] = None) -> list[str]:
        """``--set`` items of a training run of this check: from scratch, into ``runs/``, the scale's sizes."""
        items = [f"data.root={data_root}", f"data.cache_dir={self.out / 'cache'}", "model.pretrained=none",
                 f"output.root={self.runs}", "seed=0", *self.scale.train_overrides]
        return items + ([f"output.name={name}"] if name else [])

    def train_command(self, config: str, overrides: Sequence[str]) -> list[str]:
        sets = [a for o in overrides for a in ("--set", o)]
        return [sys.executable, str(REPO / "train.py"), "--config", str(CONFIGS / config), "--device", self.device,
                "--resume", "auto", "--no-progress", *sets]

    def run(self, command: Sequence[str], log_name: str) -> None:
        """Run ``command`` (from the repository root), its output in ``logs/<part>/<log_name>.*``."""
        run_logged(command, self.logs / log_name)


def child_env() -> dict[str, str]:
    """The environment of every command of the check: the checkout importable, no progress bars."""
    path = os.environ.get("PYTHONPATH")
    return dict(os.environ, PYTHONPATH=f"{REPO}{os.pathsep}{path}" if path else str(REPO), PYTHON=sys.executable,
                PYTHONUNBUFFERED="1", TQDM_DISABLE="1")


def run_logged(command: Sequence[str], log: Path, env_extra: Optional[dict[str, str]] = None) -> None:
    """Run ``command``; stdout to ``log.out``, stderr to ``log.err``; a failure raises StepError(error line).

    No timeout of its own: the part's budget bounds it (the runner kills the part's process group).
    """
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(f"{log}.out", "ab") as out, open(f"{log}.err", "ab") as err:
        this_call = err.tell()  # a log name used twice (a run resumed) appends
        proc = subprocess.run(list(map(str, command)), stdout=out, stderr=err, cwd=REPO,
                              env={**child_env(), **(env_extra or {})})
    if proc.returncode != 0:
        raise StepError(f"exit code {proc.returncode}: {stderr_error_line(Path(f'{log}.err'), this_call)}")


def stderr_error_line(stderr_file: Path, offset: int = 0) -> str:
    """The line that says what went wrong in ``stderr_file`` (from byte ``offset``): the first ``error: ...``
    line (the cause; wrappers such as paired.sh add their own after it), else the last non-empty line (a
    traceback's exception)."""
    try:
        with open(stderr_file, "rb") as f:
            f.seek(offset)
            text = f.read().decode(errors="replace")
    except OSError:
        return "(no output)"
    lines = [ln.strip() for ln in re.split(r"[\r\n]+", text) if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("error:")]
    return errors[0] if errors else (lines or ["(no output)"])[-1]


def error_line(e: BaseException) -> str:
    """One line for an exception: a StepError's or ReidError's own message, else ``Type: message``."""
    from ..errors import ReidError

    text = str(e) if isinstance(e, (StepError, ReidError)) else f"{type(e).__name__}: {e}"
    return text.strip().splitlines()[0] if text.strip() else type(e).__name__
