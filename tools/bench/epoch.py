"""``scripts/bench.py epoch``: what a real-data epoch costs beyond its training steps.

A run of ``--config`` (default configs/standard.yaml: ResNet-50, its optimiser state, a val phase)
on image files (``--market-root``, or a small synthetic Market-1501 generated in a temporary
folder) trains ``--epochs`` epochs through ``Trainer.fit``, twice: with each checkpoint written
while the trainer waits (as before background checkpoints) and in the background (the default).
Each part of an epoch is timed: the train steps, the val phase, the checkpoint (on the training
thread: the state's copy, and the write when the trainer waits for it), the ``.mat``/log writes
and TensorBoard's (``--tensorboard``; these follow their checkpoint: in the background mode they
run in the writer thread, beside training). Printed per part: seconds per epoch and share of the epoch,
over the epochs between the first (warm-up) and the last (the final evaluation), median of
``--rounds`` runs per mode (the modes in turns: a shared machine's load changes); then the epoch's
seconds both ways, and what the background checkpoint saved against what the save cost.

Example::

    python scripts/bench.py epoch --device cpu                         # ResNet-50 at 64x32, synthetic images
    python scripts/bench.py epoch --device cuda --market-root data/market1501-mini --size 256x128
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any, Callable, Iterator

from reid.config import load_config
from reid.engine import board, checkpoint, trainer as trainer_module
from reid.engine.run import train

from .timing import sync

REPO = Path(__file__).resolve().parents[2]
PARTS = ("train steps", "val phase", "checkpoint", ".mat and log", "TensorBoard")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--config", default=str(REPO / "configs" / "standard.yaml"))
    p.add_argument("--market-root", default=None, help="a folder in the Market-1501 layout (default: synthetic)")
    p.add_argument("--ids", type=int, default=16, help="synthetic identities (default 16, 8 images each)")
    p.add_argument("--size", default="64x32", help="HxW input (default 64x32)")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--epochs", type=int, default=4, help="epochs per mode (at least 3; default 4)")
    p.add_argument("--model", default="resnet50")
    p.add_argument("--tensorboard", action="store_true", help="also write TensorBoard events (train.tensorboard)")
    p.add_argument("--rounds", type=int, default=3, help="runs per mode, the modes in turns; medians (default 3)")


def run(args: argparse.Namespace) -> dict:
    if args.epochs < 3:
        raise SystemExit("error: --epochs must be at least 3 (the first and last epochs are not measured)")
    work = Path(tempfile.mkdtemp(prefix="reid_bench_epoch_"))
    height, width = map(int, args.size.lower().split("x"))
    root = args.market_root or str(work / "market")
    overrides = [f"data.root={root}", f"data.cache_dir={work / 'cache'}", f"data.size=[{height},{width}]",
                 f"model.name={args.model}", "model.pretrained=none", f"train.batch_size={args.batch}",
                 f"train.epochs={args.epochs}", "eval.every_epochs=0", f"output.root={work / 'outputs'}",
                 f"train.tensorboard={str(args.tensorboard).lower()}"]
    if not args.market_root:
        overrides.append(f"data.synthetic={{ids: {args.ids}, images_per_id: 8, seed: 0}}")
    summaries: dict[str, list[dict]] = {"checkpoint waited for": [], "background checkpoint": []}
    for round_ in range(args.rounds):  # the modes in turns, so that a machine's changing load hits both alike
        for mode, wait in (("checkpoint waited for", True), ("background checkpoint", False)):
            cfg = load_config(args.config, [*overrides, f"output.name={'waited' if wait else 'background'}{round_}"])
            with timed_parts(wait_for_checkpoint=wait) as clock:
                train(cfg, device=args.device, progress=False)
            summaries[mode].append(clock.summary())
    modes = {mode: median_summary(runs) for mode, runs in summaries.items()}
    result = {"config": args.config, "model": args.model, "size": args.size, "batch": args.batch,
              "device": args.device, "rounds": args.rounds, "modes": modes}
    print_table(result)
    return result


class PartClock:
    """Seconds of each part of each epoch (by the epoch a part ran in) and each epoch's wall time."""

    def __init__(self, device_of: Callable[[], Any]) -> None:
        self.device_of = device_of
        self.seconds: dict[int, dict[str, float]] = defaultdict(lambda: defaultdict(float))
        self.epoch_starts: list[float] = []
        self.epoch = 0

    def timed(self, part: str, fn: Callable[[], Any]) -> Any:
        """``fn()``, its seconds (the device's queue drained before and after) added to ``part``."""
        sync(self.device_of())
        start = time.perf_counter()
        out = fn()
        sync(self.device_of())
        self.seconds[self.epoch][part] += time.perf_counter() - start
        return out

    def wrap(self, owner: Any, name: str, part: str, after: Callable[[Any], None] = lambda obj: None):
        """``owner.name`` timed as ``part`` (with ``after(obj)`` run inside the timing)."""
        real = getattr(owner, name)
        return lambda obj, *args, **kwargs: self.timed(part, lambda: (real(obj, *args, **kwargs), after(obj))[0])

    def epoch_started(self) -> None:
        sync(self.device_of())
        self.epoch_starts.append(time.perf_counter())
        self.epoch += 1

    def summary(self) -> dict:
        """Mean seconds per part and per epoch over the epochs 2..E-1 (the first warms up, the last evaluates)."""
        measured = range(2, len(self.epoch_starts))
        epoch_s = [self.epoch_starts[e] - self.epoch_starts[e - 1] for e in measured]
        parts = {p: statistics.mean(self.seconds[e][p] for e in measured)
                 for p in (*PARTS, ".mat, log, TensorBoard")}
        parts[".mat and log"] = parts.pop(".mat, log, TensorBoard") - parts["TensorBoard"]  # write_run_files holds both
        return {"epoch_s": statistics.mean(epoch_s), "parts_s": parts, "epochs_measured": len(epoch_s)}


