"""scripts/study.sh: configs x seeds, resumable, spread over GPUs, failures reported at the end.

* Launcher logic with the stub trainer (tests/stub_trainer.py, fast): GPU assignment and
  packing (each run's CUDA_VISIBLE_DEVICES and how many shared its GPU), one run at a time on
  the CPU, a failing run that does not stop the others (the launcher's ``main`` called in this
  process, its trainers processes), usage errors (``bash scripts/study.sh``, the wrapper itself).
* The study's table and figure (what study.sh writes when every run finished, through
  ``write_comparison``), checked against numbers recomputed here with numpy from .mat files
  this test writes (their values are random, so no number of the table is a coincidence).
* One launch of the real train.py on synthetic data (tiny sizes): a killed study resumed (the
  finished run untouched, the interrupted one continued), then a bad override for one config.
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import launch_in_process, stub_calls
from PIL import Image
from scipy.io import loadmat

REPO = Path(__file__).resolve().parents[1]
STUDY = REPO / "scripts" / "study.sh"
DEMO = [REPO / "configs" / "demo_standard.yaml", REPO / "configs" / "demo_soft.yaml"]
T_975_DF2 = 4.302652729911275  # Student t, 0.975 quantile, 2 degrees of freedom (statistical tables)

pytestmark = pytest.mark.skipif(shutil.which("bash") is None, reason="study.sh needs bash")


def run_study(args, env, timeout=120, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(STUDY), *map(str, args)], env=env, capture_output=True, text=True,
                          timeout=timeout, cwd=REPO, **kw)


def launch(args, env) -> subprocess.CompletedProcess:
    """study.sh ARGS with the launcher in this process (tests/helpers.py); its trainers are processes."""
    from reid.launch.study import main

    return launch_in_process(main, args, env)


def names(configs, seeds) -> list[str]:
    return [f"{Path(c).stem}_s{s}" for s in seeds for c in configs]


# --------------------------------------------------------------------------- stub trainer


def test_study_spreads_and_packs_runs_over_the_gpus(stub_env):
    tmp_path, env, a, b = stub_env
    rv = tmp_path / "rendezvous"
    rv.mkdir()
    # The first four runs must all be running at once (the stub waits for them): 2 GPUs x 2 per GPU.
    r = launch([a, b, "--seeds", "0,1,2", "--gpus", "0,1", "--per-gpu", "2", "--set", "train.epochs=2"],
                  dict(env, STUB_RENDEZVOUS=str(rv), STUB_WAVE="4", STUB_SECONDS="0.2"))
    assert r.returncode == 0, r.stdout + r.stderr
    c = {x["name"]: x for x in stub_calls(tmp_path)}
    assert sorted(c) == sorted(names([a, b], [0, 1, 2]))
    for name, x in c.items():
        seed = name.rsplit("_s", 1)[1]
        assert x["set"] == ["train.epochs=2", f"seed={seed}", f"output.name={name}"] and x["resume"] == "auto"
    # Seed by seed, the GPUs taken in turn: the first wave is two runs on each GPU.
    assert {n: c[n]["cuda"] for n in names([a, b], [0, 1])} == {"standard_s0": "0", "soft_s0": "1",
                                                               "standard_s1": "0", "soft_s1": "1"}
    assert {x["cuda"] for x in c.values()} == {"0", "1"}
    assert max(x["sharing"] for x in c.values()) == 2  # never more than --per-gpu runs on one GPU
    first_wave_ends = min(c[n]["end"] for n in names([a, b], [0, 1]))
    assert all(c[n]["start"] < first_wave_ends for n in names([a, b], [0, 1]))
    assert all(c[n]["start"] >= first_wave_ends for n in names([a, b], [2]))  # waited for a free slot
    assert "[soft_s2] trained soft" in r.stdout  # several at once: output lines say whose they are
    assert (tmp_path / "outputs" / "study_standard_vs_soft.png").is_file()


def test_study_without_gpus_trains_one_run_at_a_time_unpinned_unless_told(stub_env):
    tmp_path, env, a, b = stub_env
    r = launch([a, b, "--seeds", "4,2", "--device", "cpu"], dict(env, STUB_SECONDS="0.1"))
    assert r.returncode == 0, r.stdout + r.stderr
    c = stub_calls(tmp_path)
    assert [x["name"] for x in c] == names([a, b], [4, 2])  # seed by seed, in the order given
    assert all(x["cuda"] is None and x["device"] == "cpu" for x in c)
    assert all(later["start"] >= earlier["end"] for earlier, later in zip(c, c[1:]))  # one at a time
    assert "\ntrained standard\n" in r.stdout and "[standard_s4]" not in r.stdout  # one at a time: no prefixes

    (tmp_path / "calls.jsonl").unlink()
    rv = tmp_path / "rendezvous"
    rv.mkdir()
    r = launch([a, b, "--seeds", "0", "--jobs", "2"], dict(env, STUB_RENDEZVOUS=str(rv), STUB_WAVE="2"))
    assert r.returncode == 0, r.stdout + r.stderr  # both ran at once, else the stub gives up
    assert [x["cuda"] for x in stub_calls(tmp_path)] == [None, None]


def test_study_failing_run_does_not_stop_the_others_and_is_named_with_why(stub_env):
    tmp_path, env, a, b = stub_env
    r = launch([a, b, "--seeds", "0,1"], dict(env, STUB_FAIL="soft_s0"))
    assert r.returncode == 1
    assert sorted(x["name"] for x in stub_calls(tmp_path)) == sorted(names([a, b], [0, 1]))  # the later runs too
    out = tmp_path / "outputs"
    assert (f"error: run soft_s0 ({b}) failed with exit code 3; its error line: error: stub failure of "
            f"soft_s0; its run directory is {out / 'soft_s0'} (output in {out / 'soft_s0.log'})") in r.stderr
    assert r.stderr.count("error: run ") == 1
    for name in set(names([a, b], [0, 1])) - {"soft_s0"}:
        assert f"run {name} (" in r.stdout and f"finished: {out / name}" in r.stdout
    assert "study: 3 of 4 runs finished" in r.stdout and "no comparison written" in r.stderr
    assert not list(out.glob("study_*"))
    assert "error: stub failure of soft_s0" in (out / "soft_s0.log").read_text()

    r = launch([a, b, "--seeds", "0,1"], env)  # fixed: rerun
    assert r.returncode == 0, r.stderr
    assert "study: 4 of 4 runs finished" in r.stdout
    md = (out / "study_standard_vs_soft.md").read_text()
    assert "| standard | 0, 1 |" in md and "| soft − standard | final val acc |" in md


def test_runs_that_fail_alike_are_one_summary_line_naming_them(stub_env):
    """A problem that only shows while the runs train (here every soft run's) is said once at the end."""
    tmp_path, env, a, b = stub_env
    r = launch([a, b, "--seeds", "0,1"], dict(env, STUB_FAIL="soft", STUB_FAIL_LINE="out of memory on the GPU"))
    assert r.returncode == 1
    out = tmp_path / "outputs"
    assert [line for line in r.stderr.splitlines() if line.startswith("error:")] == [
        "error: 2 runs failed with the same error line: error: out of memory on the GPU; runs soft_s0 (exit code 3), "
        f"soft_s1 (exit code 3); their output is in {out}/<run>.log; fix it and rerun this command to resume"]
    assert "study: 2 of 4 runs finished" in r.stdout


def test_study_usage_errors_train_nothing(stub_env):
    tmp_path, env, a, b = stub_env
    same_stem = tmp_path / "other" / "soft.yaml"
    same_stem.parent.mkdir()
    same_stem.write_text("# soft again\n")
    for args, message in [
        ([a, b], "give the seeds, e.g. --seeds 0,1,2"),
        ([a, b, "--seeds", "0,x"], "--seeds '0,x': give integers of at least 0"),
        ([a, b, "--seeds", "1,1"], "--seeds 1,1: a value is listed twice"),
        ([a, b, "--seeds", "0", "--set", "seed=3"], "list them with --seeds"),
        ([a, b, "--seeds", "0", "--set", "output.name=x"], "set output.root to choose the folder"),
        ([a, b, "--seeds", "0", "--set", "novalue"], "--set novalue is not key=value"),
        ([a, b, "--seeds", "0", "--per-gpu", "2"], "--per-gpu needs --gpus"),
        ([a, b, "--seeds", "0", "--gpus", "0", "--jobs", "2"], "with GPUs use --per-gpu"),
        ([a, b, "--seeds", "0", "--gpus", "0,0"], "a GPU is listed twice"),
        ([a, tmp_path / "missing.yaml", "--seeds", "0"], "missing.yaml not found"),
        ([a, b, same_stem, "--seeds", "0"], "two configs have the same file name"),
        (["--seeds", "0"], "give at least one config"),
        ([a, "--seeds", "0", "--bogus"], "unrecognized arguments: --bogus"),
    ]:
        r = run_study(args, env)
        assert r.returncode == 2 and message in r.stderr, (args, r.stderr)
        assert r.stderr.startswith("error: ") and "Traceback" not in r.stderr
    assert stub_calls(tmp_path) == []


# --------------------------------------------------------------------------- real trainer


def real_env() -> dict:
    env = dict(os.environ, PYTHON=sys.executable, OMP_NUM_THREADS="1")
    env.pop("CUDA_VISIBLE_DEVICES", None)
    return env


def set_args(overrides: list[str]) -> list[str]:
    return [a for o in overrides for a in ("--set", o)]


def oracle(run_dir: Path) -> dict[str, float]:
    """Final val accuracy (last epoch, val batches weighted by size), last rank-1 and mAP, in %, by numpy."""
    m = loadmat(run_dir / "mini_batch_data.mat")
    e, acc, w = m["val_epoch"][0], m["val_acc"][0], m["val_batch_size"][0]
    last = e == e.max()
    return {"final val acc": 100 * np.average(acc[last], weights=w[last]), "rank-1": 100 * m["eval_rank1"][0][-1],
            "mAP": 100 * m["eval_mAP"][0][-1]}


NUM = r"([+-]?\d+\.\d+)"


def write_study_runs(out: Path, stems: list[str], seeds: list[int]) -> None:
    """``out/<stem>_s<seed>/mini_batch_data.mat`` of 2 epochs with random numbers: the val batches of
    unequal sizes (so the weighting by size matters), an evaluation after each epoch."""
    from scipy.io import savemat

    rng = np.random.default_rng(5)
    for stem in stems:
        for s in seeds:
            rows = dict(train_loss=rng.uniform(1, 5, 14), train_acc=rng.uniform(0, 1, 14),
                        train_epoch=np.repeat([1.0, 2.0], 7), train_lr=np.full(14, 0.01),
                        train_batch_size=np.tile([6.0] * 6 + [4.0], 2), val_loss=rng.uniform(1, 5, 4),
                        val_acc=rng.choice([0, 1 / 6, 2 / 6, 3 / 6, 4 / 6], 4), val_epoch=np.repeat([1.0, 2.0], 2),
                        val_batch_size=np.array([6.0, 2.0, 6.0, 2.0]), eval_epoch=np.array([1.0, 2.0]),
                        eval_rank1=rng.uniform(0, 1, 2), eval_rank5=rng.uniform(0, 1, 2),
                        eval_rank10=rng.uniform(0, 1, 2), eval_mAP=rng.uniform(0, 1, 2))
            run = out / f"{stem}_s{s}"
            run.mkdir(parents=True)
            savemat(run / "mini_batch_data.mat", {**{k: v.reshape(1, -1) for k, v in rows.items()},
                                                  "criterion": stem, "config": f"seed: {s}\n"})


def test_study_table_and_figure_match_numpy(tmp_path):
    from reid.launch.cli import write_comparison

    out = tmp_path / "outputs"
    seeds, stems = [0, 1, 2], [c.stem for c in DEMO]
    write_study_runs(out, stems, seeds)
    # the study's comparison step (study.sh runs it once every run finished), on the runs in its order
    assert write_comparison([out / f"{stem}_s{s}" for s in seeds for stem in stems],
                            out / "study_demo_standard_vs_demo_soft.png")
    truth = {stem: {s: oracle(out / f"{stem}_s{s}") for s in seeds} for stem in stems}
    md = (out / "study_demo_standard_vs_demo_soft.md").read_text()
    metrics = ["final val acc", "rank-1", "mAP"]

    # mean ± sample std per config
    spread = 0.0
    for stem in stems:
        row = re.search(rf"^\| {stem} \| 0, 1, 2 \| (.*) \|$", md, re.M)
        assert row, md
        cells = [re.fullmatch(rf"{NUM} ± {NUM}%", c.strip()) for c in row.group(1).split("|")]
        for metric, cell in zip(metrics, cells):
            values = np.array([truth[stem][s][metric] for s in seeds])
            assert cell, row.group(0)
            assert float(cell.group(1)) == pytest.approx(values.mean(), abs=0.0051), (stem, metric)
            assert float(cell.group(2)) == pytest.approx(values.std(ddof=1), abs=0.0051), (stem, metric)
            spread += values.std(ddof=1)
    assert spread > 0  # the seeds really differ, so the check above is not vacuous

    # per-seed paired differences demo_soft − demo_standard, mean, 95% t interval, wins
    for metric in metrics:
        d = np.array([truth["demo_soft"][s][metric] - truth["demo_standard"][s][metric] for s in seeds])
        row = re.search(rf"^\| demo_soft − demo_standard \| {metric} \| (.*) \| {NUM} \| \[{NUM}, {NUM}\] \| "
                        rf"demo_soft > demo_standard in (\d) of 3 seeds(.*) \|$", md, re.M)
        assert row, (metric, md)
        per_seed = [float(v) for v in re.findall(rf"s\d {NUM}", row.group(1))]
        np.testing.assert_allclose(per_seed, d, atol=0.0051)
        half = T_975_DF2 * d.std(ddof=1) / np.sqrt(3)
        assert float(row.group(2)) == pytest.approx(d.mean(), abs=0.0051)
        assert float(row.group(3)) == pytest.approx(d.mean() - half, abs=0.0051)
        assert float(row.group(4)) == pytest.approx(d.mean() + half, abs=0.0051)
        assert int(row.group(5)) == int(np.sum(d > 0))
        ties = int(np.sum(d == 0))
        assert row.group(6) == (f" ({ties} tied)" if ties else "")

    # the decision on mAP (one look, one comparison: a 95% t interval) and the power line, against scipy
    from scipy import stats

    d = np.array([truth["demo_soft"][s]["mAP"] - truth["demo_standard"][s]["mAP"] for s in seeds])
    lo, hi = stats.ttest_1samp(d, 0.0).confidence_interval(0.95)
    verdict = "better, " if lo > 0 else "worse, " if hi < 0 else "undecided at 3 seeds, "
    line = re.search(rf"^- demo_soft vs demo_standard: (.*?)mAP {NUM} \[{NUM}, {NUM}\]", md, re.M)
    assert line and line.group(1) == verdict, md
    assert [float(line.group(i)) for i in (2, 3, 4)] == pytest.approx([d.mean(), lo, hi], abs=0.0051)
    power = re.search(r"^- demo_soft vs demo_standard \(sd of the paired mAP differences (\S+)\): 0.5 points: (.*) "
                      r"seeds, 1 point: (.*) seeds, 2 points: (.*) seeds$", md, re.M)
    assert power and float(power.group(1)) == pytest.approx(d.std(ddof=1), abs=0.0051), md
    for diff, n in zip((0.5, 1, 2), (power.group(i) for i in (2, 3, 4))):
        enough = [m for m in range(2, 1001)  # brute force over n: the first with 80% power at 95%
                  if (stats.t.ppf(0.975, m - 1) + stats.t.ppf(0.8, m - 1)) * d.std(ddof=1) / np.sqrt(m) <= diff]
        assert n == (str(enough[0]) if enough else "over 1000"), (diff, n)

    # the figure: mean curves with min-max bands, one colour per config
    png = out / "study_demo_standard_vs_demo_soft.png"
    pixels = np.asarray(Image.open(png).convert("RGB")).astype(int)
    assert pixels.shape == (800, 1200, 3)
    for band_rgb in ((199, 221, 236), (255, 223, 195)):  # C0 / C1 at alpha 0.25 over white
        assert (np.abs(pixels - band_rgb).max(axis=2) <= 2).sum() > 100, band_rgb
    from reid.analysis import load_run, study_figure, study_groups

    groups = study_groups([load_run(out / f"{stem}_s{s}") for s in seeds for stem in stems])
    fig = study_figure(groups, metrics=["train_loss"])
    (ax,) = fig.axes
    assert [t.get_text() for t in ax.get_legend().get_texts()] == [
        "demo_standard (mean of 3 seeds, band min-max)", "demo_soft (mean of 3 seeds, band min-max)"]
    for stem, band, line in zip(stems, ax.collections, ax.lines):
        curves = np.stack([loadmat(out / f"{stem}_s{s}" / "mini_batch_data.mat")["train_loss"][0] for s in seeds])
        np.testing.assert_allclose(line.get_ydata(), curves.mean(0))
        ys = band.get_paths()[0].vertices[:, 1]
        assert ys.min() == pytest.approx(curves.min()) and ys.max() == pytest.approx(curves.max())


def test_study_real_trainer_killed_mid_run_then_resumed(tmp_path, tiny_overrides):
    """The launch of study.sh with the real train.py (the others use the stub trainer): a real
    ``bash scripts/study.sh`` process killed with its trainer in the middle of the run; the rerun
    (in process) continues that run from its checkpoint."""
    out = tmp_path / "outputs"
    args = [DEMO[0], "--seeds", "0", "--device", "cpu",
            *set_args([*tiny_overrides, "checkpoint.every_steps=2", "eval.every_epochs=0"])]
    run = out / "demo_standard_s0"
    proc = subprocess.Popen(["bash", str(STUDY), *map(str, args)], env=real_env(), cwd=REPO, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 600
        while not (run / "mini_batch_data.mat").exists():  # checkpointed mid-epoch (then the .mat)
            assert proc.poll() is None and time.time() < deadline, "the study ended before it could be killed"
            time.sleep(0.02)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the launcher and its trainer, as a crash would
        proc.wait()
    assert not torch.load(run / "checkpoints" / "last.pt", weights_only=True)["finished"]
    before = loadmat(run / "mini_batch_data.mat")["train_loss"][0]

    r = launch(args, real_env())  # the rerun: the launcher in this process, its trainer a process
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr
    assert "resumed from" in (run / "log.txt").read_text()
    assert torch.load(run / "checkpoints" / "last.pt", weights_only=True)["finished"]
    after = loadmat(run / "mini_batch_data.mat")["train_loss"][0]
    assert before.size < after.size == 2 * 7  # 2 epochs of 7 mini-batches
    np.testing.assert_array_equal(after[:before.size], before)  # continued, not restarted
    assert "study: 1 of 1 runs finished" in r.stdout and (out / "study_demo_standard.md").is_file()


def test_study_bad_override_for_one_config_is_named_and_nothing_trains(stub_env):
    """demo_soft's criterion is a {name, uniform_weight} section, demo_standard's a plain name: the override
    is a mistake for demo_standard only; the study names it in one line and trains neither."""
    tmp_path, env, _, _ = stub_env
    r = launch([*DEMO, "--seeds", "2", "--set", f"output.root={tmp_path / 'outputs'}",
                "--set", "criterion.uniform_weight=0.5"], env)
    assert r.returncode == 2 and stub_calls(tmp_path) == [] and r.stdout == ""
    assert r.stderr == (f"error: {DEMO[0]}: --set criterion.uniform_weight=0.5: 'criterion' is not a section, so "
                        "'criterion.uniform_weight' cannot be set\n")


def only_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]


CHECKED_BEFORE_TRAINING = ["imagenet_not_cached", "weights_file_missing", "set_typo", "set_typo_print_commands",
                           "set_typo_until_decided", "two_configs_two_problems", "grid_criterion_value_abc",
                           "grid_criterion_value_negative", "grid_two_bad_values", "grid_key_typo"]


@pytest.mark.parametrize("case", CHECKED_BEFORE_TRAINING)
def test_every_config_and_value_is_checked_before_anything_trains_each_problem_in_one_line(stub_env, tmp_path, case):
    """Found in a first study: one mistake, a dozen copies of its error. Each problem is now one line naming
    the configs it concerns, exit 2, nothing trained, in every mode (here, --print-commands, --until-decided)."""
    _, env, standard, soft = stub_env
    hub = tmp_path / "torch_home"  # an empty torch hub: no ImageNet weights cached
    env = dict(env, TORCH_HOME=str(hub))
    smoothing = tmp_path / "configs" / "smoothing.yaml"
    smoothing.write_text("criterion: {name: label_smoothing, epsilon: 0.1}\nmodel: {pretrained: none}\n"
                         f"output: {{root: {tmp_path / 'outputs'}}}\n")
    cached = hub / "hub" / "checkpoints" / "resnet50-0676ba61.pth"  # torchvision's ResNet-50 IMAGENET1K_V1 file
    typo = f"{standard}, {soft}: --set train.epoch=3: unknown key 'train.epoch'; did you mean 'train.epochs'?"
    args, lines = {
        "imagenet_not_cached": (
            [standard, soft, "--seeds", "0,1,2", "--set", "model.pretrained=imagenet"],
            [f"{standard}, {soft}: model.pretrained=imagenet: the ImageNet weights for resnet50 are not cached "
             f"({cached} is missing), and the runs are not started to download them; download "
             f"https://download.pytorch.org/models/resnet50-0676ba61.pth into {cached.parent}/, or set "
             "model.pretrained to the file's path, or to none"]),
        "weights_file_missing": (
            [standard, soft, "--seeds", "0", "--set", f"model.pretrained={tmp_path / 'trunk.pth'}"],
            [f"{standard}, {soft}: model.pretrained: weights file {tmp_path / 'trunk.pth'} does not exist; give "
             "the path of a .pth state dict, 'imagenet' or 'none'"]),
        "set_typo": ([standard, soft, "--seeds", "0,1", "--set", "train.epoch=3"], [typo]),
        "set_typo_print_commands": (
            [standard, soft, "--seeds", "0,1", "--set", "epochs=2", "--print-commands"],
            [f"{standard}, {soft}: --set epochs=2: unknown key 'epochs'; did you mean 'train.epochs'?"]),
        "set_typo_until_decided": ([standard, soft, "--until-decided", "--set", "train.epoch=3"], [typo]),
        "two_configs_two_problems": (
            [*DEMO, "--seeds", "0", "--set", "criterion.eps=0.2", "--set", f"output.root={tmp_path / 'outputs'}"],
            [f"{DEMO[0]}: --set criterion.eps=0.2: 'criterion' is not a section, so 'criterion.eps' cannot be set",
             f"{DEMO[1]}: criterion 'soft_cross_entropy' has no parameter 'eps'; valid parameters: weight, "
             "uniform_weight"]),
        "grid_criterion_value_abc": (
            [*DEMO, "--seeds", "0", "--grid", "criterion.uniform_weight=0.25,abc", "--set",
             f"output.root={tmp_path / 'outputs'}"],
            [f"--grid criterion.uniform_weight=abc ({DEMO[1]}): criterion 'soft_cross_entropy': uniform_weight "
             "must be a number >= 0, got 'abc'"]),
        "grid_criterion_value_negative": (
            [*DEMO, "--seeds", "0", "--grid", "criterion.uniform_weight=-1,0.5", "--set",
             f"output.root={tmp_path / 'outputs'}"],
            [f"--grid criterion.uniform_weight=-1 ({DEMO[1]}): criterion 'soft_cross_entropy': uniform_weight "
             "must be a number >= 0, got -1"]),
        "grid_two_bad_values": (
            [standard, smoothing, "--seeds", "0", "--grid", "criterion.epsilon=0.1,1.5,abc"],
            [f"--grid criterion.epsilon=1.5 ({smoothing}): criterion 'label_smoothing': epsilon must be a number "
             "in [0, 1), got 1.5",
             f"--grid criterion.epsilon=abc ({smoothing}): criterion 'label_smoothing': epsilon must be a number "
             "in [0, 1), got 'abc'"]),
        "grid_key_typo": (  # every value fails alike: one line
            [standard, soft, "--seeds", "0", "--grid", "optim.lrr=0.1,0.2"],
            [f"--grid optim.lrr=0.1,0.2 ({soft}): unknown key 'optim.lrr'; did you mean 'optim.lr'?"]),
    }[case]
    r = launch(args, env)
    assert (r.returncode, only_lines(r.stderr)) == (2, [f"error: {line}" for line in lines]), r.stderr
    assert r.stdout == "" and stub_calls(tmp_path) == [] and not (tmp_path / "outputs").exists()


def test_cached_imagenet_weights_pass_the_check(stub_env, tmp_path):
    """The check looks at the torch hub cache: with the file there, the runs train (the stub trainer loads
    nothing)."""
    _, env, standard, soft = stub_env
    cached = tmp_path / "torch_home" / "hub" / "checkpoints" / "resnet50-0676ba61.pth"
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"")
    r = launch([standard, soft, "--seeds", "0", "--set", "model.pretrained=imagenet"],
               dict(env, TORCH_HOME=str(tmp_path / "torch_home")))
    assert r.returncode == 0, r.stderr
    assert sorted(c["name"] for c in stub_calls(tmp_path)) == ["soft_s0", "standard_s0"]


