"""bf16 on the CPU trains only after a self-test of the run's own model (reid/engine/cpu_bf16.py), evaluation on
the CPU is float32 whatever the run trained in, and each run records its machine (reid/machine.py).

The self-test's verdicts are checked on stand-ins for the model's pass, never on this CPU's bf16 kernels, whose
results vary by chance on some CPUs."""

from __future__ import annotations

import itertools
from copy import deepcopy
import json
import shutil
from pathlib import Path

import pytest
import torch
import yaml
from scipy.io import loadmat, savemat

from reid.analysis import compare, load_run
from reid.analysis.over_seeds import paired_groups, study_groups
from reid.engine import cpu_bf16
from reid.engine.cpu_bf16 import Pass, bf16_problem, require_cpu_bf16
from reid.errors import ConfigError
from reid.evaluate import evaluate_run
from reid.machine import cpu_model_and_flags, machine_kind, machine_record

from test_errors import run_train, sets, user_error

REPO = Path(__file__).resolve().parents[1]


def stand_in(*passes: Pass):
    """A model pass that returns ``passes`` in turn for bf16 calls and the last one for the float32 call."""
    bf16 = itertools.cycle(passes[:-1])

    def run_pass(dtype):
        return next(bf16) if dtype is torch.bfloat16 else passes[-1]
    return run_pass


def model_stand_in(*passes: Pass):
    """:func:`stand_in` in the place of :func:`reid.engine.cpu_bf16.model_pass`."""
    run_pass = stand_in(*passes)
    return lambda model, images, labels, dtype: run_pass(dtype)


def p(loss: float, *grad: float) -> Pass:
    return Pass(torch.tensor(loss), torch.tensor(grad))


def test_passes_that_agree_with_each_other_and_with_float32_are_accepted():
    assert bf16_problem(stand_in(p(2.30, 1.0, -2.0), p(2.31, 1.1, -1.9))) is None
    # the gradient of a batch of 2 may point elsewhere in float32; only its order of magnitude must agree
    assert bf16_problem(stand_in(p(2.30, 5.0, 0.0), p(2.31, 0.0, 1.0))) is None


@pytest.mark.parametrize("passes, said", [
    ((p(2.30, 1.0, -2.0), p(2.35, 1.0, -2.0), p(2.31, 1.0, -2.0)), "two identical bf16 passes gave different results"),
    ((p(2.30, 1.0, -2.0), p(2.30, 1.0, -2.5), p(2.31, 1.0, -2.0)), "two identical bf16 passes gave different results"),
    ((p(2.30, float("nan"), 1.0), p(2.31, 1.0, 1.0)), "NaN or inf"),
    ((p(2.90, 1.0, -2.0), p(2.31, 1.0, -2.0)), "far from float32's 2.31"),
    ((p(2.30, 1e30, 1.0), p(2.31, 1.0, 1.0)), "gradient's norm 1e+30 is far from float32's"),
])
def test_wrong_or_unrepeatable_passes_are_named(passes, said):
    assert said in bf16_problem(stand_in(*passes))


def test_the_refusal_is_one_line_naming_the_cpu_torch_and_the_remedy(synthetic_root, monkeypatch):
    from reid.config import load_config

    cfg = load_config(REPO / "configs" / "demo_standard.yaml", [f"data.root={synthetic_root}", "data.synthetic=null"])
    monkeypatch.setattr(cpu_bf16, "model_pass", model_stand_in(p(2.30, 1.0), p(2.40, 1.0), p(2.31, 1.0)))
    with pytest.raises(ConfigError) as e:
        require_cpu_bf16(cfg, None, 4)
    line = str(e.value)
    cpu, _ = cpu_model_and_flags()
    assert "\n" not in line
    for needle in ("train.precision = bf16", "resnet18 at 64x32 with a batch of 2", cpu, f"torch {torch.__version__}",
                   "--set train.precision=fp32"):
        assert needle in line, needle
    monkeypatch.setattr(cpu_bf16, "model_pass", model_stand_in(p(2.30, 1.0), p(2.31, 1.0)))
    require_cpu_bf16(cfg, None, 4)  # consistent: no error


