"""Part 2: the tests marked ``@pytest.mark.cuda`` (skipped on a machine without CUDA), pass/fail.

On a CUDA device every one of them must pass: a skip there is a failure of the part. On
the CPU (``--device cpu``) they skip, which is what this part then reports.

Example::

    counts = junit_counts(Path("outputs/gpu_check/logs/cuda_tests/junit.xml"))
    counts["passed"], counts["failed"], counts["skipped"]
"""

from __future__ import annotations

import importlib.util
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

from .context import REPO, PartContext, StepError, run_logged


def run(ctx: PartContext) -> None:
    with ctx.step("pytest -m cuda"):
        if importlib.util.find_spec("pytest") is None:
            raise StepError(f"pytest is not installed for {sys.executable}; the CUDA tests need it")
        junit = ctx.logs / "junit.xml"
        command = [sys.executable, "-m", "pytest", "-m", "cuda", "-q", "-p", "no:cacheprovider",
                   f"--junitxml={junit}", *map(str, files_with_cuda_tests())]
        failure = None
        try:
            run_logged(command, ctx.logs / "pytest", env_extra=market_env(ctx))
        except StepError as e:
            failure = e
        if not junit.exists():
            raise failure or StepError("pytest wrote no report")
        counts, cases = junit_counts(junit), junit_cases(junit)
        ctx.fact("cuda_tests", counts)
        ctx.table("tests marked cuda", ["test", "outcome"], cases)
        ctx.table("counts", ["selected", "passed", "failed", "skipped"],
                  [[counts["tests"], counts["passed"], counts["failed"], counts["skipped"]]])
        check_counts(counts, on_cuda=ctx.device == "cuda")


def files_with_cuda_tests() -> list[Path]:
    """The test files that use the marker (collecting only them saves importing the whole suite)."""
    files = [p for p in sorted((REPO / "tests").glob("test_*.py")) if "pytest.mark.cuda" in p.read_text()]
    if not files:
        raise StepError("no test is marked @pytest.mark.cuda")
    return files


def market_env(ctx: PartContext) -> dict[str, str]:
    """Tests that need the real images read REID_MARKET_ROOT."""
    return {"REID_MARKET_ROOT": str(ctx.market_root)} if ctx.market_root else {}


def check_counts(counts: dict[str, int], on_cuda: bool) -> None:
    if counts["tests"] == 0:
        raise StepError("no test is marked @pytest.mark.cuda")
    if counts["failed"]:
        raise StepError(f"{counts['failed']} of {counts['tests']} CUDA tests failed (see the table)")
    if on_cuda and counts["skipped"]:
        raise StepError(f"{counts['skipped']} of {counts['tests']} CUDA tests skipped on a CUDA device")


def junit_counts(path: Path) -> dict[str, int]:
    """Selected, passed, failed (failures + errors) and skipped tests of a pytest junit XML file."""
    suite = ET.parse(path).getroot()
    suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
    n, failures, errors, skipped = (int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped"))
    return {"tests": n, "passed": n - failures - errors - skipped, "failed": failures + errors, "skipped": skipped}


def junit_cases(path: Path) -> list[list[str]]:
    """``[test id, outcome]`` per test case (outcome: passed | failed | skipped: reason)."""
    rows = []
    for case in ET.parse(path).getroot().iter("testcase"):
        name = f"{case.get('classname', '')}::{case.get('name', '')}"
        outcome = "passed"
        for tag in ("failure", "error", "skipped"):
            node = case.find(tag)
            if node is not None:
                message = (node.get("message") or "").splitlines()[0] if node.get("message") else ""
                outcome = f"{'failed' if tag != 'skipped' else 'skipped'}: {message}"[:200]
        rows.append([name, outcome])
    return rows

