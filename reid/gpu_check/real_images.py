"""Part 4: real images from scratch (``model.pretrained=none``: nothing is downloaded).

``bot.yaml`` in bf16 for as many epochs as fit its budget and in fp32 for as many (same
seed), and the classic ``standard.yaml`` vs ``soft.yaml`` pair through ``scripts/paired.sh``
for as many epochs as fit, on the Market-1501 mini set given by ``--market-root``; rank-1 / mAP on its
query/gallery, and the pair's comparison PNG (``scripts/compare.py``, run by paired.sh).

Example::

    scripts/gpu_check.sh --market-root data/market1501-mini     # part 4 reads bounding_box_train/ etc. there
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import torch

from ..config import load_config
from ..engine.device import autocast_dtype, precision_name
from ..engine.trainer import train
from ..io import atomic_write_bytes
from .context import CONFIGS, REPO, PartContext
from .runs import epoch_seconds, final_results, fit_epochs, percent

RUN_COLUMNS = ["run", "config", "precision", "epochs", "s / epoch (epoch 1)", "rank-1", "mAP"]


def run(ctx: PartContext) -> None:
    rows: list[list[str]] = []
    with ctx.step("data"):
        root = ctx.data_root(require_market=True)
        ctx.note(f"data: {root}")
    if ctx.failed:
        return
    epochs = 0
    with ctx.step("bot.yaml bf16"):
        epochs = train_in_process(ctx, root, "bf16", epochs=None)
        rows.append(run_row(ctx.runs / "bot_bf16", "bot.yaml", "bf16", epochs))
        ctx.table("trained from scratch", RUN_COLUMNS, rows)
    with ctx.step("bot.yaml fp32"):  # as many epochs as the bf16 run, whatever they take
        train_in_process(ctx, root, "fp32", epochs=epochs or 1)
        rows.append(run_row(ctx.runs / "bot_fp32", "bot.yaml", "fp32", epochs or 1))
        ctx.table("trained from scratch", RUN_COLUMNS, rows)
    with ctx.step("bf16 vs fp32"):
        bf16, fp32 = (final_results(ctx.runs / f"bot_{p}") for p in ("bf16", "fp32"))
        ctx.table("bot.yaml, same seed and epochs: final mAP", ["bf16", "fp32", "bf16 - fp32"],
                  [[percent(bf16["mAP"]), percent(fp32["mAP"]), f"{100 * (bf16['mAP'] - fp32['mAP']):+.1f} points"]])
    with ctx.step("paired.sh standard vs soft"):
        rows.extend(train_pair(ctx, root))
        ctx.table("trained from scratch", RUN_COLUMNS, rows)


def train_in_process(ctx: PartContext, root: Path, precision: str, epochs: Optional[int]) -> int:
    """bot.yaml at ``precision`` for ``epochs`` (None: as many as fit the budget); returns the epochs."""
    name = f"bot_{precision}"
    overrides = [*ctx.run_overrides(root, name), f"train.precision={precision}", "eval.every_epochs=0"]

    def train_to(n: int) -> None:
        cfg = load_config(CONFIGS / "bot.yaml", [*overrides, f"train.epochs={n}"])
        train(cfg, device=ctx.device, resume="auto", progress=False)
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    if epochs is not None:
        train_to(epochs)
        return epochs
    return fit_epochs(train_to, [ctx.runs / name], ctx.scale.run_budget_s, ctx.scale.max_epochs)


def train_pair(ctx: PartContext, root: Path) -> list[list[str]]:
    """standard.yaml vs soft.yaml through scripts/paired.sh for as many epochs as fit; their rows."""
    pair = [ctx.runs / "standard", ctx.runs / "soft"]
    common = [a for o in [*ctx.run_overrides(root), "eval.every_epochs=0"] for a in ("--set", o)]

    def train_to(epochs: int) -> None:
        ctx.run(["bash", REPO / "scripts" / "paired.sh", CONFIGS / "standard.yaml", CONFIGS / "soft.yaml",
                 "--seed", "0", "--device", ctx.device, *common, "--set", f"train.epochs={epochs}"], "paired")

    epochs = fit_epochs(train_to, pair, 2 * ctx.scale.run_budget_s, ctx.scale.max_epochs)
    png = ctx.out / "standard_vs_soft.png"
    # paired.sh wrote its comparison beside the runs; the report keeps its figures in one folder
    atomic_write_bytes(png, (ctx.runs / "compare_standard_vs_soft.png").read_bytes())
    ctx.png(png)
    precision = f"auto ({effective_precision(ctx.device)})"
    return [run_row(run_dir, f"{run_dir.name}.yaml", precision, epochs) for run_dir in pair]


def effective_precision(device: str) -> str:
    return precision_name(autocast_dtype("auto", torch.device(device)))


def run_row(run_dir: Path, config: str, precision: str, epochs: int) -> list[str]:
    r = final_results(run_dir)
    return [run_dir.name, config, precision, str(epochs), f"{epoch_seconds(run_dir)[1]:.1f}",
            percent(r["rank1"]), percent(r["mAP"])]
