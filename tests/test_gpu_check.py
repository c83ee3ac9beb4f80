"""The prepared GPU check (scripts/gpu_check.sh): its --tiny CPU rehearsal end to end, and the
runner's promise that a failing or hanging part is reported without losing the others."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
from torch import nn

from reid.gpu_check import __main__ as gpu_check_main
from reid.gpu_check.context import stderr_error_line
from reid.gpu_check.cuda_tests import junit_counts
from reid.gpu_check.determinism import different_tensors
from reid.gpu_check.parts import PARTS, Part
from reid.gpu_check.report import new_report
from reid.gpu_check.runner import PartRun, run_parts
from reid.gpu_check.runs import epochs_that_fit
from reid.gpu_check.speed import count_flops, datasheet_bf16_tflops

REPO = Path(__file__).resolve().parents[1]


def section(report_md: str, title: str) -> str:
    """The text of the report's ``## title`` section."""
    start = report_md.index(f"\n## {title}\n")
    end = report_md.find("\n## ", start + 1)
    return report_md[start:end if end != -1 else None]


def test_tiny_check_on_the_cpu_reports_every_part_ok(tmp_path):
    out = tmp_path / "check"
    env = dict(os.environ, PYTHON=sys.executable, OMP_NUM_THREADS="1")
    proc = subprocess.run(["bash", str(REPO / "scripts" / "gpu_check.sh"), "--device", "cpu", "--tiny",
                           "--out", str(out)], env=env, capture_output=True, text=True, timeout=900)
    report_md = (out / "report.md").read_text()
    assert proc.returncode == 0, report_md + proc.stderr
    report = json.loads((out / "report.json").read_text())
    assert [p["name"] for p in report["parts"]] == [p.name for p in PARTS]
    for part in report["parts"]:
        text = section(report_md, part["title"])
        assert "\nstatus: ok (" in text, text
        assert part["status"] == "ok" and part["tables"], part
    assert report["finished"] and "# GPU check: CPU" in report_md

    tables = {t["title"]: t for p in report["parts"] for t in p["tables"]}
    # 2: the CUDA-marked tests are collected and skip without a GPU
    counts = next(p for p in report["parts"] if p["name"] == "cuda_tests")["facts"]["cuda_tests"]
    assert counts["tests"] >= 1 and counts["skipped"] == counts["tests"]
    # 3: the bench row and the epoch against its floor
    assert tables["scripts/bench.py train"]["rows"][0][1] == "resnet18"
    assert any(t.startswith("one epoch, BoT config (resnet18, last stride 1, bnneck") for t in tables)
    # 4: four runs trained and evaluated, the pair's comparison figure written
    runs = {row[0]: row for row in tables["trained from scratch"]["rows"]}
    assert set(runs) == {"bot_bf16", "bot_fp32", "standard", "soft"}
    assert (runs["bot_bf16"][2], runs["bot_fp32"][2]) == ("bf16", "fp32")
    assert (out / "standard_vs_soft.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "](standard_vs_soft.png)" in report_md
    # 5: the killed and resumed run ends with every weight tensor equal to the uninterrupted run's
    killed_at, tensors, identical = tables["SIGKILL mid-epoch, then --resume auto"]["rows"][0]
    assert killed_at.startswith("epoch 1, step ") and int(tensors) == int(identical) > 0
    assert [r[0] for r in tables["train.deterministic: epoch 2"]["rows"]] == ["true", "false"]


def fake_part(tmp_path: Path, name: str, code: str) -> list[str]:
    """A part's command: ``code`` runs with RESULT (its result file) and OUT defined."""
    script = tmp_path / f"{name}.py"
    script.write_text("import json, sys, time, subprocess\nRESULT = sys.argv[-1]\n"
                      f"OUT = {str(tmp_path / 'out')!r}\n" + textwrap.dedent(code))
    return [sys.executable, str(script)]


def result_with_table(title: str) -> str:
    table = {"title": title, "columns": ["a"], "rows": [["1"]]}
    return (f"json.dump({{'tables': [{table!r}], 'notes': [], 'pngs': [], 'facts': {{}}, 'errors': []}}, "
            "open(RESULT, 'w'))\n")


def running(pid: int) -> bool:
    """Whether ``pid`` is a live process (a killed one not yet reaped by its new parent is a zombie: not live)."""
    deadline = time.monotonic() + 2
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            return False
        if state in ("Z", "X"):
            return False
        time.sleep(0.05)
    return True


