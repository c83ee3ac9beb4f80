"""The five parts of the check, in the order they run and are reported.

Each part is a module of this package with ``run(ctx: PartContext)``, run in its own
process (``python -m reid.gpu_check.part NAME ...``) under the budget of
``scale.budgets_s[NAME]``.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Part:
    name: str   # its module in reid/gpu_check/ and its key in Scale.budgets_s
    title: str  # its section in report.md


PARTS = (
    Part("environment", "1. GPU, driver, torch and CUDA"),
    Part("cuda_tests", "2. Tests that need CUDA"),
    Part("speed", "3. Speed: bench.py train and a full-size epoch"),
    Part("real_images", "4. Real images from scratch"),
    Part("determinism", "5. train.deterministic: kill, resume, speed"),
)