def test_the_self_test_runs_the_model_twice_under_bf16_and_once_in_float32(monkeypatch, synthetic_root):
    """With the model's pass recorded: 2 bf16 calls + 1 float32 at the run's image size, with a batch of 2 and
    with the training batch per process (the dtypes and shapes are recorded, the numbers are the stand-in's)."""
    from reid.config import load_config

    cfg = load_config(REPO / "configs" / "demo_standard.yaml", [f"data.root={synthetic_root}", "data.synthetic=null"])
    calls = []

    def recording(model, images, labels, dtype):
        calls.append((tuple(images.shape), tuple(labels.shape), dtype))
        return p(1.0, 1.0)
    monkeypatch.setattr(cpu_bf16, "model_pass", recording)
    require_cpu_bf16(cfg, None, 10)
    assert cfg.train.batch_size == 32
    assert calls == [((b, 3, 64, 32), (b,), dtype) for b in (2, 32) for dtype in (torch.bfloat16, torch.bfloat16, None)]
    calls.clear()
    require_cpu_bf16(cfg, None, 10, world_size=3)  # under torchrun: the largest share, 11 of 32
    assert [shape[0] for shape, _, _ in calls] == [2, 2, 2, 11, 11, 11]


def test_model_pass_in_float32_is_repeatable_and_leaves_the_model_as_it_was():
    """The pass on a copy: two float32 passes equal bit for bit, the model's weights and BatchNorm statistics
    untouched (the run trains from them)."""
    from reid.models import build_model

    torch.manual_seed(0)
    model = build_model("resnet18", num_classes=5, pretrained="none")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    images, labels = torch.rand(2, 3, 32, 16), torch.tensor([1, 3])
    a, b = (cpu_bf16.model_pass(model, images, labels, None) for _ in range(2))
    assert torch.equal(a.loss, b.loss) and torch.equal(a.gradient, b.gradient)
    copy = deepcopy(model).train()
    torch.manual_seed(0)  # the pass's dropout mask
    assert a.loss.item() == pytest.approx(torch.nn.functional.cross_entropy(copy(images)[0], labels).item(), rel=1e-6)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_bf16_on_a_cpu_that_fails_the_self_test_stops_before_the_run_directory(synthetic_root, tmp_path, monkeypatch):
    """train.py ... --set train.precision=bf16 where the self-test fails: one line, exit 2, no run directory."""
    monkeypatch.setattr(cpu_bf16, "model_pass", model_stand_in(p(2.30, 1.0), p(2.45, 1.0), p(2.31, 1.0)))
    r = run_train(sets(synthetic_root, tmp_path / "cache", tmp_path / "out", "bf16", extra=("train.precision=bf16",)))
    user_error(r, "train.precision = bf16", "two identical bf16 passes gave different results",
               f"torch {torch.__version__}", "--set train.precision=fp32")
    assert not (tmp_path / "out" / "bf16").exists()


@pytest.mark.parametrize("precision", ["fp32", "auto"])
def test_the_self_test_is_not_run_for_float32_or_auto_on_the_cpu(precision, monkeypatch):
    from reid.config import load_config
    from reid.engine.distributed import DistInfo
    from reid.engine.run import check_cpu_bf16

    def fail(*args):
        raise AssertionError("the self-test ran")
    monkeypatch.setattr(cpu_bf16, "bf16_problem", fail)
    cfg = load_config(REPO / "configs" / "demo_standard.yaml", [f"train.precision={precision}"])
    check_cpu_bf16(cfg, torch.device("cpu"), DistInfo(), None, 4)
    with pytest.raises(AssertionError, match="the self-test ran"):  # bf16 does run it
        check_cpu_bf16(load_config(REPO / "configs" / "demo_standard.yaml", ["train.precision=bf16"]),
                       torch.device("cpu"), DistInfo(), None, 4)


# ----------------------------------------------------------------------------- evaluation in float32