def test_a_failing_and_a_hanging_part_are_reported_and_the_others_still_run(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    grandchild = tmp_path / "grandchild.pid"
    plan = [
        PartRun("a", "A", 30, fake_part(tmp_path, "a", result_with_table("first"))),
        PartRun("b", "B", 30, fake_part(tmp_path, "b", "print('working', flush=True)\nraise ValueError('boom')\n")),
        # writes a partial result, starts a grandchild, then hangs past its budget
        PartRun("c", "C", 3, fake_part(tmp_path, "c", result_with_table("partial") + textwrap.dedent(f"""
            p = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
            open({str(grandchild)!r}, "w").write(str(p.pid))
            time.sleep(60)
        """))),
        # sees the report as the earlier parts left it
        PartRun("d", "D", 30, fake_part(tmp_path, "d", f"""
            open({str(tmp_path / 'seen.md')!r}, "w").write(open(OUT + "/report.md").read())
        """)),
    ]
    report = new_report([Part(p.name, p.title) for p in plan], {p.name: p.budget_s for p in plan}, "cpu", "tiny", None)
    started = time.monotonic()
    ok = run_parts(plan, out, report, say=lambda line: None)
    assert not ok and time.monotonic() - started < 25
    status = {p["name"]: (p["status"], p["error"]) for p in report["parts"]}
    assert status == {"a": ("ok", None), "b": ("failed", "exit code 1: ValueError: boom"), "c": ("timed out", None),
                      "d": ("ok", None)}
    c = report["parts"][2]
    assert [t["title"] for t in c["tables"]] == ["partial"]  # what finished before the kill is kept
    assert not running(int(grandchild.read_text()))  # the timeout killed what the part had started
    seen = (tmp_path / "seen.md").read_text()
    assert "| A | ok |" in seen and "| B | failed: exit code 1: ValueError: boom |" in seen
    assert "| C | timed out after 3 s |" in seen and "| D | running |" in seen
    final = (out / "report.md").read_text()
    assert "\nstatus: timed out after 3 s (" in final and "first:" in final and "partial:" in final
    assert json.loads((out / "report.json").read_text())["parts"][1]["error"] == "exit code 1: ValueError: boom"


@pytest.mark.parametrize("argv, message", [
    (["--device", "cpu"], "--device cpu: the full check trains ResNet-50"),
    (["--device", "cpu", "--tiny", "--market-root", "/nonexistent/market"],
     "--market-root /nonexistent/market: no such folder"),
])
def test_usage_errors_are_one_line(argv, message, tmp_path, capsys):
    assert gpu_check_main.main([*argv, "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {message}") and err.count("\n") == 1
    assert not (tmp_path / "o").exists()


def test_an_out_folder_with_other_files_is_refused(tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("mine")
    assert gpu_check_main.main(["--device", "cpu", "--tiny", "--out", str(tmp_path)]) == 2
    assert "holds files that are not a GPU check's report" in capsys.readouterr().err
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_epochs_that_fit_pay_the_start_up_again():
    # 10 s first call = 6 s start-up + 4 s epoch; 30 s budget: 30 - 10 - 6 = 14 s left = 3 more epochs
    assert epochs_that_fit(first_call_s=10, first_epoch_s=4, budget_s=30, most=120) == 4
    assert epochs_that_fit(first_call_s=10, first_epoch_s=4, budget_s=30, most=2) == 2
    assert epochs_that_fit(first_call_s=10, first_epoch_s=4, budget_s=19, most=120) == 1  # 3 s left < 4 s
    assert epochs_that_fit(first_call_s=40, first_epoch_s=4, budget_s=30, most=120) == 1


def test_datasheet_peaks_match_the_longest_name_first():
    assert datasheet_bf16_tflops("NVIDIA H200") == 989.0
    assert datasheet_bf16_tflops("NVIDIA H100 80GB HBM3") == 989.0
    assert datasheet_bf16_tflops("NVIDIA H100 PCIe") == 756.0
    assert datasheet_bf16_tflops("NVIDIA A100-SXM4-80GB") == 312.0
    assert datasheet_bf16_tflops("NVIDIA A10") == 125.0
    assert datasheet_bf16_tflops("NVIDIA L40S") == 362.0
    assert datasheet_bf16_tflops("NVIDIA L4") == 121.0
    assert datasheet_bf16_tflops("Tesla T4") is None


def test_training_flops_are_counted_by_hand():
    layer = nn.Linear(8, 4)
    x = torch.randn(3, 8)
    # forward 2*3*8*4 = 192; backward: the weight's gradient 192 (the input needs none)
    assert count_flops(lambda: layer(x).sum().backward()) == 384
    x.requires_grad_(True)
    assert count_flops(lambda: layer(x).sum().backward()) == 576  # + the input's gradient


def test_error_line_is_the_cause(tmp_path):
    err = tmp_path / "e"
    err.write_text("progress 10%\rprogress 100%\nerror: configs/x.yaml: unknown key 'a'\n"
                   "error: run A (x.yaml) failed with exit code 2\nno comparison written\n")
    assert stderr_error_line(err) == "error: configs/x.yaml: unknown key 'a'"
    err.write_text("Traceback (most recent call last):\n  File x\nRuntimeError: CUDA out of memory\n\n")
    assert stderr_error_line(err) == "RuntimeError: CUDA out of memory"
    earlier = "error: an earlier call's line\n"
    err.write_text(earlier + "ValueError: this call's\n")
    assert stderr_error_line(err, offset=len(earlier)) == "ValueError: this call's"


def test_junit_counts(tmp_path):
    xml = tmp_path / "j.xml"
    xml.write_text('<testsuites><testsuite name="pytest" errors="1" failures="2" skipped="3" tests="10">'
                   '</testsuite></testsuites>')
    assert junit_counts(xml) == {"tests": 10, "passed": 4, "failed": 3, "skipped": 3}


def test_different_tensors_names_each_difference():
    a = {"w": torch.ones(2), "b": torch.zeros(1), "only_a": torch.ones(1)}
    b = {"w": torch.ones(2), "b": torch.tensor([1e-30]), "only_b": torch.ones(1)}
    assert different_tensors(a, b) == ["b", "only_a", "only_b"]
    assert different_tensors(a, dict(a)) == []
