"""The one timer of the benchmarks and the GPU check.

Example::

    seconds, out = timed(lambda: model(x), repeats=3, warmup=1, device=torch.device("cuda"))
    min(seconds)      # the fastest of the three calls
"""

from __future__ import annotations

import time
from typing import Any, Callable, Optional

import torch


def timed(fn: Callable[[], Any], repeats: int = 1, warmup: int = 0,
          device: Optional[torch.device] = None) -> tuple[list[float], Any]:
    """Seconds of each of ``repeats`` calls of ``fn`` after ``warmup`` untimed ones, and the last call's result.

    On CUDA the device's queue is drained before and after each timed call, so a call's seconds
    include the kernels it launched. Time several steps as one call (a loop inside ``fn``) to
    keep the GPU's queue full between them.
    """
    for _ in range(warmup):
        fn()
    seconds, out = [], None
    for _ in range(max(1, repeats)):
        sync(device)
        start = time.perf_counter()
        out = fn()
        sync(device)
        seconds.append(time.perf_counter() - start)
    return seconds, out


def sync(device: Optional[torch.device]) -> None:
    """Wait for the device's queued kernels (nothing to wait for on the CPU)."""
    if device is not None and torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)
