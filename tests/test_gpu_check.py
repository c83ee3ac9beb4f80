"""The prepared GPU check (scripts/gpu_check.sh): its --tiny CPU rehearsal end to end, what --out
receives, and the runner's promise that a failing, hanging or killed part (or a killed check)
leaves a report of the parts that finished."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import yaml
from torch import nn

from tools.gpu_check import __main__ as gpu_check
from tools.gpu_check.parts import Outcomes, Part, StepError, count_flops, different_tensors
from reid.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]
MiB = 2**20


def section(report_md: str, title: str) -> str:
    """The text of the report's ``## title`` section."""
    start = report_md.index(f"\n## {title}\n")
    end = report_md.find("\n## ", start + 1)
    return report_md[start:end if end != -1 else None]


def test_tiny_check_on_the_cpu_reports_every_part_ok_and_out_holds_only_the_report(tmp_path):
    out, work = tmp_path / "check", tmp_path / "work"  # in memory where there is room (conftest.py)
    env = dict(os.environ, PYTHON=sys.executable, OMP_NUM_THREADS="1")
    proc = subprocess.run(["bash", str(REPO / "scripts" / "gpu_check.sh"), "--device", "cpu", "--tiny",
                           "--out", str(out), "--work", str(work)], env=env, capture_output=True, text=True,
                          timeout=900)
    report_md = (out / "report.md").read_text()
    assert proc.returncode == 0, report_md + proc.stderr
    # --out: at most 8 files, none over 16 MiB; the runs, caches and checkpoints stay in --work
    files = sorted(p.name for p in out.iterdir())
    assert files == ["logs.tar.gz", "report.json", "report.md", "standard_vs_soft.png"]
    assert all((out / f).stat().st_size <= 16 * MiB for f in files)
    assert (work / "runs" / "det_killed" / "checkpoints" / "last.pt").is_file()
    # progress lines, one per part start and end, as the parts run
    assert proc.stdout.count("part ") == 16 and "part 8/8 packing: ok" in proc.stdout

    report = json.loads((out / "report.json").read_text())
    assert [p["name"] for p in report["parts"]] == [p[0] for p in gpu_check.PARTS]
    for part in report["parts"]:
        assert "\nstatus: ok\n" in section(report_md, part["title"]), part
        assert part["status"] == "ok" and part["tables"], part
    assert report["finished"] and "# GPU check: CPU" in report_md
    tables = {t["title"]: t for p in report["parts"] for t in p["tables"]}
    # 2: the CUDA-marked tests are collected and skip without a GPU
    assert {outcome for _, outcome in tables["tests marked cuda"]["rows"]} == {"skipped"}
    # 3: the bench row says compile is off; the epoch against its floor
    assert tables["scripts/bench.py train"]["rows"][0][:2] == ["off", "resnet18"]
    assert any(t.startswith("one epoch of the BoT config (resnet18, last stride 1, bnneck") for t in tables)
    # 4: bf16 and fp32 train the same number of steps; a second bf16 seed gives the noise beside the difference.
    # On the CPU the "bf16" runs are fp32 (a note says so): the rehearsal does not depend on CPU bf16 kernels
    runs = {row[0]: row for row in tables["trained from scratch"]["rows"]}
    assert set(runs) == {"bot_bf16", "bot_bf16_seed1", "bot_fp32", "standard", "soft"}
    assert [runs[r][2:4] for r in ("bot_bf16", "bot_bf16_seed1", "bot_fp32")] == [["fp32", "0"], ["fp32", "1"],
                                                                                   ["fp32", "0"]]
    assert "on the CPU the bf16 runs train in fp32" in report_md
    assert runs["bot_bf16"][5] == runs["bot_fp32"][5] == runs["bot_bf16_seed1"][5]
    fp32 = yaml.safe_load((work / "runs" / "bot_fp32" / "config.yaml").read_text())
    assert fp32["train"]["tf32"] is False and fp32["schedule"]["warmup_epochs"] == 0
    assert "run-to-run noise: bf16 seed 0 - seed 1" in report_md
    assert (out / "standard_vs_soft.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "](standard_vs_soft.png)" in report_md
    # 5: the killed and resumed run ends with every weight tensor equal to the uninterrupted run's
    killed_at, tensors, identical = tables["SIGKILL mid-epoch, then --resume auto"]["rows"][0]
    assert killed_at.startswith("epoch 1, step ") and int(tensors) == int(identical) > 0
    reference = yaml.safe_load((work / "runs" / "det_reference" / "config.yaml").read_text())
    assert reference["checkpoint"]["every_steps"] == 0 and reference["train"]["deterministic"] is True
    # ... and the mode's epoch time beside a run without it, neither writing step checkpoints
    off = yaml.safe_load((work / "runs" / "det_off" / "config.yaml").read_text())
    assert off["checkpoint"]["every_steps"] == 0 and off["train"]["deterministic"] is False
    mode = tables["train.deterministic: epoch 1 (no step checkpoints in either run)"]["rows"]
    assert [row[0] for row in mode] == ["true", "false"] and all(float(row[1]) > 0 for row in mode)
    # 6: per recipe, the wall time and the host time of each phase of a step; the GPU columns need CUDA
    profile = tables["a training step, 3 steps after warm-up (ms per step)"]
    assert profile["columns"][3:7] == ["wall", "GPU busy (kernels)", "kernels", "wall / busy"]
    assert [c.removeprefix("host: ") for c in profile["columns"][7:]] == ["batch + augmentation", "forward",
                                                                        "criterion", "backward", "optimiser", "records"]
    assert [row[:2] for row in profile["rows"]] == [["BoT", "bot.yaml"], ["classic", "standard.yaml"]]
    for row in profile["rows"]:
        assert row[4:6] == ["n/a (CPU)", "n/a (CPU)"] and all(float(v) > 0 for v in [row[3], *row[7:]])
    # 7: the captured step needs CUDA: one row per recipe says so
    rows = tables["train.cuda_graphs: 50 steps eager vs captured, deterministic mode"]["rows"]
    assert [row[:2] for row in rows] == [["BoT", "needs CUDA"], ["classic", "needs CUDA"]]
    # 8: aggregate images/s of 1 and 2 runs at once; --per-gpu auto's pick needs the GPU's free memory
    packed = tables["runs packed on one GPU (scripts/bench.py pack)"]["rows"]
    assert [row[0] for row in packed] == ["1", "2"] and packed[0][3] == "1.00x" and all(float(r[2]) > 0 for r in packed)
    assert "--per-gpu auto: n/a: --per-gpu auto needs CUDA" in report_md