def test_grid_values_are_yaml_a_bracketed_list_is_one_value_and_a_value_listed_twice_is_refused(stub_env):
    tmp_path, env, standard, soft = stub_env

    def commands(*grid: str) -> list[str]:
        r = launch([standard, soft, "--seeds", "0", "--print-commands", *(a for g in grid for a in ("--grid", g))],
                   env)
        assert r.returncode == 0, r.stderr
        return r.stdout.splitlines()

    (one,) = [c for c in commands("data.size=[64,32]") if "soft" in c]
    assert "--set 'data.size=[64,32]' --set seed=0 --set output.name=soft_size64-32_s0 " in one, one
    two = [c for c in commands("data.size=[64,32], [128,64]", "optim.lr=0.1") if "soft" in c]
    assert [re.search(r"output.name=(\S+)", c).group(1) for c in two] == ["soft_size64-32_lr0.1_s0",
                                                                          "soft_size128-64_lr0.1_s0"]
    assert "--set 'data.size=[128,64]' --set optim.lr=0.1 " in two[1]
    for grid, twice in [("optim.lr=0.5,0.5", "0.5 and 0.5"), ("optim.lr=0.5,0.50", "0.5 and 0.50"),
                        ("data.size=[64,32],[64, 32]", "[64,32] and [64, 32]")]:
        r = launch([standard, soft, "--seeds", "0", "--grid", grid], env)
        assert (r.returncode, r.stderr) == (2, f"error: --grid {grid}: the value {twice.split(' and ')[1]} is "
                                               f"listed twice ({twice}); list each value once\n")
    assert stub_calls(tmp_path) == []


