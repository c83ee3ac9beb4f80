"""The CUDA-path decisions, checked on the CPU: precision, resume across precisions, determinism
flags, TF32, fused optimisers, a lazy compiler failure, channels-last batches, the benchmark's NaN stop."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import yaml
from torch import nn

from reid.config import load_config
from reid.data import BatchAugment, batch_generator, eval_transform
from reid.engine import trainer as trainer_module
from reid.engine.device import CompiledWithFallback, autocast_dtype, configure_backends, eval_autocast_dtype
from reid.engine.optim import fused_for
from reid.engine.run import train
from reid.errors import TrainingDivergedError

REPO = Path(__file__).resolve().parents[1]
CUDA = torch.device("cuda")


def config(overrides, *more, name="demo_standard.yaml"):
    return load_config(REPO / "configs" / name, [*overrides, *more])


@pytest.mark.parametrize("capability, expected", [((7, 0), torch.float16), ((7, 5), torch.float16),
                                                  ((8, 0), torch.bfloat16), ((9, 0), torch.bfloat16)])
def test_auto_precision_is_bf16_only_where_the_gpu_computes_it_natively(capability, expected, monkeypatch):
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)  # as on a V100 (emulation)
    assert autocast_dtype("auto", CUDA) is expected
    assert autocast_dtype("auto", torch.device("cpu")) is None
    assert autocast_dtype("bf16", CUDA) is torch.bfloat16 and autocast_dtype("fp32", CUDA) is None


def test_runs_are_evaluated_in_fp32_on_the_cpu_whatever_they_trained_in(monkeypatch):
    cpu = torch.device("cpu")
    assert [eval_autocast_dtype(p, cpu) for p in ("fp16", "bf16", "fp32", "auto")] == [None] * 4
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda *a, **k: (9, 0))
    assert eval_autocast_dtype("fp16", CUDA) is torch.float16 and eval_autocast_dtype("bf16", CUDA) is torch.bfloat16


def test_resume_across_precisions_loads_the_scaler_state_and_says_so(tiny_overrides, monkeypatch, capsys):
    """fp32 (scaler disabled, saves {}) -> fp16 (scaler on) -> fp32 again, one epoch each (2 steps), on the
    small model of tests/ddp_equivalence.py (fp16 convolutions are slow on the CPU; the scaler is the point)."""
    tiny_overrides = [*tiny_overrides, "train.batch_size=20", f"imports=[{REPO / 'tests' / 'ddp_equivalence.py'}]",
                      "model.name=batch_free_net"]
    cfg = config(tiny_overrides, "train.epochs=1", "eval.every_epochs=0")
    out = train(cfg, device="cpu", progress=False)
    assert torch.load(out / "checkpoints" / "last.pt", weights_only=True)["scaler"] == {}

    # as on a GPU of compute capability < 8 with precision auto: fp16 and the GradScaler
    monkeypatch.setattr(trainer_module, "autocast_dtype", lambda precision, device: torch.float16)
    train(config(tiny_overrides, "train.epochs=2", "eval.every_epochs=0"), device="cpu", resume="auto", progress=False)
    state = torch.load(out / "checkpoints" / "last.pt", weights_only=True)
    assert state["precision"] == "fp16" and state["scaler"]["scale"] > 0 and state["epoch"] == 2

    monkeypatch.undo()
    train(config(tiny_overrides, "train.epochs=3", "eval.every_epochs=0"), device="cpu", resume="auto", progress=False)
    state = torch.load(out / "checkpoints" / "last.pt", weights_only=True)
    assert state["precision"] == "fp32" and state["scaler"] == {} and state["epoch"] == 3
    log = (out / "log.txt").read_text()
    assert "warning: the checkpoint was trained in fp32 and continues in fp16 on cpu" in log
    assert "warning: the checkpoint was trained in fp16 and continues in fp32 on cpu" in log
    assert "Traceback" not in capsys.readouterr().err


def test_a_run_trained_in_fp16_is_evaluated_and_embedded_on_the_cpu(tiny_overrides):
    import reid
    from reid.evaluate import evaluate_run

    out = train(config(tiny_overrides, "train.epochs=1", "eval.every_epochs=0"), device="cpu", progress=False)
    fp32 = evaluate_run(out, device="cpu", progress=False)
    images = torch.randint(0, 256, (2, 3, 32, 16), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    fp32_features = reid.load_model(out, device="cpu").embed(images)
    raw = yaml.safe_load((out / "config.yaml").read_text())
    raw["train"]["precision"] = "fp16"  # as written by a run on a GPU
    (out / "config.yaml").write_text(yaml.safe_dump(raw))
    fp16_run = evaluate_run(out, device="cpu", progress=False)
    assert fp16_run["mAP"] == fp32["mAP"] and fp16_run["cmc"] == fp32["cmc"]
    assert torch.equal(reid.load_model(out, device="cpu").embed(images), fp32_features)  # as evaluate: float32


@pytest.fixture
def restore_backends():
    saved = (torch.are_deterministic_algorithms_enabled(), torch.backends.cudnn.deterministic,
             torch.backends.cudnn.benchmark, torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32,
             os.environ.get("CUBLAS_WORKSPACE_CONFIG"))
    os.environ.pop("CUBLAS_WORKSPACE_CONFIG", None)
    yield
    torch.use_deterministic_algorithms(saved[0])
    (torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark, torch.backends.cuda.matmul.allow_tf32,
     torch.backends.cudnn.allow_tf32) = saved[1:5]
    os.environ.pop("CUBLAS_WORKSPACE_CONFIG", None)
    if saved[5] is not None:
        os.environ["CUBLAS_WORKSPACE_CONFIG"] = saved[5]


def test_deterministic_run_sets_the_torch_flags_and_trains(tiny_overrides, restore_backends):
    out = train(config(tiny_overrides, "train.epochs=1", "eval.every_epochs=0", "train.deterministic=true",
                       "data.val_per_id=1"), device="cpu", progress=False)
    assert torch.are_deterministic_algorithms_enabled()
    assert torch.backends.cudnn.deterministic and not torch.backends.cudnn.benchmark
    assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"
    assert (out / "checkpoints" / "last.pt").exists()
    configure_backends(deterministic=False, tf32=False)
    assert not torch.are_deterministic_algorithms_enabled() and torch.backends.cudnn.benchmark
    assert not torch.backends.cuda.matmul.allow_tf32 and not torch.backends.cudnn.allow_tf32
    configure_backends(deterministic=False, tf32=True)
    assert torch.backends.cuda.matmul.allow_tf32 and torch.backends.cudnn.allow_tf32


def test_fused_optimiser_only_for_floating_point_cuda_parameters():
    def param(device, dtype):
        return SimpleNamespace(device=torch.device(device), dtype=dtype)

    assert fused_for([param("cuda", torch.float32), param("cuda", torch.bfloat16)])
    assert not fused_for([param("cuda", torch.float32), param("cpu", torch.float32)])
    assert not fused_for([param("cuda", torch.int64)]) and not fused_for([])
    from reid.config import OptimConfig
    from reid.engine.optim import build_optimizer

    opt = build_optimizer(OptimConfig(name="adam"), {"head": [nn.Parameter(torch.zeros(3))]})
    assert opt.defaults["fused"] in (None, False) and opt.defaults["foreach"] is True


def test_a_compiler_failure_at_the_first_batch_falls_back_to_eager(tiny_overrides, monkeypatch, capsys):
    calls = []

    def lazy_failing_compile(net):
        def compiled(*args):
            calls.append(1)
            raise RuntimeError("backend='inductor' raised:\nCppCompileError: no C++ compiler found")
        return compiled

    monkeypatch.setattr(torch, "compile", lazy_failing_compile)
    out = train(config(tiny_overrides, "train.epochs=1", "eval.every_epochs=0", "train.compile=true"),
                device="cpu", progress=False)
    err = capsys.readouterr().out
    assert calls == [1]  # tried once, then eager for the rest of the run
    assert err.count("warning: train.compile is on but torch.compile failed (RuntimeError: backend='inductor' "
                     "raised:); training without it") == 1
    assert torch.load(out / "checkpoints" / "last.pt", weights_only=True)["finished"]


def test_an_error_of_the_model_itself_still_surfaces_with_compile(monkeypatch):
    monkeypatch.setattr(torch, "compile", lambda net: net)
    wrapped = CompiledWithFallback(nn.Linear(3, 2))
    with pytest.raises(RuntimeError, match="shapes cannot be multiplied"):
        wrapped(torch.zeros(1, 5))


def test_channels_last_batches_are_made_in_that_layout_with_the_same_values():
    x = torch.randint(0, 256, (5, 3, 16, 8), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    plain = BatchAugment((32, 16), pad=3, erasing_p=0.5)
    cl = BatchAugment((32, 16), pad=3, erasing_p=0.5, channels_last=True)
    a, b = plain(x, batch_generator(0, 1, 2)), cl(x, batch_generator(0, 1, 2))
    assert a.is_contiguous() and b.is_contiguous(memory_format=torch.channels_last) and not b.is_contiguous()
    assert torch.equal(a, b)
    e = eval_transform(x, (32, 16), channels_last=True)
    assert e.is_contiguous(memory_format=torch.channels_last) and torch.equal(e, eval_transform(x, (32, 16)))


def test_divergence_inside_the_benchmark_gives_the_nan_message(monkeypatch):
    from tools.bench import train as bench_train
    from reid.losses import CombinedCriterion

    class Nan(nn.Module):
        def forward(self, logits, targets, features=None):
            return nn.functional.cross_entropy(logits.float(), targets) * float("nan")

    monkeypatch.setattr(bench_train, "build_criterion_from_config",
                        lambda cfg, split, feat_dim: CombinedCriterion([("nan", 1.0, Nan())]))
    args = argparse.Namespace(device="cpu", batch=4, size="32x16", model="resnet18", last_stride=2, steps=2,
                              warmup=1, classes=10, threads=None, compile=False, precision="auto",
                              deterministic=False)
    with pytest.raises(TrainingDivergedError, match=r"the loss became nan at epoch 1, step 1; no checkpoint"):
        bench_train.run(args)

