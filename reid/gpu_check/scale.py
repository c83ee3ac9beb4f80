"""The sizes and time budgets of the two kinds of check: the full one on a GPU and the
``--tiny`` rehearsal that runs in the test suite on a CPU.

Every number that decides how long the check takes is here. The full check's part
budgets add up to 470 s, so the whole check ends within 8 minutes on one GPU even
when a part has to be killed at its limit.

Example::

    scale = scale_for(tiny=False)
    scale.budgets_s["speed"]        # 160: seconds before part 3 is killed
"""

from __future__ import annotations

from dataclasses import dataclass, field

# Market-1501's published training split: the full-size epoch of part 3. (Kept here rather than
# imported, so that the runner, which only starts the parts, does not import torch.)
MARKET_TRAIN_IMAGES, MARKET_TRAIN_IDS = 12936, 751


@dataclass(frozen=True)
class Scale:
    """What one kind of check runs: image size, model, data and the seconds each part may take."""

    name: str
    budgets_s: dict[str, int]          # per part, in the order of the report
    bench_args: list[str]              # scripts/bench.py train arguments (besides --device)
    bench_compile: bool                # also run the benchmark with torch.compile
    epoch_images: int                  # the timed epoch of part 3: images and identities
    epoch_ids: int
    matmul_size: int                   # n of the n x n x n matmul that measures the card's peak
    train_overrides: list[str]         # --set for every training run of parts 4 and 5
    synthetic: dict[str, int]          # the generated dataset (part 5 without --market-root, all of --tiny)
    run_budget_s: float                # part 4: wall seconds of the bf16 run and of each paired run (as many
                                       # epochs as fit); the fp32 run trains as many epochs as the bf16 one
    max_epochs: int                    # ... and never more epochs than this
    det_epochs: int                    # part 5: epochs of each run (the speed is read on epoch 2: no autotuning)
    det_every_steps: int               # part 5: checkpoint every N steps (the kill comes after the first)
    notes: list[str] = field(default_factory=list)


FULL = Scale(
    name="full",
    # torch.compile of ResNet-50 (bench.py compiles the bare loop's model and the trainer's) dominates part 3
    budgets_s={"environment": 20, "cuda_tests": 30, "speed": 190, "real_images": 140, "determinism": 90},
    bench_args=["--batch", "64", "--size", "256x128", "--precision", "bf16"],
    bench_compile=True,
    epoch_images=MARKET_TRAIN_IMAGES,
    epoch_ids=MARKET_TRAIN_IDS,
    matmul_size=8192,
    train_overrides=[],
    # part 5 without --market-root: about the mini set's size (4,000 train images, ~60 PK batches an epoch)
    synthetic={"ids": 100, "images_per_id": 40, "cameras": 6, "distractors": 20, "junk": 10, "seed": 0},
    run_budget_s=22.0,
    max_epochs=120,
    det_epochs=3,
    det_every_steps=30,          # ~66 PK batches per epoch on the mini set: the kill lands mid-epoch 1
)

# Seconds on a loaded 2-core CPU; the budgets only matter when something hangs.
TINY = Scale(
    name="tiny",
    budgets_s={"environment": 60, "cuda_tests": 120, "speed": 150, "real_images": 240, "determinism": 180},
    bench_args=["--batch", "8", "--size", "32x16", "--model", "resnet18", "--steps", "2", "--warmup", "1"],
    bench_compile=False,
    epoch_images=96,
    epoch_ids=12,
    matmul_size=256,
    train_overrides=["data.size=[32,16]", "model.name=resnet18", "train.batch_size=8", "eval.batch_size=64"],
    synthetic={"ids": 8, "images_per_id": 8, "cameras": 6, "distractors": 4, "junk": 2, "seed": 0},
    run_budget_s=25.0,
    max_epochs=2,
    det_epochs=2,                # epoch 2, timed, is also the one that evaluates: fine for a rehearsal
    det_every_steps=4,
    notes=["--tiny: synthetic data, ResNet-18 at 32x16, at most 2 epochs per run; the figures test the "
           "check itself, not the hardware"],
)


def scale_for(tiny: bool) -> Scale:
    return TINY if tiny else FULL
