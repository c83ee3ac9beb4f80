"""``scripts/bench.py train``: how close the full trainer step runs to the model's own speed.

(a) a bare loop of forward, loss, backward and optimiser step on tensors already on
    the device (the ceiling);
(b) the trainer's own epoch loop (sampling, cache gather, batched augmentation,
    criterion, per-step records kept on the device, progress bookkeeping),
both on the same model, batch and precision; images/s, their ratio, projected
seconds per Market-1501 epoch (12,936 images) and peak memory.

Example::

    python scripts/bench.py train --device cpu --batch 16 --size 64x32 --model resnet18
    python scripts/bench.py train --device cuda --batch 64 --size 256x128      # ResNet-50, bf16
"""

from __future__ import annotations

import argparse
import atexit
import resource
import shutil
import tempfile
from pathlib import Path
from types import SimpleNamespace

import torch

from reid.config import from_dict
from reid.engine import distributed
from reid.engine.builder import RetrievalSet, RunData, build_criterion_from_config, build_model_from_config
from reid.engine.device import (CompiledWithFallback, autocast_dtype, configure_backends, precision_name,
                                resolve_device)
from reid.engine.optim import build_optimizer
from reid.engine.trainer import Trainer
from reid.losses import build_criterion

from .timing import timed

MARKET_TRAIN_IMAGES = 12936


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--batch", type=int, default=None, help="batch size (default 64 on CUDA, 16 on the CPU)")
    p.add_argument("--size", default=None, help="HxW input (default 256x128 on CUDA, 64x32 on the CPU)")
    p.add_argument("--model", default="resnet50")
    p.add_argument("--last-stride", type=int, default=2, choices=[1, 2])
    p.add_argument("--steps", type=int, default=None, help="timed steps (default 50 on CUDA, 12 on the CPU)")
    p.add_argument("--warmup", type=int, default=None, help="untimed steps first (default 10 on CUDA, 3 on the CPU)")
    p.add_argument("--classes", type=int, default=751)
    p.add_argument("--threads", type=int, default=None, help="CPU threads (default: torch's)")
    p.add_argument("--compile", action="store_true", help="torch.compile the model in both loops")
    p.add_argument("--precision", default="auto", choices=["auto", "bf16", "fp16", "fp32"], help="train.precision")
    p.add_argument("--deterministic", action="store_true", help="train.deterministic: true (to measure its cost)")


def settings(args: argparse.Namespace) -> SimpleNamespace:
    """The benchmark's device, config, batch, steps and warm-up from the options (defaults per device)."""
    device = resolve_device(args.device)
    cuda = device.type == "cuda"
    batch = args.batch or (64 if cuda else 16)
    height, width = map(int, (args.size or ("256x128" if cuda else "64x32")).lower().split("x"))
    steps, warmup = args.steps or (50 if cuda else 12), args.warmup if args.warmup is not None else (10 if cuda else 3)
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = from_dict({
        "criterion": "cross_entropy",
        "data": {"size": [height, width], "device_cache": "auto"},
        "model": {"name": args.model, "pretrained": "none", "last_stride": args.last_stride},
        "train": {"batch_size": batch, "epochs": 1, "compile": args.compile, "precision": args.precision,
                  "deterministic": args.deterministic},
        "eval": {"every_epochs": 0},
    })
    configure_backends(cfg.train.deterministic, cfg.train.tf32)
    amp = autocast_dtype(cfg.train.precision, device)
    return SimpleNamespace(device=device, cfg=cfg, batch=batch, steps=steps, warmup=warmup, amp=amp,
                           describe={"device": device_name(device), "model": args.model,
                                     "last_stride": args.last_stride, "batch": batch, "size": f"{height}x{width}",
                                     "precision": precision_name(amp), "channels_last": cuda,
                                     "compile": args.compile, "deterministic": args.deterministic})


def device_name(device: torch.device) -> str:
    return torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({torch.get_num_threads()} threads)"


def run(args: argparse.Namespace) -> dict:
    s = settings(args)
    bare = bare_loop_speed(s.cfg, s.device, s.amp, s.batch, s.steps, s.warmup, args.classes)
    full = trainer_speed(s.cfg, s.device, s.batch, s.steps, s.warmup, args.classes)
    result = {
        **s.describe,
        "bare_images_per_s": bare["images_per_s"], "trainer_images_per_s": full["images_per_s"],
        "ratio": full["images_per_s"] / bare["images_per_s"],
        "market_epoch_s": MARKET_TRAIN_IMAGES / full["images_per_s"],
        "bare_peak_memory_mib": bare["peak_memory_mib"], "trainer_peak_memory_mib": full["peak_memory_mib"],
        # what --compile ran: "on" (both loops compiled), "fell back to eager" (the compiler failed) or "off"
        "compile": compile_outcome(args.compile, bare["compiled"] and full["compiled"]),
    }
    print_table(result)
    return result


def synthetic_batch(batch: int, height: int, width: int, classes: int, device: torch.device):
    g = torch.Generator().manual_seed(0)
    images = torch.randn(batch, 3, height, width, generator=g).to(device)
    labels = torch.randint(0, classes, (batch,), generator=g).to(device)
    return images, labels


