"""Per-mini-batch records (the criterion's loss, the accuracy, the plain cross entropy) kept on the
training device, and the progress bar that shows them without stalling the GPU.

A record is a per-image quantity whose mean over each global batch becomes a row of
``mini_batch_data.mat`` (``<phase>_<name>``); :func:`step_sums` computes every record of one step, so
adding one is a line there and its name in :data:`RECORDED`.

Example::

    records = StepRecords(batch_sizes=[32, 32, 8], device=device)
    records.record(step, step_sums(batch, part))   # this process's sums; no host synchronisation
    means, sizes = records.take(upto=3)           # one copy to the host (and across ranks)
    means["nll"]                                   # the 3 batches' plain cross entropy
"""

from __future__ import annotations

import contextlib
import time
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from ..losses import BatchShare
from . import distributed
from .history import RECORDED


def step_sums(batch: BatchShare, part: torch.Tensor) -> dict[str, torch.Tensor]:
    """This process's sums of each :data:`RECORDED` quantity over its images of the global batch, on the device.

    ``part`` is this process's part of the global batch's mean loss (the parts of all processes sum to it,
    see reid/losses/shares.py), so its sum is ``part x batch size``; ``acc`` sums ``[argmax == target]``,
    ``nll`` sums ``-log softmax(logits)_target``, taken as its part of the batch mean in float32 exactly as
    the ``cross_entropy`` criterion computes it, so that the two agree to the bit for that criterion.

    Example::

        sums = step_sums(BatchShare.whole(logits, targets, None), criterion(logits, targets))
        sums["nll"] / len(targets)        # == F.cross_entropy(logits, targets)
    """
    logits, n = batch.logits.detach(), batch.batch_size
    nll_part = F.cross_entropy(logits.float(), batch.targets, reduction="sum") / n
    return {
        "loss": part.detach().double() * n,
        "acc": (logits.argmax(1) == batch.targets).sum().double(),
        "nll": nll_part.double() * n,
    }


class StepRecords:
    """Per-mini-batch sums of the :data:`RECORDED` quantities of one phase, kept on the training device.

    Nothing here synchronises with the host per step; :meth:`take` copies the
    pending rows out (and sums them across torchrun ranks) at flush points.
    """

    def __init__(self, batch_sizes: list[int], device: torch.device) -> None:
        self.batch_sizes = batch_sizes   # global sizes, known on the host
        self.sums = torch.zeros(len(batch_sizes), len(RECORDED), dtype=torch.float64, device=device)
        self.flushed = 0

    def record(self, step: int, sums: dict[str, torch.Tensor]) -> None:
        """``sums``: this process's :func:`step_sums` of global batch ``step`` (the processes' sums add up)."""
        self.sums[step] = torch.stack([sums[name] for name in RECORDED])

    def take(self, upto: int) -> tuple[dict[str, list[float]], list[int]]:
        """The mean of each record over global batches ``flushed..upto-1``, by name, and their sizes;
        marks them flushed."""
        rows = distributed.all_reduce_sum(self.sums[self.flushed:upto].clone()).cpu().numpy()
        sizes = self.batch_sizes[self.flushed:upto]
        n = np.asarray(sizes, dtype=np.float64)
        self.flushed = upto
        return {name: (rows[:, column] / n).tolist() for column, name in enumerate(RECORDED)}, sizes

    def running(self, upto: int) -> torch.Tensor:
        """(loss sum, correct sum) over ``0..upto-1``, on the device, for the progress bar."""
        return self.sums[:upto, :2].sum(0)


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


# Where no progress bar is shown (output to a pipe or a file: a study's runs, a batch job's log), a run prints
# a step line after its first training step and then at most every this many seconds, so that its log shows it
# is alive within an epoch: a ResNet-50 epoch on Market-1501 takes minutes, on a CPU far longer.
STEP_LINE_SECONDS = 30.0


class StepLines:
    """When the next step line is due: after the first step of this start, then every :data:`STEP_LINE_SECONDS`."""

    def __init__(self, enabled: bool) -> None:
        self.enabled, self.last = enabled, None

    def due(self, now: float) -> bool:
        if not self.enabled or (self.last is not None and now - self.last < STEP_LINE_SECONDS):
            return False
        self.last = now
        return True


class PhaseBar(contextlib.AbstractContextManager):
    """tqdm over images with running loss/accuracy, refreshed a few times a second; without a terminal, a step
    line now and then instead (``lines``: :class:`StepLines`).

    Example::

        with PhaseBar("epoch 1/60 train", total=12936, device=device, enabled=True, steps=405,
                      lines=StepLines(True)) as bar:
            bar.advance(32, records, upto=1)   # no terminal: "epoch 1/60 train: step 1/405, 41.2 img/s, ..."
    """

    def __init__(self, desc: str, total: int, device: torch.device, enabled: bool, steps: int = 0,
                 lines: StepLines | None = None) -> None:
        # disable=None: bars only on a terminal; elsewhere step lines keep a log short
        self.bar = tqdm(total=total, desc=desc, unit="img", unit_scale=True, leave=False,
                        disable=None if enabled else True, dynamic_ncols=True)
        self.lines = lines if enabled and self.bar.disable and lines is not None and lines.enabled else None
        self.view = LiveView(device) if enabled and (not self.bar.disable or self.lines) else None
        self.desc, self.steps = desc, steps
        self.seen = 0
        self.started = self.last_refresh = time.perf_counter()

    def advance(self, count: int, records: StepRecords, upto: int) -> None:
        if self.view is None:
            return
        self.seen += count
        now = time.perf_counter()
        if self.lines is not None:
            if self.lines.due(now):
                self.step_line(now, records, upto)
            return
        self.bar.update(count)
        if now - self.last_refresh > 0.5:
            self.last_refresh = now
            shown = self.view.update(records.running(upto), self.seen)
            if shown:
                self.bar.set_postfix(shown, refresh=False)

    def step_line(self, now: float, records: StepRecords, upto: int) -> None:
        """``epoch 1/60 train: step 40/405, 41.2 img/s, loss 6.1234 acc 0.012``: on CUDA the
        running loss is the one the previous line's copy brought (no wait for the GPU), none on the first."""
        shown = self.view.update(records.running(upto), self.seen)
        numbers = f", loss {shown['loss']} acc {shown['acc']}" if shown else ""
        rate = self.seen / max(now - self.started, 1e-9)
        tqdm.write(f"{self.desc}: step {upto}/{self.steps}, {rate:.1f} img/s{numbers}")

    def __exit__(self, *exc: object) -> None:
        self.bar.close()