def test_a_stop_signal_while_a_trainer_starts_does_not_leave_it_running(stub_env, monkeypatch):
    """SIGTERM reaches the launcher right after a trainer process began and before the launcher recorded it:
    that trainer is stopped and waited for like the others, not left running (holding its run lock)."""
    from reid.launch import jobs as jobs_module
    from reid.launch.runs import Job, TrainerCommand

    tmp_path, environ, standard, _ = stub_env
    for key, value in dict(environ, STUB_SECONDS="60").items():
        monkeypatch.setenv(key, value)
    started, real_popen = [], subprocess.Popen

    def popen(*args, **kwargs):
        proc = real_popen(*args, **kwargs)
        started.append(proc)
        os.kill(os.getpid(), signal.SIGTERM)  # delivered before Popen's caller gets the process
        return proc

    monkeypatch.setattr(jobs_module.subprocess, "Popen", popen)
    job = Job("standard", standard, [])
    job.resolve()
    trainer = TrainerCommand.of(REPO / "train.py", "cpu")
    with pytest.raises(KeyboardInterrupt):
        jobs_module.run_jobs([job], [None], trainer, out=io.StringIO())
    assert len(started) == 1 and started[0].poll() is not None  # stopped and waited for, not orphaned


def test_until_decided_adds_seeds_only_where_undecided_and_writes_the_decisions(stub_env):
    """standard vs two --grid variants of soft: one 2 points ahead on every seed (decided better at the first
    look, seeds 0-2), one as good with a spread of a point (it gets seed 3 with the baseline, then is undecided
    at --max-seeds 4). Runs of the decided variant stop at seed 2; stdout and the study's .md carry one decision
    line each; the same command again trains nothing more and decides the same."""
    tmp_path, env, standard, soft = stub_env
    finished = tmp_path / "finished.pt"
    torch.save({"finished": True, "epoch": 60}, finished)  # the stub configs' 60 epochs (base.yaml)
    env = dict(env, STUB_CHECKPOINT=str(finished), STUB_MAP=json.dumps(
        {"standard": [0.0, 0.001], "soft_lr0.01": [0.02, 0.001], "soft_lr0.02": [0.0, 0.01]}))
    args = [standard, soft, "--grid", "optim.lr=0.01,0.02", "--until-decided", "--max-seeds", "4", "--margin", "0.1",
            "--device", "cpu"]
    r = launch(args, env)
    assert r.returncode == 0, r.stdout + r.stderr
    names = sorted(c["name"] for c in stub_calls(tmp_path))
    assert names == sorted([f"{v}_s{s}" for v in ("standard", "soft_lr0.02") for s in range(4)] +
                           [f"soft_lr0.01_s{s}" for s in range(3)])
    assert all("optim.lr=0.01" in c["set"] for c in stub_calls(tmp_path) if c["name"].startswith("soft_lr0.01"))
    # after look 1, where each comparison stands, then the next round with its baseline named first
    lines = r.stdout.splitlines()
    first = lines.index("study: look 1 of 2: seeds 0..2 of standard (the baseline), soft_lr0.01, soft_lr0.02, "
                        "9 run(s) to train")
    second = lines.index("study: look 2 of 2: seeds 0..3 of standard (the baseline), soft_lr0.02, 2 run(s) to train")
    standing = [line for line in lines[first:second] if " vs standard: " in line]
    assert len(standing) == 2 and standing[0].startswith("soft_lr0.01 vs standard: better, mAP +"), standing
    from scipy import stats

    out = tmp_path / "outputs"
    d = np.array([loadmat(out / f"soft_lr0.02_s{s}" / "mini_batch_data.mat")["eval_mAP"][0][-1]
                  - loadmat(out / f"standard_s{s}" / "mini_batch_data.mat")["eval_mAP"][0][-1] for s in range(3)]) * 100
    lo, hi = stats.ttest_1samp(d, 0.0).confidence_interval(1 - 0.05 / (2 * 2))  # 2 looks x 2 comparisons
    assert standing[1] == f"soft_lr0.02 vs standard: not decided yet, mAP {d.mean():+.2f} [{lo:+.2f}, {hi:+.2f}], " \
                          "3 seeds", (standing, d)
    better = re.search(r"^soft_lr0.01 vs standard: better, mAP \+(\S+) \[.*\], 3 seeds \(decided at look 1\)$",
                       r.stdout, re.M)
    assert better and float(better.group(1)) == pytest.approx(2.0, abs=0.3), r.stdout
    assert re.search(r"^soft_lr0.02 vs standard: undecided at 4 seeds, mAP ", r.stdout, re.M), r.stdout
    md = (tmp_path / "outputs" / "study_standard_vs_soft_lr0.01_vs_soft_lr0.02.md").read_text()
    assert "- soft_lr0.01 vs standard: better" in md and "- soft_lr0.02 vs standard: undecided at 4 seeds" in md
    again = launch(args, env)
    assert again.returncode == 0 and len(stub_calls(tmp_path)) == len(names)  # every run had finished
    assert [line for line in again.stdout.splitlines() if " vs standard: " in line][-2:] == \
        [line for line in r.stdout.splitlines() if " vs standard: " in line][-2:]