def bare_loop_speed(cfg, device, amp, batch, steps, warmup, classes) -> dict:
    """Forward, backward and step on a fixed batch already on the device."""
    torch.manual_seed(0)
    model = build_model_from_config(cfg, classes).to(device)  # the model bench_trainer trains
    channels_last = device.type == "cuda"
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    net = CompiledWithFallback(model) if cfg.train.compile else model  # as the trainer compiles
    criterion = build_criterion("cross_entropy", classes)
    optimizer = build_optimizer(cfg.optim, model.param_groups())  # the trainer's optimiser (fused on CUDA)
    images, labels = synthetic_batch(batch, *cfg.data.size, classes, device)
    if channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    model.train()

    def step() -> None:
        with torch.autocast(device.type, dtype=amp or torch.float32, enabled=amp is not None):
            logits, _ = net(images)
        loss = criterion(logits.float(), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return {**throughput(step, steps, warmup, batch, device), "compiled": still_compiled(net)}


def trainer_speed(cfg, device, batch, steps, warmup, classes) -> dict:
    """The trainer's own train_epoch over a cache of random uint8 images (no files, no val)."""
    n = batch * (steps + warmup)
    trainer = bench_trainer(cfg, device, random_labels(n, classes))
    # Warm up on the first `warmup` steps' worth of batches, then time whole epochs of `steps`.
    trainer.sampler = FixedBatches(n, batch, warmup)
    trainer.train_epoch(epoch=1, first_step=0)
    trainer.sampler = FixedBatches(n, batch, steps)
    speed = throughput(lambda: trainer.train_epoch(epoch=2, first_step=0), 1, 0, batch * steps, device)
    return {**speed, "compiled": still_compiled(trainer.net)}


def still_compiled(net: torch.nn.Module) -> bool:
    """Whether ``net`` is a compiled model that has not fallen back to eager."""
    return isinstance(net, CompiledWithFallback) and net.compiled is not None


def compile_outcome(requested: bool, compiled: bool) -> str:
    if not requested:
        return "off"
    return "on" if compiled else "fell back to eager"


def bench_trainer(cfg, device: torch.device, labels: torch.Tensor) -> Trainer:
    """A Trainer of ``cfg`` over a cache of random uint8 images, one per label (no files, no val), with the
    model and criterion ``train()`` builds, its run directory a temporary folder (removed at exit: its steps
    write nothing there unless a loss diverges); set its ``sampler`` to a :class:`FixedBatches` and call
    ``train_epoch``."""
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (len(labels), 3, *cfg.data.cache_size), dtype=torch.uint8, generator=g)
    num_classes = int(labels.max()) + 1
    split = SimpleNamespace(train_labels=labels.tolist(), num_classes=num_classes)
    empty = RetrievalSet(images[:0], labels[:0].numpy(), labels[:0].numpy())
    data = RunData(split=split, train_images=images, val_images=images[:0], train_labels=labels,
                   val_labels=labels[:0], query=empty, gallery=empty)
    torch.manual_seed(cfg.seed)
    model = build_model_from_config(cfg, num_classes)
    criterion = build_criterion_from_config(cfg, split, model.feature_dim)
    run_dir = Path(tempfile.mkdtemp(prefix="reid_bench_"))
    atexit.register(shutil.rmtree, run_dir, ignore_errors=True)
    return Trainer(cfg, run_dir=run_dir, device=device, data=data, model=model, criterion=criterion,
                   dist=distributed.DistInfo(), progress=False)


def random_labels(n: int, classes: int) -> torch.Tensor:
    """``n`` labels drawn uniformly from ``classes`` (seeded), every class present once n >= classes."""
    labels = torch.randint(0, classes, (n,), generator=torch.Generator().manual_seed(0))
    labels[:min(n, classes)] = torch.arange(min(n, classes))
    return labels


class FixedBatches:
    """``count`` consecutive batches of a random permutation (the trainer's sampler interface)."""

    def __init__(self, n: int, batch: int, count: int) -> None:
        order = torch.randperm(n, generator=torch.Generator().manual_seed(1)).numpy()
        self._batches = [order[i * batch:(i + 1) * batch] for i in range(count)]

    def batches(self, epoch: int):
        return self._batches


def throughput(step, steps: int, warmup: int, images_per_step: int, device: torch.device) -> dict:
    """Images/s of ``steps`` calls of ``step`` timed as one block after ``warmup`` untimed ones, and the
    peak memory of this loop alone."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    for _ in range(warmup):
        step()
    (seconds,), _ = timed(lambda: [step() for _ in range(steps)], device=device)
    return {"seconds": seconds, "images_per_s": images_per_step * steps / seconds,
            "peak_memory_mib": peak_memory_mib(device)}


def peak_memory_mib(device: torch.device) -> float:
    """CUDA: the peak allocated since the last reset; CPU: the process's peak resident size (never reset)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def print_table(r: dict) -> None:
    print(f"train benchmark on {r['device']}: {r['model']} (last stride {r['last_stride']}), batch {r['batch']}, "
          f"{r['size']}, {r['precision']}, channels_last {r['channels_last']}, compile {r['compile']}, "
          f"deterministic {r['deterministic']}")
    print(f"| {'loop':<44} | {'images/s':>9} | {'peak MiB':>9} |")
    print(f"|{'-' * 46}|{'-' * 11}|{'-' * 11}|")
    print(f"| {'(a) bare forward/backward/step (ceiling)':<44} | {r['bare_images_per_s']:>9.1f} | "
          f"{r['bare_peak_memory_mib']:>9.0f} |")
    print(f"| {'(b) full trainer step':<44} | {r['trainer_images_per_s']:>9.1f} | {r['trainer_peak_memory_mib']:>9.0f} |")
    print(f"(b)/(a) = {r['ratio']:.3f}; projected Market-1501 epoch (12,936 images): {r['market_epoch_s']:.1f} s")
