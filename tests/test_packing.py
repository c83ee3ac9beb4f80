"""study.sh --gpus 0 --per-gpu auto: the number of runs packed on a GPU from its free memory and one run's
measured peak (reid/launch/packing.py), with stand-ins for the two memory queries (the GPU check's packing part
measures them on a GPU)."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import launch_in_process, stub_calls

from reid.launch import packing
from reid.launch.runs import CONTEXT_BYTES, MAX_PER_GPU, runs_per_gpu

GiB = 2**30


@pytest.mark.parametrize("free_gib, peak_gib, expected, why", [
    (80, 9.5, 7, "80.0 GiB free, one run's peak 9.5 GiB + 0.5 GiB CUDA context: 7 fit in 90% of the free memory"),
    (140, 1.5, MAX_PER_GPU, "63 fit in 90% of the free memory, capped at 8"),
    (4, 8, 1, "0 fit in 90% of the free memory; one run at a time"),
])
def test_runs_per_gpu_is_what_fits_in_the_free_memory_at_one_runs_peak(free_gib, peak_gib, expected, why):
    # by hand: 0.9 x 80 / (9.5 + 0.5) = 7.2; 0.9 x 140 / (1.5 + 0.5) = 63; 0.9 x 4 / 8.5 < 1
    assert CONTEXT_BYTES == GiB // 2
    n, text = runs_per_gpu(int(free_gib * GiB), int(peak_gib * GiB))
    assert n == expected and why in text


def test_study_per_gpu_auto_packs_the_runs_it_chose_and_says_why(stub_env, monkeypatch):
    """10 GiB free and a 3.5 GiB peak: 2 runs (0.9 x 10 / 4 = 2.25); the 4 runs of the study then train 2 at a
    time on GPU 0 (the stub's rendezvous waits for 2 together), never more. The peak is measured on the first
    run of the study, on the GPU with the least free memory."""
    from reid.launch.study import main

    tmp_path, env, a, b = stub_env
    asked = []

    def free(gpu):
        asked.append(("free", gpu))
        return {"0": 10 * GiB, "1": 30 * GiB}[gpu]

    def peak(trainer, job, gpu):
        asked.append(("peak", job.label, gpu, Path(trainer.script).name))
        return int(3.5 * GiB)

    monkeypatch.setattr(packing, "free_gpu_memory", free)
    monkeypatch.setattr(packing, "measured_peak_memory", peak)
    rv = tmp_path / "rendezvous"
    rv.mkdir()
    r = launch_in_process(main, [a, b, "--seeds", "0,1", "--gpus", "1,0", "--per-gpu", "auto"],
                          dict(env, STUB_RENDEZVOUS=str(rv), STUB_WAVE="4", STUB_SECONDS="0.2"))
    assert r.returncode == 0, r.stdout + r.stderr
    assert ("study: --per-gpu auto: 2 run(s) per GPU (GPU 0: 10.0 GiB free, one run's peak 3.5 GiB + 0.5 GiB "
            "CUDA context: 2 fit in 90% of the free memory)") in r.stdout
    assert asked[-1] == ("peak", "standard_s0", "0", "train.py")
    calls = stub_calls(tmp_path)
    assert len(calls) == 4 and max(c["sharing"] for c in calls) == 2  # 2 per GPU on 2 GPUs: 4 at once


def test_per_gpu_takes_a_number_or_auto(stub_env):
    from reid.launch.study import main

    tmp_path, env, a, b = stub_env
    r = launch_in_process(main, [a, "--seeds", "0", "--gpus", "0", "--per-gpu", "some"], env)
    assert r.returncode == 2 and "error: --per-gpu some: give a number of runs per GPU (e.g. 2) or auto" in r.stderr
    r = launch_in_process(main, [a, "--seeds", "0", "--per-gpu", "auto"], env)
    assert r.returncode == 2 and "--per-gpu needs --gpus" in r.stderr
    assert not stub_calls(tmp_path)