def test_a_rerun_that_would_change_finished_runs_trains_nothing_and_says_how_to_ask_for_it(stub_env):
    """Found: a rerun with --set optim.lr=0.01 failed in each run with a message naming output.name (a study
    sets it itself), and one with more train.epochs extended the finished runs in place, silently."""
    from reid.config import load_config, to_dict

    tmp_path, env, standard, soft = stub_env
    out = tmp_path / "outputs"
    args = [standard, soft, "--seeds", "0,1", "--set", "train.epochs=2"]
    assert launch(args, env).returncode == 0
    for config in (standard, soft):  # each run's checkpoint as train.py writes it when it finishes
        for seed in (0, 1):
            name = f"{config.stem}_s{seed}"
            settings = to_dict(load_config(config, ["train.epochs=2", f"seed={seed}", f"output.name={name}"]))
            (out / name / "checkpoints").mkdir()
            torch.save({"format": 1, "finished": True, "epoch": 2, "config": settings},
                       out / name / "checkpoints" / "last.pt")
    trained = len(stub_calls(tmp_path))
    runs = "runs standard_s0, soft_s0, standard_s1, soft_s1"

    r = launch([*args, "--set", "train.epochs=3"], env)
    assert (r.returncode, r.stdout) == (2, "")
    assert r.stderr == (f"error: {runs} in {out}/ finished 2 epochs, and train.epochs=3 would extend them in place "
                        "(the study's table written before would no longer match them); add --extend to train them "
                        "on, or set output.root to another folder for a new study\n")
    r = launch([*args, "--set", "optim.lr=0.01"], env)
    assert (r.returncode, r.stdout) == (2, "")
    assert r.stderr == (f"error: {runs} in {out}/ were trained with other settings (differs in optim.lr), so this "
                        f"study cannot continue them; for a new study set output.root to another folder (e.g. "
                        f"--set output.root={out}_2), or give the settings they were trained with\n")
    for other in (["--print-commands"], ["--until-decided"]):  # seeds 0..2 at look 1: seeds 0 and 1 finished
        r = launch([standard, soft, "--set", "train.epochs=3", *other, *([] if other[0] == "--until-decided" else
                                                                        ["--seeds", "0,1"])], env)
        assert r.returncode == 2 and f"error: {runs} in {out}/ finished 2 epochs" in r.stderr, r.stderr
        assert "study: look" not in r.stdout and "train.py" not in r.stdout
    assert len(stub_calls(tmp_path)) == trained  # nothing trained

    r = launch([*args, "--set", "train.epochs=3", "--extend"], env)
    assert r.returncode == 0, r.stderr
    assert len(stub_calls(tmp_path)) == trained + 4 and "study: 4 of 4 runs finished" in r.stdout
    assert launch(args, env).returncode == 0  # the runs as they were trained: nothing to say


