"""scripts/bench.py runs end to end on small problems (speed itself is never asserted)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


REPO = Path(__file__).resolve().parents[1]


def bench(*args: str) -> subprocess.CompletedProcess:
    r = subprocess.run([sys.executable, str(REPO / "scripts" / "bench.py"), *args], capture_output=True, text=True,
                       timeout=300, cwd=REPO)
    assert r.returncode == 0, r.stdout + r.stderr
    return r


def test_bench_train_prints_both_loops_and_their_ratio():
    out = bench("train", "--device", "cpu", "--model", "resnet18", "--batch", "4", "--size", "32x16", "--steps", "2",
                "--warmup", "1").stdout
    assert "(a) bare forward/backward/step" in out and "(b) full trainer step" in out
    assert "(b)/(a) = " in out and "projected Market-1501 epoch" in out


def test_bench_eval_agrees_with_the_per_query_loop():
    out = bench("eval", "--device", "cpu", "--queries", "60", "--gallery", "500", "--junk", "40", "--distractors",
                "30", "--ids", "25", "--dim", "32", "--repeats", "1", "--loop-queries", "30").stdout
    assert "agreement with the numpy loop on its 30 queries: |dmAP| = 0.00e+00, max |dCMC| = 0.00e+00" in out


def test_bench_data_compares_the_two_pipelines_on_the_same_images():
    out = bench("data", "--images", "64", "--batch-size", "21", "--size", "64", "32", "--repeats", "1").stdout
    assert "(a) classic" in out and "(b) cached" in out and "speedup" in out


def test_bench_pack_measures_one_run_alone_and_runs_packed():
    out = bench("pack", "--device", "cpu", "--model", "resnet18", "--batch", "4", "--size", "32x16", "--steps", "1",
                "--warmup", "1", "--runs", "2", "--seconds", "0.2").stdout
    rows = [line for line in out.splitlines() if line.startswith("| ") and line.split("|")[1].strip().isdigit()]
    assert [int(r.split("|")[1]) for r in rows] == [1, 2]  # one run alone is always the reference
    assert rows[0].split("|")[4].strip() == "1.00x"
