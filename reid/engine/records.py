"""Per-mini-batch loss and accuracy kept on the training device, and the progress bar
that shows them without stalling the GPU.

Example::

    records = StepRecords(batch_sizes=[32, 32, 8], device=device)
    records.record(step, part, correct)    # this process's part of the batch's loss; no host synchronisation
    losses, accuracies, sizes = records.take(upto=3)      # one copy to the host (and across ranks)
"""

from __future__ import annotations

import contextlib
import time
from typing import Optional

import numpy as np
import torch
from tqdm import tqdm

from . import distributed


class StepRecords:
    """Per-mini-batch loss and correct counts of one phase, kept on the training device.

    Nothing here synchronises with the host per step; :meth:`take` copies the
    pending rows out (and sums them across torchrun ranks) at flush points.
    """

    def __init__(self, batch_sizes: list[int], device: torch.device) -> None:
        self.batch_sizes = batch_sizes   # global sizes, known on the host
        self.sums = torch.zeros(len(batch_sizes), 2, dtype=torch.float64, device=device)
        self.flushed = 0

    def record(self, step: int, part: torch.Tensor, correct: torch.Tensor) -> None:
        """``part``: this process's part of the global batch's mean loss (the parts of all processes sum
        to it, see reid/losses/shares.py); ``correct``: the number correct among this process's images."""
        self.sums[step, 0] = part.detach().double() * self.batch_sizes[step]
        self.sums[step, 1] = correct.double()

    def take(self, upto: int) -> tuple[list[float], list[float], list[int]]:
        """Mean loss, accuracy and size of global batches ``flushed..upto-1``; marks them flushed."""
        rows = distributed.all_reduce_sum(self.sums[self.flushed:upto].clone()).cpu().numpy()
        sizes = self.batch_sizes[self.flushed:upto]
        n = np.asarray(sizes, dtype=np.float64)
        self.flushed = upto
        return (rows[:, 0] / n).tolist(), (rows[:, 1] / n).tolist(), sizes

    def running(self, upto: int) -> torch.Tensor:
        """(loss sum, correct sum) over ``0..upto-1``, on the device, for the progress bar."""
        return self.sums[:upto].sum(0)


class LiveView:
    """Running loss/accuracy for the progress bar without stalling the GPU.

    On CUDA the totals are copied to pinned memory asynchronously and shown one
    refresh later, when the copy has landed; on the CPU they are read directly.
    """

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"
        self.host = torch.zeros(2, dtype=torch.float64, pin_memory=self.cuda)
        self.event = torch.cuda.Event() if self.cuda else None
        self.pending_count = 0

    def update(self, totals: torch.Tensor, count: int) -> Optional[dict[str, str]]:
        shown = None
        if self.cuda and self.pending_count and self.event.query():
            shown = self._format(self.host.tolist(), self.pending_count)
        if not self.cuda:
            return self._format(totals.tolist(), count)
        self.host.copy_(totals, non_blocking=True)
        self.event.record()
        self.pending_count = count
        return shown

    @staticmethod
    def _format(totals: list[float], count: int) -> dict[str, str]:
        return {"loss": f"{totals[0] / count:.4f}", "acc": f"{totals[1] / count:.3f}"}


class PhaseBar(contextlib.AbstractContextManager):
    """tqdm over images with running loss/accuracy, refreshed a few times a second."""

    def __init__(self, desc: str, total: int, device: torch.device, enabled: bool) -> None:
        # disable=None: bars only on a terminal, so logs of batch jobs stay one line per epoch
        self.bar = tqdm(total=total, desc=desc, unit="img", unit_scale=True, leave=False,
                        disable=None if enabled else True, dynamic_ncols=True)
        self.view = LiveView(device) if enabled and not self.bar.disable else None
        self.seen = 0
        self.last_refresh = 0.0

    def advance(self, count: int, records: StepRecords, upto: int) -> None:
        if self.view is None:
            return
        self.seen += count
        self.bar.update(count)
        now = time.perf_counter()
        if now - self.last_refresh > 0.5:
            self.last_refresh = now
            shown = self.view.update(records.running(upto), self.seen)
            if shown:
                self.bar.set_postfix(shown, refresh=False)

    def __exit__(self, *exc: object) -> None:
        self.bar.close()