def test_ctrl_c_in_a_study_stops_its_run_with_a_checkpoint_and_the_same_command_resumes_it_exactly(demo_study,
                                                                                                   tmp_path):
    """Ctrl-C (SIGINT to the study's process group, as a terminal sends it) while demo_standard_s0 trains its
    first epoch, before any checkpoint: the run stops at the next step boundary with a checkpoint, as SIGTERM
    stops it, and the launcher says the same command resumes it; that command ends the run exactly as the
    uninterrupted one (conftest's demo_study)."""
    from helpers import assert_same_run

    reference_root, overrides = demo_study
    out = tmp_path / "outputs"
    args = [DEMO[0], "--seeds", "0", "--device", "cpu", *set_args([*overrides, f"output.root={out}"])]
    run, log = out / "demo_standard_s0", out / "demo_standard_s0.log"
    proc = subprocess.Popen(["bash", str(STUDY), *map(str, args)], env=real_env(), cwd=REPO, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 600
        # the step line printed after the first training step (no terminal: no bar): the run is in epoch 1
        while not (log.exists() and "epoch 1/2 train: step 1/7" in log.read_text()):
            assert proc.poll() is None and time.time() < deadline, "the study ended before it could be stopped"
            time.sleep(0.02)
        os.killpg(proc.pid, signal.SIGINT)
        _, err = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 130, err
    assert "interrupted: demo_standard_s0 stopped with a checkpoint, and the same command resumes it" in err, err
    state = torch.load(run / "checkpoints" / "last.pt", weights_only=True)
    assert state["epoch"] == 1 and 1 <= state["step"] < 7 and not state["epoch_done"] and not state["finished"]
    assert f"stopped at epoch 1, step {state['step']}: checkpoint written" in log.read_text()

    r = launch(args, real_env())  # the same command
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr
    assert f"resumed from {run / 'checkpoints' / 'last.pt'} at epoch 1, step {state['step']}" in \
        (run / "log.txt").read_text()
    assert_same_run(reference_root / "demo_standard_s0", run)
    assert not (run / "checkpoints" / "previous.pt").exists()  # a finished run keeps last.pt alone
