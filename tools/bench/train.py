"""``scripts/bench.py train``: how close the full trainer step runs to the model's own speed.

(a) a bare loop of forward, loss, backward and optimiser step on tensors already on
    the device (the ceiling);
(b) the trainer's own epoch loop (sampling, cache gather, batched augmentation,
    criterion, per-step records kept on the device, progress bookkeeping),
both on the same model (the same classifier width: ``--classes``), batch and precision; images/s, their ratio, projected
seconds per Market-1501 epoch (12,936 images) and peak memory.

The bare loop is the ceiling only when both are measured alike: both warm up before either is
timed (cuDNN's autotuning, the caching allocator and the GPU's clocks reach their steady state
in the first loop's warm-up, which the second loop would otherwise inherit), then they are timed
in turns, ``--repeats`` times each, best of each; the bare loop autocasts as the trainer does.

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
from typing import Optional

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
    p.add_argument("--repeats", type=int, default=2, help="timings of each loop, in turns; the best counts (default 2)")


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
    bare_step, bare_net = bare_loop(s.cfg, s.device, s.amp, s.batch, args.classes)
    trainer_epoch, trainer_net = trainer_loop(s.cfg, s.device, s.batch, s.steps, s.warmup, args.classes)
    bare, full = measured_in_turns([(lambda: [bare_step() for _ in range(s.steps)], s.batch * s.steps),
                                    (trainer_epoch, s.batch * s.steps)], s.device, args.repeats)
    bare["compiled"], full["compiled"] = still_compiled(bare_net), still_compiled(trainer_net)
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


def bare_loop(cfg, device, amp, batch, classes):
    """One step of forward, backward and optimiser step on a fixed batch already on the device (a callable),
    warmed up by as many steps as the trainer's warm-up epoch has; and the network it trains."""
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
        # as Trainer.autocast: no cast cache (the trainer's step may be captured as a CUDA graph)
        with torch.autocast(device.type, dtype=amp or torch.float32, enabled=amp is not None, cache_enabled=False):
            logits, _ = net(images)
        loss = criterion(logits.float(), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step, net


def trainer_loop(cfg, device, batch, steps, warmup, classes):
    """The trainer's own train_epoch over a cache of random uint8 images (no files, no val): a callable that
    trains one epoch of ``steps`` steps, after a warm-up epoch of ``warmup`` steps; and the network it trains."""
    n = batch * max(steps, warmup)
    trainer = bench_trainer(cfg, device, random_labels(n, classes), num_classes=classes)  # the bare loop's head
    trainer.sampler = FixedBatches(n, batch, warmup)
    trainer.train_epoch(epoch=1, first_step=0)
    trainer.sampler = FixedBatches(n, batch, steps)
    epochs = iter(range(2, 10**9))
    return (lambda: trainer.train_epoch(epoch=next(epochs), first_step=0)), trainer.net


def measured_in_turns(loops: list[tuple], device: torch.device, repeats: int) -> list[dict]:
    """Images/s of each ``(fn, images per call)`` of ``loops``: each called once untimed first (all warm before
    any is timed; its peak memory measured then), then timed in turns ``repeats`` times; the best of each."""
    peaks = []
    for fn, _ in loops:
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        fn()
        peaks.append(peak_memory_mib(device))
    best = [float("inf")] * len(loops)
    for _ in range(max(1, repeats)):
        for i, (fn, _) in enumerate(loops):
            (seconds,), _ = timed(fn, device=device)
            best[i] = min(best[i], seconds)
    return [{"seconds": s, "images_per_s": images / s, "peak_memory_mib": peak}
            for s, peak, (_, images) in zip(best, peaks, loops)]


def still_compiled(net: torch.nn.Module) -> bool:
    """Whether ``net`` is a compiled model that has not fallen back to eager."""
    return isinstance(net, CompiledWithFallback) and net.compiled is not None


def compile_outcome(requested: bool, compiled: bool) -> str:
    if not requested:
        return "off"
    return "on" if compiled else "fell back to eager"


def bench_trainer(cfg, device: torch.device, labels: torch.Tensor, num_classes: Optional[int] = None) -> Trainer:
    """A Trainer of ``cfg`` over a cache of random uint8 images, one per label (no files, no val), with the
    model (a classifier of ``num_classes``, default: up to the largest label) and criterion ``train()`` builds, its run directory a temporary folder (removed at exit: its steps
    write nothing there unless a loss diverges); set its ``sampler`` to a :class:`FixedBatches` and call
    ``train_epoch``."""
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (len(labels), 3, *cfg.data.cache_size), dtype=torch.uint8, generator=g)
    num_classes = num_classes or int(labels.max()) + 1
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