@contextlib.contextmanager
def timed_parts(wait_for_checkpoint: bool) -> Iterator[PartClock]:
    """Every Trainer built inside is timed part by part; ``wait_for_checkpoint``: each checkpoint save
    also waits for its write (the trainer's behaviour before background checkpoints)."""
    T, devices = trainer_module.Trainer, []
    clock = PartClock(lambda: devices[-1] if devices else None)
    real_init, real_train_epoch = T.__init__, T.train_epoch

    def init(self, *args, **kwargs):
        real_init(self, *args, **kwargs)
        devices.append(self.device)

    def train_epoch(self, epoch, first_step):
        clock.epoch_started()
        return clock.timed("train steps", lambda: real_train_epoch(self, epoch, first_step))

    patches = [(T, "__init__", init), (T, "train_epoch", train_epoch),
               (T, "val_epoch", clock.wrap(T, "val_epoch", "val phase")),
               (checkpoint.CheckpointStore, "save_in_background",
                clock.wrap(checkpoint.CheckpointStore, "save_in_background", "checkpoint",
                           after=(lambda store: store.wait()) if wait_for_checkpoint else (lambda store: None))),
               (T, "write_run_files", clock.wrap(T, "write_run_files", ".mat, log, TensorBoard")),
               (board.BoardMirror, "write", clock.wrap(board.BoardMirror, "write", "TensorBoard"))]
    saved = [(owner, name, owner.__dict__[name]) for owner, name, _ in patches]
    for owner, name, new in patches:
        setattr(owner, name, new)
    try:
        yield clock
    finally:
        for owner, name, old in saved:
            setattr(owner, name, old)


def median_summary(runs: list[dict]) -> dict:
    """Each figure's median over runs of one mode."""
    return {"epoch_s": statistics.median(r["epoch_s"] for r in runs),
            "parts_s": {p: statistics.median(r["parts_s"][p] for r in runs) for p in runs[0]["parts_s"]},
            "epochs_measured": sum(r["epochs_measured"] for r in runs)}


def print_table(r: dict) -> None:
    print(f"epoch benchmark: {Path(r['config']).name}, {r['model']}, {r['size']}, batch {r['batch']}, "
          f"device {r['device']}; seconds per epoch (mean over the epochs between the first and the last of a run), "
          f"median of {r['rounds']} runs per mode, the modes in turns")
    modes = list(r["modes"])
    print(f"| {'part':<14} | " + " | ".join(f"{m + ' s':>26} | {'share':>6}" for m in modes) + " |")
    print(f"|{'-' * 16}|" + "|".join(f"{'-' * 28}|{'-' * 8}" for _ in modes) + "|")
    for part in PARTS:
        cells = []
        for m in modes:
            s, epoch = r["modes"][m]["parts_s"][part], r["modes"][m]["epoch_s"]
            cells.append(f"{s:>26.3f} | {100 * s / epoch:>5.1f}%")
        print(f"| {part:<14} | " + " | ".join(cells) + " |")
    print(f"| {'epoch':<14} | " + " | ".join(f"{r['modes'][m]['epoch_s']:>26.3f} | {100:>5.1f}%" for m in modes) + " |")
    waited, background = (r["modes"][m] for m in modes)
    print(f"the background checkpoint made the epoch {waited['epoch_s'] - background['epoch_s']:.3f} s cheaper; "
          f"waiting for it cost {waited['parts_s']['checkpoint']:.3f} s, in the background the training thread "
          f"spends {background['parts_s']['checkpoint']:.3f} s on it (the state's copy)")
