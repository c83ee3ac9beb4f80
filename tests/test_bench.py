"""scripts/bench.py runs end to end on small problems (speed itself is never asserted)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch
from torch import nn

from reid.cli import parse_int_list
from reid.engine.device import CompiledWithFallback
from reid.errors import ReidError
from tools.bench.timing import timed
from tools.bench.train import compile_outcome, still_compiled

REPO = Path(__file__).resolve().parents[1]


def bench_main():
    """scripts/bench.py's main, called in this process."""
    spec = importlib.util.spec_from_file_location("bench_script", REPO / "scripts" / "bench.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


def bench(capsys, *args: str) -> str:
    assert bench_main()(list(args)) == 0
    return capsys.readouterr().out


def test_bench_train_prints_both_loops_and_their_ratio(capsys):
    out = bench(capsys, "train", "--device", "cpu", "--model", "resnet18", "--batch", "4", "--size", "32x16",
                "--steps", "2", "--warmup", "1")
    assert "(a) bare forward/backward/step" in out and "(b) full trainer step" in out
    assert "(b)/(a) = " in out and "projected Market-1501 epoch" in out and "compile off" in out


def test_bench_eval_agrees_with_the_per_query_loop(capsys):
    out = bench(capsys, "eval", "--device", "cpu", "--queries", "60", "--gallery", "500", "--junk", "40",
                "--distractors", "30", "--ids", "25", "--dim", "32", "--repeats", "1", "--loop-queries", "30")
    assert "agreement with the numpy loop on its 30 queries: |dmAP| = 0.00e+00, max |dCMC| = 0.00e+00" in out


def test_bench_data_compares_the_two_pipelines_on_the_same_images(capsys):
    out = bench(capsys, "data", "--images", "64", "--batch-size", "21", "--size", "64", "32", "--repeats", "1")
    assert "(a) classic" in out and "(b) cached" in out and "speedup" in out


def test_bench_pack_measures_one_run_alone_and_runs_packed(capsys):
    # called in this process: the workers it starts (1, then 2 at once) are processes of their own
    out = bench(capsys, "pack", "--device", "cpu", "--model", "resnet18", "--batch", "4", "--size", "32x16",
                "--steps", "1", "--warmup", "1", "--runs", "2", "--seconds", "0.2")
    rows = [line for line in out.splitlines() if line.startswith("| ") and line.split("|")[1].strip().isdigit()]
    assert [int(row.split("|")[1]) for row in rows] == [1, 2]  # one run alone is always the reference
    assert rows[0].split("|")[4].strip() == "1.00x"


def test_bench_pack_rejects_a_bad_run_count(capsys):
    assert bench_main()(["pack", "--device", "cpu", "--runs", "0,2"]) == 2
    assert "error: --runs '0,2': give integers of at least 1 separated by commas" in capsys.readouterr().err


def test_the_compile_row_says_when_the_model_fell_back_to_eager():
    net = CompiledWithFallback(nn.Linear(2, 2))

    class BrokenCompiler(nn.Module):
        def forward(self, *args):
            raise RuntimeError("no C compiler")

    net.compiled = BrokenCompiler()
    assert still_compiled(net)
    net(torch.zeros(1, 2))  # the compiler fails at the first call: one warning, eager from then on
    assert not still_compiled(net) and not still_compiled(nn.Linear(2, 2))
    assert [compile_outcome(False, False), compile_outcome(True, True), compile_outcome(True, False)] == [
        "off", "on", "fell back to eager"]


def test_integer_lists_are_parsed_once_with_errors_naming_the_option():
    assert parse_int_list("1,2,4", "--runs", minimum=1) == [1, 2, 4]
    assert parse_int_list(" 3, 0", "--seeds") == [3, 0]
    for text, message in [("0", "--runs '0': give integers of at least 1"), ("a,b", "--runs 'a,b': give integers"),
                          ("", "--runs '': give integers"), ("2,2", "--runs 2,2: a value is listed twice")]:
        with pytest.raises(ReidError, match=message):
            parse_int_list(text, "--runs", minimum=1)


def test_the_timer_times_each_call_after_the_warm_up_and_returns_the_last_result():
    calls = []
    seconds, out = timed(lambda: calls.append(len(calls)) or len(calls), repeats=3, warmup=2)
    assert calls == [0, 1, 2, 3, 4] and out == 5 and len(seconds) == 3 and min(seconds) >= 0


def test_bench_epoch_times_each_part_of_an_epoch_with_the_checkpoint_waited_for_and_in_the_background(capsys):
    out = bench(capsys, "epoch", "--device", "cpu", "--model", "resnet18", "--size", "32x16", "--batch", "8",
                "--ids", "4", "--epochs", "3", "--rounds", "1")
    rows = {line.split("|")[1].strip(): line.split("|")[2:-1] for line in out.splitlines()
            if line.startswith("| ") and not line.startswith("| part")}
    assert list(rows) == ["train steps", "val phase", "checkpoint", ".mat and log", "TensorBoard", "epoch"]
    assert [c.strip() for c in rows["epoch"]][1::2] == ["100.0%", "100.0%"]
    assert float(rows["checkpoint"][0]) > 0 and float(rows["val phase"][2]) > 0
    assert "the background checkpoint made the epoch" in out
