"""Part 3: speed. ``scripts/bench.py train`` (bare loop vs trainer, with and without
``torch.compile``), and one full-size BoT epoch timed against its floor.

The floor of an epoch is the time the card would need at its peak bf16 rate for the
epoch's arithmetic: images x training FLOPs per image (one forward and backward,
counted by ``torch.utils.flop_counter.FlopCounterMode``) / peak FLOP/s. Two peaks: the
datasheet's dense bf16 figure for known cards, and a measured large bf16 matmul.

Example::

    datasheet_bf16_tflops("NVIDIA H200")      # 989.0
"""

from __future__ import annotations

import argparse
from types import SimpleNamespace
from typing import Callable, Optional

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from ..benchmarks import train as bench
from ..config import load_config
from ..engine.builder import build_criterion_from_config, build_model_from_config
from ..engine.device import configure_backends
from .context import CONFIGS, PartContext

# Dense bf16 tensor-core peaks (TFLOP/s) from NVIDIA's datasheets, which print the figure
# "with sparsity": twice these. Matched in order against the device name; the first wins,
# so the longer names come before their prefixes (A100 before A10, L40S before L4).
DATASHEET_BF16_TFLOPS = (
    ("H200 NVL", 835.0), ("H200", 989.0),
    ("H100 NVL", 835.0), ("H100 PCIe", 756.0), ("H100", 989.0),
    ("A100", 312.0), ("L40S", 362.0), ("L40", 181.0), ("L4", 121.0), ("A10", 125.0),
)
DATASHEET_SOURCE = "NVIDIA datasheet, dense bf16 (half the 'with sparsity' figure)"


def run(ctx: PartContext) -> None:
    rows: list[list[str]] = []
    with ctx.step("bench.py train"):
        rows.append(bench_row(ctx, compile_model=False))
        ctx.table("scripts/bench.py train", BENCH_COLUMNS, rows)
    with ctx.step("full-size epoch"):
        epoch_and_floor(ctx)
    if not ctx.scale.bench_compile:
        ctx.note("bench.py train --compile: not run with --tiny (torch.compile takes minutes on a CPU); "
                 "the full check runs it")
        return
    with ctx.step("bench.py train --compile"):
        rows.append(bench_row(ctx, compile_model=True))
        ctx.table("scripts/bench.py train", BENCH_COLUMNS, rows)


# ----------------------------------------------------------------------------- bench.py train

BENCH_COLUMNS = ["torch.compile", "model", "batch", "size", "precision", "channels_last", "bare images/s",
                 "trainer images/s", "trainer / bare", "bare peak MiB", "trainer peak MiB"]


def bench_row(ctx: PartContext, compile_model: bool) -> list[str]:
    """One ``scripts/bench.py train`` run (its own code, in this process) as a table row."""
    parser = argparse.ArgumentParser()
    bench.add_arguments(parser)
    args = parser.parse_args(["--device", ctx.device, *ctx.scale.bench_args, *(["--compile"] if compile_model else [])])
    r = bench.run(args)
    ctx.fact(f"bench{'_compile' if compile_model else ''}", r)
    return [str(compile_model), r["model"], r["batch"], r["size"], r["precision"], r["channels_last"],
            f"{r['bare_images_per_s']:.1f}", f"{r['trainer_images_per_s']:.1f}", f"{r['ratio']:.3f}",
            f"{r['bare_peak_memory_mib']:.0f}", f"{r['trainer_peak_memory_mib']:.0f}"]


# ----------------------------------------------------------------------------- the full-size epoch

