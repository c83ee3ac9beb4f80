"""Where a run stands, and when it stops: stop signals read at step boundaries and between the phases
of an epoch, agreed by the processes of a torchrun group, and what Ctrl-C tells the user.

A cluster stops a job with SIGTERM (preemption, ``scontrol requeue``) and warns it with SIGUSR1
before its time limit; a user presses Ctrl-C (SIGINT). While :meth:`StopSignals.listening`, each sets
a flag (a second Ctrl-C stops at once); the trainer asks
:meth:`StopSignals.agreed` after each training step and each val batch, and between evaluation
phases, and then stops with a checkpoint (:meth:`StopSignals.stop`). :class:`Progress` keeps where
training is and where the newest checkpoint is, for the Ctrl-C message.

Example::

    stops = StopSignals(dist, device)
    with stops.listening():
        for step in range(n):
            train(step)
            if stops.agreed(step + 1):
                save(epoch, step + 1)
                stops.stop(epoch, step + 1)      # raises Stopped
"""

from __future__ import annotations

import signal
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import NoReturn, Optional

import torch

from ..errors import Stopped
from ..signals import STOP_SIGNALS, StopFlag, on_stop_signals
from . import distributed

# Under torchrun on CUDA the processes agree whether to stop every this many steps: reading the agreement
# waits for the GPU, so a stop costs at most this many more steps and the GPU keeps its queue full between.
AGREE_EVERY_CUDA = 20


@dataclass
class Position:
    """Where a run stands: ``step`` training steps of ``epoch`` are done (``epoch_done``: and its val/eval)."""

    epoch: int = 1
    step: int = 0
    epoch_done: bool = False

    def next(self) -> "Position":
        return Position(self.epoch + 1, 0) if self.epoch_done else self


class PhaseStopped(Exception):
    """A stop signal arrived during validation or evaluation: the epoch ends without them."""


class StopSignals:
    """SIGTERM/SIGUSR1 received by this process, and whether the run's processes agree to stop now."""

    def __init__(self, dist: distributed.DistInfo, device: torch.device) -> None:
        self.flag, self.dist, self.device = StopFlag(), dist, device

    def listening(self) -> AbstractContextManager:
        """The block in which SIGTERM, SIGUSR1 and a first Ctrl-C (SIGINT) set the flag instead of ending the
        process; a Ctrl-C after that raises KeyboardInterrupt (:class:`reid.signals.StopFlag`)."""
        return on_stop_signals(self.flag, (*STOP_SIGNALS, signal.SIGINT))

    @property
    def received(self) -> bool:
        """Whether this process was told to stop (no agreement: evaluation runs on rank 0 alone)."""
        return self.flag.requested

    def agreed(self, step: Optional[int] = None) -> bool:
        """Whether to stop after ``step`` steps of a phase (None: now, at a phase's end), on every process alike.

        One process reads its own flag: no synchronisation. Under torchrun the processes agree (a flag set
        on any stops all) with an all-reduce, at every step on the CPU (gloo) but only every
        :data:`AGREE_EVERY_CUDA` steps on CUDA; every process must ask with the same ``step``.
        """
        every = AGREE_EVERY_CUDA if self.device.type == "cuda" else 1
        if self.dist.enabled and step is not None and step % every:
            return False
        return self.any_process(self.received)

    def all_done(self, done: bool) -> bool:
        """Whether every process got through the epoch's val and evaluation phases: rank 0 alone evaluates,
        so a stop it met there holds for all (every process must ask, once per epoch)."""
        return not self.any_process(not done)

    def any_process(self, flag: bool) -> bool:
        """Whether ``flag`` holds on any process of the run (this one's, without torchrun): an all-reduce whose
        result is read on the host, so on CUDA it waits for the GPU."""
        if not self.dist.enabled:
            return flag
        return distributed.all_reduce_max(torch.tensor([float(flag)], device=self.device)).item() > 0

    def stop(self, epoch: int, step: int) -> NoReturn:
        """After the checkpoint of (epoch, step) is written: wait for rank 0 to write it, then end the run."""
        distributed.barrier()
        raise Stopped(f"stopped at epoch {epoch}, step {step}: checkpoint written; continue with --resume auto"
                      if self.dist.is_main else "")


@dataclass
class Progress:
    """The training steps done and the newest checkpoint (``last``, once written): what Ctrl-C reports."""

    last: Path
    at: Position = field(default_factory=Position)
    saved: Optional[Position] = None
    steps_since_save: int = 0

    def stepped(self, epoch: int, step: int) -> None:
        self.at, self.steps_since_save = Position(epoch, step), self.steps_since_save + 1

    def checkpointed(self, position: Position) -> None:
        self.saved, self.steps_since_save = position, 0

    def resumed(self, saved: Position) -> Position:
        """Note the checkpoint a run resumes from; the position it continues at."""
        self.checkpointed(saved)
        start = saved.next()
        self.at = Position(start.epoch, start.step)
        return start

    def interrupted_message(self) -> str:
        """Where Ctrl-C stopped and how much ``--resume auto`` redoes."""
        here = f"interrupted at epoch {self.at.epoch}, step {self.at.step}"
        if self.saved is None:
            return f"{here}, before the first checkpoint: nothing is saved, so --resume auto starts the run over"
        n = self.steps_since_save
        return (f"{here}; the last checkpoint ({self.last}) is at epoch {self.saved.epoch}, step "
                f"{self.saved.step}: continue with --resume auto, which redoes {n} training step{'s' * (n != 1)}")