# ----------------------------------------------------------------------------- the runner, with stand-in parts

def stand_in_report(tmp_path: Path, parts: int) -> dict:
    """The report of a check of the first ``parts`` parts, whose bodies come from the test."""
    args = gpu_check.parse_args(["--device", "cpu", "--tiny", "--out", str(tmp_path / "out"),
                                 "--work", str(tmp_path / "work")])
    (tmp_path / "out").mkdir()
    report = gpu_check.new_report(args)
    report["parts"] = report["parts"][:parts]
    return report


def result_with_table(work: Path, name: str, title: str) -> None:
    (work / "parts").mkdir(parents=True, exist_ok=True)
    table = {"title": title, "columns": ["a"], "rows": [["1"]]}
    (work / "parts" / f"{name}.json").write_text(json.dumps(
        {"tables": [table], "notes": [], "pngs": [], "facts": {}, "errors": []}))


def running(pid: int) -> bool:
    """Whether ``pid`` is a live process (a zombie is not), waiting up to 2 s for it to go."""
    deadline = time.monotonic() + 2
    while time.monotonic() < deadline:
        try:
            if Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] in ("Z", "X"):
                return False
        except OSError:
            return False
        time.sleep(0.05)
    return True


def test_a_failing_and_a_hanging_part_are_reported_and_the_others_still_run(tmp_path):
    report = stand_in_report(tmp_path, 4)
    work, out, grandchild = tmp_path / "work", tmp_path / "out", tmp_path / "grandchild.pid"
    for entry in report["parts"]:
        entry["budget_s"] = 30
    report["parts"][2]["budget_s"] = 3

    def a():
        result_with_table(work, "environment", "first")
        return 0

    def b():
        print("working")
        raise ValueError("boom")

    def c():  # a partial result, a grandchild, then it hangs past its limit
        result_with_table(work, "speed", "partial")
        grandchild.write_text(str(subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"]).pid))
        time.sleep(60)

    def d():  # sees the report as the earlier parts left it
        (tmp_path / "seen.md").write_text((out / "report.md").read_text())
        return 0

    plan = list(zip([p["name"] for p in report["parts"]], [a, b, c, d]))
    started = time.monotonic()
    assert not gpu_check.run_check(report, plan, deadline=time.monotonic() + 60, say=lambda line: None)
    assert time.monotonic() - started < 25
    status = [(p["status"], p["error"]) for p in report["parts"]]
    # the part's error line (reid.cli.error_line of its log: its traceback's last line), as the launcher's
    assert status == [("ok", None), ("failed", "exit code 1: ValueError: boom (see logs/cuda_tests.log)"),
                      ("timed out", None), ("ok", None)]
    assert [t["title"] for t in report["parts"][2]["tables"]] == ["partial"]  # kept from before the kill
    assert not running(int(grandchild.read_text()))  # the limit killed what the part had started
    seen = (tmp_path / "seen.md").read_text()
    assert "| ok |" in seen and "failed: exit code 1: ValueError: boom" in seen and "| running |" in seen
    final = (out / "report.md").read_text()
    assert "\nstatus: timed out after 3 s" in final and "first:" in final and "partial:" in final
    # the parts' output is in the one archive of --out
    import tarfile

    with tarfile.open(out / "logs.tar.gz") as tar:
        assert "ValueError: boom" in tar.extractfile("logs/cuda_tests.log").read().decode()


def test_a_part_that_would_outlast_the_check_is_not_started(tmp_path):
    report = stand_in_report(tmp_path, 2)
    plan = [(p["name"], lambda: 0) for p in report["parts"]]
    assert not gpu_check.run_check(report, plan, deadline=time.monotonic() + 2, say=lambda line: None)
    assert [p["status"] for p in report["parts"]] == ["not run", "not run"]
    assert "no time left of the check's 780 s" in (tmp_path / "out" / "report.md").read_text()


KILLED_CHECK = """
import json, os, signal, sys, time
from pathlib import Path
from tools.gpu_check import __main__ as gpu_check

tmp = Path({tmp!r})
args = gpu_check.parse_args(["--device", "cpu", "--tiny", "--out", str(tmp / "out"), "--work", str(tmp / "work")])
(tmp / "out").mkdir()
report = gpu_check.new_report(args)
report["parts"] = report["parts"][:2]

def a():
    (tmp / "work" / "parts").mkdir(parents=True, exist_ok=True)
    (tmp / "work" / "parts" / "environment.json").write_text(json.dumps(
        {{"tables": [{{"title": "first", "columns": ["a"], "rows": [["1"]]}}], "errors": []}}))
    return 0

def b():
    (tmp / "part_b.pid").write_text(str(os.getpid()))
    time.sleep(60)
    return 0

signal.signal(signal.SIGTERM, gpu_check.interrupt)
try:
    gpu_check.run_check(report, [("environment", a), ("cuda_tests", b)], time.monotonic() + 60, print)
except KeyboardInterrupt:
    sys.exit(130)
"""


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_a_check_killed_in_the_middle_of_a_part_leaves_the_report_of_the_parts_that_finished(tmp_path, sig):
    script = tmp_path / "check.py"
    script.write_text(KILLED_CHECK.format(tmp=str(tmp_path)))
    proc = subprocess.Popen([sys.executable, str(script)], cwd=REPO, env=dict(os.environ, PYTHONPATH=str(REPO)),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    pid_file = tmp_path / "part_b.pid"
    deadline = time.monotonic() + 30
    while not pid_file.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.1)
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == (130 if sig == signal.SIGTERM else -signal.SIGKILL), out + err
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert [(p["status"], [t["title"] for t in p["tables"]]) for p in report["parts"]] == [
        ("ok", ["first"]), ("interrupted" if sig == signal.SIGTERM else "running", [])]
    assert "| ok |" in (tmp_path / "out" / "report.md").read_text()
    assert not running(int(pid_file.read_text()))  # the part went with the check


# ----------------------------------------------------------------------------- arguments and small pieces

@pytest.mark.parametrize("argv, message", [
    (["--device", "cpu"], "--device cpu: the full check trains ResNet-50"),
    (["--device", "cpu", "--tiny", "--market-root", "/nonexistent/market"],
     "--market-root /nonexistent/market: no such folder"),
])
def test_usage_errors_are_one_line(argv, message, tmp_path, capsys):
    assert gpu_check.main([*argv, "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {message}") and err.count("\n") == 1
    assert not (tmp_path / "o").exists()


def test_an_out_folder_with_other_files_or_holding_the_work_folder_is_refused(tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("mine")
    assert gpu_check.main(["--device", "cpu", "--tiny", "--out", str(tmp_path)]) == 2
    assert "holds files that are not a GPU check's report" in capsys.readouterr().err
    assert (tmp_path / "notes.txt").read_text() == "mine"
    assert gpu_check.main(["--device", "cpu", "--tiny", "--out", str(tmp_path / "o"),
                           "--work", str(tmp_path / "o" / "w")]) == 2
    assert "inside --out, whose files come back from the device" in capsys.readouterr().err


def test_a_failing_step_is_one_line_and_the_part_goes_on(tmp_path):
    args = SimpleNamespace(device="cpu", scale="tiny", tiny=True, market_root=None, work=tmp_path, out=tmp_path)
    part = Part("speed", args)
    with part.step("one"):
        raise RuntimeError("CUDA out of memory\nmore lines")
    with part.step("two"):
        raise StepError("3 of 4 CUDA tests failed")
    with part.step("three"):
        raise ConfigError("configs/x.yaml: unknown key 'a'")
    with part.step("four"):
        part.table("t", ["a"], [[1]])
    saved = json.loads((tmp_path / "parts" / "speed.json").read_text())
    assert saved["errors"] == ["one: RuntimeError: CUDA out of memory", "two: 3 of 4 CUDA tests failed",
                               "three: configs/x.yaml: unknown key 'a'"]
    assert saved["tables"] == [{"title": "t", "columns": ["a"], "rows": [["1"]]}]


def test_cuda_test_outcomes_count_a_failing_set_up_and_tear_down():
    outcomes = Outcomes()
    for nodeid, when, outcome in [("t1", "setup", "passed"), ("t1", "call", "passed"), ("t1", "teardown", "passed"),
                                  ("t2", "setup", "skipped"), ("t3", "setup", "failed"),
                                  ("t4", "call", "failed"), ("t5", "call", "passed"), ("t5", "teardown", "failed")]:
        outcomes.pytest_runtest_logreport(SimpleNamespace(nodeid=nodeid, when=when, outcome=outcome,
                                                          failed=outcome == "failed"))
    assert outcomes.rows == [("t1", "passed"), ("t2", "skipped"), ("t3", "failed"), ("t4", "failed"),
                             ("t5", "passed"), ("t5", "failed")]


def test_training_flops_are_counted_by_hand():
    layer = nn.Linear(8, 4)
    x = torch.randn(3, 8)
    # forward 2*3*8*4 = 192; backward: the weight's gradient 192 (the input needs none)
    assert count_flops(lambda: layer(x).sum().backward()) == 384
    x.requires_grad_(True)
    assert count_flops(lambda: layer(x).sum().backward()) == 576  # + the input's gradient


def test_different_tensors_names_each_difference():
    a = {"w": torch.ones(2), "b": torch.zeros(1), "only_a": torch.ones(1)}
    b = {"w": torch.ones(2), "b": torch.tensor([1e-30]), "only_b": torch.ones(1)}
    assert different_tensors(a, b) == ["b", "only_a", "only_b"]
    assert different_tensors(a, dict(a)) == []