def epoch_and_floor(ctx: PartContext) -> None:
    device = torch.device(ctx.device)
    cfg = load_config(CONFIGS / "bot.yaml", ["model.pretrained=none", "data.val_per_id=0", "train.epochs=2",
                                             "eval.every_epochs=0", *ctx.scale.train_overrides])
    trainer = synthetic_trainer(cfg, device, ctx.scale.epoch_images, ctx.scale.epoch_ids)
    seconds = [seconds_of(lambda e=epoch: trainer.train_epoch(epoch=e, first_step=0), device) for epoch in (1, 2)]
    images = sum(len(b) for b in trainer.sampler.batches(2))
    flops = training_flops_per_image(cfg, ctx.scale.epoch_ids)
    trainer = None  # free its cache before the matmul peak is measured
    if device.type == "cuda":
        torch.cuda.empty_cache()
    peaks = card_peaks(device, ctx.scale.matmul_size)
    ctx.fact("epoch", {"images": images, "seconds": seconds, "training_flops_per_image": flops, "peaks_tflops": peaks})
    m = cfg.model
    ctx.table(f"one epoch, BoT config ({m.name}, last stride {m.last_stride}, {m.neck}, "
              f"P x K = {cfg.train.batch_size // cfg.sampler.num_instances} x {cfg.sampler.num_instances}, "
              f"{cfg.data.size[0]}x{cfg.data.size[1]})",
              [f"images (of {ctx.scale.epoch_images:,})", "epoch 1 s (autotune)", "epoch 2 s",
               "images/s", "training GFLOP/image"],
              [[f"{images:,}", f"{seconds[0]:.2f}", f"{seconds[1]:.2f}", f"{images / seconds[1]:.1f}",
                f"{flops / 1e9:.2f}"]])
    floors = {source: images * flops / (tflops * 1e12) for source, tflops in peaks.items()}
    ctx.table("epoch 2 against its floor (images x training FLOPs / peak)",
              ["peak", "TFLOP/s", "floor s", "epoch 2 / floor"],
              [[source, f"{peaks[source]:.1f}", f"{floor:.2f}", f"{seconds[1] / floor:.1f}"]
               for source, floor in floors.items()])
    ctx.note(f"the PK sampler trains {images:,} of the {ctx.scale.epoch_images:,} images per epoch (whole chunks of "
             f"{cfg.sampler.num_instances} images per identity); the floor counts the images trained")


def synthetic_trainer(cfg, device: torch.device, n_images: int, n_ids: int):
    """The benchmark's Trainer of ``cfg`` (:func:`reid.benchmarks.train.bench_trainer`) over random images
    labelled like Market-1501's train split (every identity 17 or 18 images at full size)."""
    configure_backends(cfg.train.deterministic, cfg.train.tf32)  # as train() does
    return bench.bench_trainer(cfg, device, torch.as_tensor(np.sort(np.arange(n_images) % n_ids)))


def training_flops_per_image(cfg, n_ids: int, batch: int = 4) -> float:
    """FLOPs of one training step (forward, criterion, backward) per image, counted on the CPU."""
    model = build_model_from_config(cfg, n_ids).train()
    labels = torch.arange(batch) // 2  # pairs of one identity: the triplet term has positives
    criterion = build_criterion_from_config(cfg, SimpleNamespace(train_labels=labels.tolist(), num_classes=n_ids),
                                            model.feature_dim)
    images = torch.randn(batch, 3, *cfg.data.size)
    return count_flops(lambda: backward_of(model, criterion, images, labels)) / batch


def backward_of(model, criterion, images: torch.Tensor, labels: torch.Tensor) -> None:
    logits, features = model(images)
    criterion(logits.float(), labels, features.float()).backward()


def seconds_of(fn: Callable[[], object], device: torch.device, repeats: int = 1, warmup: int = 0) -> float:
    """Seconds one call of ``fn`` takes (the mean of ``repeats``, the device's queue drained), as bench.py times."""
    return bench.timed(fn, repeats, warmup, 1, device)["seconds"] / repeats


def count_flops(fn: Callable[[], None]) -> int:
    """Floating-point operations ``fn`` performs (matmuls and convolutions, as FlopCounterMode counts them)."""
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


# ----------------------------------------------------------------------------- peaks

def datasheet_bf16_tflops(device_name: str) -> Optional[float]:
    """The card's dense bf16 peak from the datasheet table, or None for a card not in it."""
    for pattern, tflops in DATASHEET_BF16_TFLOPS:
        if pattern in device_name:
            return tflops
    return None


def card_peaks(device: torch.device, n: int) -> dict[str, float]:
    """``{source: TFLOP/s}``: the datasheet's (known cards) and a measured n x n x n matmul's."""
    peaks = {}
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        tflops = datasheet_bf16_tflops(name)
        if tflops is not None:
            peaks[f"{DATASHEET_SOURCE}: {name}"] = tflops
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    peaks[f"measured: {n}x{n}x{n} {str(dtype).replace('torch.', '')} matmul"] = matmul_tflops(device, n, dtype)
    return peaks


def matmul_tflops(device: torch.device, n: int, dtype: torch.dtype, repeats: int = 50) -> float:
    """Measured TFLOP/s of repeated ``n x n @ n x n`` products (2 n^3 FLOPs each)."""
    g = torch.Generator().manual_seed(0)
    a, b = (torch.randn(n, n, generator=g).to(device, dtype) for _ in range(2))
    c = torch.empty_like(a)
    return 2 * n ** 3 / seconds_of(lambda: torch.mm(a, b, out=c), device, repeats=repeats, warmup=3) / 1e12