def test_reevaluating_a_bf16_run_on_the_cpu_computes_in_float32(trained_demo_run, tmp_path, monkeypatch):
    """A run whose config says bf16 (trained so on a GPU): ``python -m reid.evaluate RUN_DIR`` on the CPU runs its
    model in float32: every convolution and linear layer sees and returns float32 (bf16 autocast would make
    them bfloat16), and the ranking equals the float32 one."""
    run = tmp_path / "run"
    shutil.copytree(trained_demo_run, run)
    fp32 = evaluate_run(run, device="cpu", progress=False)
    config = yaml.safe_load((run / "config.yaml").read_text())
    config["train"]["precision"] = "bf16"
    (run / "config.yaml").write_text(yaml.safe_dump(config))
    seen: set[torch.dtype] = set()
    original = torch.nn.Module.__call__

    def record(module, *args, **kwargs):
        out = original(module, *args, **kwargs)
        if isinstance(module, (torch.nn.Conv2d, torch.nn.Linear)):
            seen.update({args[0].dtype, out.dtype})
        return out
    monkeypatch.setattr(torch.nn.Module, "__call__", record)
    bf16 = evaluate_run(run, device="cpu", progress=False)
    assert seen == {torch.float32}
    assert bf16["mAP"] == fp32["mAP"] and bf16["cmc"] == fp32["cmc"]


# ----------------------------------------------------------------------------- the machine

def test_a_run_names_its_machine_in_results_and_log(trained_demo_run):
    results = json.loads((trained_demo_run / "results.json").read_text())
    here = machine_record(torch.device("cpu"))
    assert results["machine"] == json.loads(json.dumps(here))
    assert results["machine"]["torch"] == torch.__version__ and results["machine"]["cpu"] == cpu_model_and_flags()[0]
    log = (trained_demo_run / "log.txt").read_text()
    assert f"machine: {machine_kind(here)}" in log


def test_cpu_model_and_flags_read_from_cpuinfo(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nmodel name\t: Intel(R) Xeon(R) Platinum 8480+\n"
                    "flags\t\t: fpu sse avx512f avx512_bf16 amx_bf16 amx_tile\n\nprocessor\t: 1\n")
    assert cpu_model_and_flags(info) == ("Intel(R) Xeon(R) Platinum 8480+", ["amx_bf16", "amx_tile", "avx512_bf16",
                                                                            "avx512f"])


def two_machines(trained_demo_run, tmp_path) -> list[Path]:
    """Two copies of one run as seeds 0 and 1 of a config, and two of another config, the second config's seed 1
    recorded as trained on another CPU."""
    runs = []
    for name in ("base_s0", "base_s1", "other_s0", "other_s1"):
        shutil.copytree(trained_demo_run, tmp_path / name, ignore=shutil.ignore_patterns("checkpoints"))
        runs.append(tmp_path / name)
    results = json.loads((runs[3] / "results.json").read_text())
    results["machine"] = dict(results["machine"], cpu="Intel(R) Xeon(R) Platinum 8480+", cpu_flags=["amx_bf16"])
    results["mAP"] += 0.05
    (runs[3] / "results.json").write_text(json.dumps(results))
    for seed, run in zip((0, 1, 0, 1), runs):
        mat = run / "mini_batch_data.mat"
        m = {k: v for k, v in loadmat(mat).items() if not k.startswith("__") and not k.startswith("eval_")}
        m["config"] = yaml.safe_dump(dict(yaml.safe_load(str(m["config"][0])), seed=seed))
        savemat(mat, m)  # rank-1/mAP then come from results.json
    return runs


def test_a_comparison_of_runs_from_two_kinds_of_machine_says_so_in_one_line(trained_demo_run, tmp_path):
    runs = two_machines(trained_demo_run, tmp_path)
    _, table = compare([runs[0], runs[3]], out=tmp_path / "pair.png")
    notes = [line for line in table.splitlines() if "kinds of machine" in line]
    assert len(notes) == 1
    assert "Intel(R) Xeon(R) Platinum 8480+ (amx_bf16)" in notes[0] and "other_s1" in notes[0]
    assert f"{cpu_model_and_flags()[0]} (" in notes[0] and "base_s0" in notes[0]
    assert notes[0] in (tmp_path / "pair.md").read_text()
    _, same = compare([runs[0], runs[1]], out=tmp_path / "same.png")
    assert "kinds of machine" not in same


def test_a_study_pairs_seeds_only_on_one_kind_of_machine(trained_demo_run, tmp_path):
    runs = two_machines(trained_demo_run, tmp_path)
    groups = study_groups([load_run(r) for r in runs])
    d = paired_groups(groups[0], groups[1], "mAP")
    assert d.seeds == [0] and d.diffs == [0.0]  # seed 1's pair crosses machines: left out
    _, table = compare(runs, out=tmp_path / "study.png")
    assert sum("kinds of machine" in line for line in table.splitlines()) == 1
