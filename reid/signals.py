"""Stop signals (SIGTERM, SIGUSR1) handed to a handler for as long as a block runs.

A cluster stops a job with SIGTERM (preemption, ``scancel``, ``scontrol requeue``) and can warn
it with another signal before its time limit (``sbatch --signal=B:USR1@120``). The trainer asks
"was I told to stop?" at its step boundaries (:class:`StopFlag`); the launchers wake their main
loop, which stops their children. Handlers are installed only in the main thread (Python
delivers signals there) and the previous ones are put back when the block ends.

Example::

    with on_stop_signals(StopFlag()) as stop:     # SIGTERM/SIGUSR1 set stop.signum
        for step in steps:
            train(step)
            if stop.requested:
                save_checkpoint(); break
"""

from __future__ import annotations

import signal
import threading
from contextlib import contextmanager
from typing import Callable, Iterator, Optional, Sequence, TypeVar

STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR1)

Handler = TypeVar("Handler", bound=Callable)


class StopFlag:
    """A signal handler that only records the signal: :attr:`requested` is True once one arrived.

    SIGINT (Ctrl-C), where it is handed here, is a stop request like SIGTERM the first time; once a stop is
    requested, Ctrl-C raises KeyboardInterrupt: a second Ctrl-C stops at once."""

    def __init__(self) -> None:
        self.signum: Optional[int] = None

    def __call__(self, signum: int, frame: object) -> None:
        if signum == signal.SIGINT and self.requested:
            raise KeyboardInterrupt
        self.signum = signum

    @property
    def requested(self) -> bool:
        return self.signum is not None


@contextmanager
def on_stop_signals(handler: Handler, signals: Sequence[int] = STOP_SIGNALS) -> Iterator[Handler]:
    """Call ``handler`` on ``signals`` inside the block (main thread only; elsewhere it does nothing)."""
    if threading.current_thread() is not threading.main_thread():
        yield handler
        return
    previous = {s: signal.signal(s, handler) for s in signals}
    try:
        yield handler
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
