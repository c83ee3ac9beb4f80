"""Part 5: ``train.deterministic: true``. A run killed with SIGKILL mid-epoch, after a step
checkpoint, and resumed ends with the same weights (``torch.equal``, tensor by tensor) as
the uninterrupted run; and what the mode costs: epoch 2's speed with the mode on and off.

The runs train ``bot_center.yaml`` (its centre loss's indexed update and the network's
pooling are the kernels that are not deterministic by default) on the mini set, or on
the synthetic set without ``--market-root``.

Example::

    different_tensors(torch.load(a)["model"], torch.load(b)["model"])     # [] when identical
"""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

import torch

from ..config import load_config
from ..engine.trainer import train
from .context import CONFIGS, REPO, PartContext, StepError, child_env
from .runs import epoch_images, epoch_seconds

CONFIG = "bot_center.yaml"
POLL_S = 0.01


def run(ctx: PartContext) -> None:
    with ctx.step("data"):
        root = ctx.data_root(require_market=False)
        ctx.note(f"data: {root}, {CONFIG}, {ctx.scale.det_epochs} epochs, a checkpoint every "
                 f"{ctx.scale.det_every_steps} steps")
    if ctx.failed:
        return
    with ctx.step("uninterrupted run"):
        ctx.run(command(ctx, root, "det_reference"), "det_reference")
    with ctx.step("killed and resumed"):
        killed_at = kill_after_first_checkpoint(ctx, command(ctx, root, "det_killed"))
        ctx.run(command(ctx, root, "det_killed"), "det_killed")
        differ, total = compare_weights(ctx.runs / "det_reference", ctx.runs / "det_killed")
        ctx.table("SIGKILL mid-epoch, then --resume auto", ["killed at", "tensors", "identical (torch.equal)"],
                  [[killed_at, total, total - len(differ)]])
        if differ:
            raise StepError(f"{len(differ)} of {total} weight tensors differ from the uninterrupted run "
                            f"(first: {differ[0]})")
    with ctx.step("speed of the mode"):
        # in this process: the mode off needs no fresh one (the deterministic runs do, for CUBLAS_WORKSPACE_CONFIG)
        train(load_config(CONFIGS / CONFIG, overrides(ctx, root, "det_off", deterministic=False)),
              device=ctx.device, resume="auto", progress=False)
        speed_table(ctx, [ctx.runs / "det_reference", ctx.runs / "det_off"])


def overrides(ctx: PartContext, root: Path, name: str, deterministic: bool) -> list[str]:
    return [*ctx.run_overrides(root, name), f"train.deterministic={str(deterministic).lower()}",
            f"train.epochs={ctx.scale.det_epochs}", f"checkpoint.every_steps={ctx.scale.det_every_steps}",
            "eval.every_epochs=0"]


def command(ctx: PartContext, root: Path, name: str) -> list[str]:
    """train.py of a deterministic run (a process of its own: CUDA must start in that mode)."""
    return ctx.train_command(CONFIG, overrides(ctx, root, name, deterministic=True))


def kill_after_first_checkpoint(ctx: PartContext, cmd: list[str]) -> str:
    """Start ``cmd``, SIGKILL it as soon as its first step checkpoint is in place; returns where it stood."""
    run_dir = ctx.runs / "det_killed"
    last = run_dir / "checkpoints" / "last.pt"
    log = ctx.logs / "det_killed_first"
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(f"{log}.out", "ab") as out, open(f"{log}.err", "ab") as err:
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, cwd=REPO, env=child_env())
        while not last.exists() and proc.poll() is None:
            time.sleep(POLL_S)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    if proc.returncode != -signal.SIGKILL:
        raise StepError(f"the run ended (exit code {proc.returncode}) before its first step checkpoint; "
                        f"see {log}.err")
    state = torch.load(last, map_location="cpu", weights_only=True)
    if state["epoch_done"]:
        raise StepError(f"the kill came after epoch {state['epoch']} ended, not mid-epoch; "
                        "checkpoint more often than once per epoch")
    return f"epoch {state['epoch']}, step {state['step']}"


def compare_weights(a: Path, b: Path) -> tuple[list[str], int]:
    """Names of the model tensors that differ between two runs' final checkpoints, and their count."""
    sa, sb = (torch.load(d / "checkpoints" / "last.pt", map_location="cpu", weights_only=True) for d in (a, b))
    for d, s in ((a, sa), (b, sb)):
        if not s["finished"]:
            raise StepError(f"{d}: the run did not finish")
    return different_tensors(sa["model"], sb["model"]), len(sa["model"])


def different_tensors(a: dict, b: dict) -> list[str]:
    """Keys whose tensors are not ``torch.equal`` (a key missing on one side counts as different)."""
    return [k for k in sorted(set(a) | set(b)) if k not in a or k not in b or not torch.equal(a[k], b[k])]


def speed_table(ctx: PartContext, runs: list[Path]) -> None:
    """Epoch 2 of the mode on and off (epoch 1 autotunes the convolutions where the mode is off)."""
    rows, seconds = [], []
    for run_dir, mode in zip(runs, ("true", "false")):
        s = epoch_seconds(run_dir)[2]
        seconds.append(s)
        rows.append([mode, f"{s:.2f}", f"{epoch_images(run_dir, 2) / s:.1f}"])
    ctx.fact("deterministic_epoch2_s", {"true": seconds[0], "false": seconds[1]})
    ctx.table("train.deterministic: epoch 2", ["deterministic", "seconds", "images/s"], rows)
    ctx.note(f"deterministic mode costs {100 * (seconds[0] / seconds[1] - 1):+.0f}% epoch time")
