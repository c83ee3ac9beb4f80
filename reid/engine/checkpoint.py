"""Checkpoints that survive a crash at any moment, and the run-directory lock.

``checkpoints/last.pt`` is always a complete file: a new checkpoint is written to a
temporary name and renamed over it. Before that, the old one is kept as
``checkpoints/previous.pt`` (a hard link, so it costs no copy), which
``--resume auto`` falls back to when ``last.pt`` cannot be read (the damaged file is
moved to ``last.pt.damaged``, so the next save does not rotate it into ``previous.pt``).

The trainer writes its checkpoints in the background: :meth:`CheckpointStore.save_in_background`
copies the state to host memory and returns while a thread writes it (a ResNet-50 with its
optimiser state is about 300 MB), so training goes on meanwhile. Every save first waits for the
write before it, so checkpoints reach the disk one at a time and in order; :meth:`CheckpointStore.wait`
waits for the last one (stops and the end of a run call it); a write's error is raised by the next
save or ``wait``.

Example::

    store = CheckpointStore(run_dir)
    store.save(state)                   # last.pt <- state, previous.pt <- old last.pt
    store.save_in_background(state)     # the same from a thread, on a host copy of state
    store.wait()                        # ... now on disk
    state, path = store.load_latest()   # newest readable checkpoint, or (None, None)
"""

from __future__ import annotations

import copy
import fcntl
import os
import socket
import threading
import warnings
from pathlib import Path
from typing import Any, Callable, Optional

import torch

from ..errors import CheckpointError, OutputError, RunLockedError
from ..io import atomic_torch_save

FORMAT = 1


class CheckpointStore:
    """``run_dir/checkpoints/{last,previous}.pt``."""

    def __init__(self, run_dir: str | Path) -> None:
        self.folder = Path(run_dir) / "checkpoints"
        self.last = self.folder / "last.pt"
        self.previous = self.folder / "previous.pt"
        self._writer: Optional[threading.Thread] = None
        self._error: Optional[BaseException] = None

    def save(self, state: dict) -> Path:
        """Write ``state`` as ``last.pt`` (after the write in progress, if any)."""
        self.wait()
        self._write({"format": FORMAT, **state})
        self.wait()
        return self.last

    def save_in_background(self, state: dict, then: Optional[Callable[[dict], None]] = None) -> Path:
        """Write ``state`` as ``last.pt`` from a thread, from a copy in host memory (training may change
        the originals at once), then call ``then(copy)`` in that thread (files that follow the checkpoint);
        waits first for the write before it."""
        self.wait()
        state = host_copy({"format": FORMAT, **state})
        # not a daemon: a process that ends (an error, Ctrl-C) still finishes the write
        self._writer = threading.Thread(target=self._write, args=(state, then), name="checkpoint-writer")
        self._writer.start()
        return self.last

    def wait(self) -> None:
        """Wait until the checkpoint being written is on disk; raise its write's error."""
        if self._writer is not None:
            self._writer.join()
            self._writer = None
        error, self._error = self._error, None
        if error is not None:
            raise error

    def _write(self, state: dict, then: Optional[Callable[[dict], None]] = None) -> None:
        try:
            if self.last.exists():
                self._keep_as_previous()
            atomic_torch_save(state, self.last)
            if then is not None:
                then(state)
        except BaseException as e:  # noqa: BLE001 - handed to the training thread by wait()
            self._error = e

    def _keep_as_previous(self) -> None:
        tmp = self.folder / ".previous.pt.link"
        try:
            if tmp.exists():
                tmp.unlink()
            os.link(self.last, tmp)
            os.replace(tmp, self.previous)
        except OSError as e:
            raise OutputError(f"cannot keep {self.previous}: {e.strerror or e}; free space or fix permissions") from e

    def load_latest(self) -> tuple[Optional[dict], Optional[Path]]:
        """The newest readable checkpoint; a damaged ``last.pt`` falls back to ``previous.pt`` with a warning."""
        if not self.last.exists() and not self.previous.exists():
            return None, None
        if not self.last.exists():
            warnings.warn(f"{self.last} is missing; resuming from {self.previous}", stacklevel=2)
            return load_checkpoint(self.previous), self.previous
        try:
            return load_checkpoint(self.last), self.last
        except CheckpointError as e:
            if not self.previous.exists():
                raise
            cause = type(e.__cause__).__name__ if e.__cause__ else "not a checkpoint of this tool"
            state = load_checkpoint(self.previous)
            # Set the damaged file aside: the next save() would otherwise rotate it into previous.pt,
            # replacing the only good checkpoint with a damaged one.
            aside = self.last.with_name(self.last.name + ".damaged")
            try:
                os.replace(self.last, aside)
                kept = f"it was moved to {aside}; "
            except OSError:
                kept = ""
            warnings.warn(f"{self.last} cannot be read ({cause}); {kept}resuming from {self.previous} instead",
                          stacklevel=2)
            return state, self.previous


def host_copy(state: Any) -> Any:
    """``state`` with every tensor copied to host memory (nested dicts, lists and tuples copied too)."""
    if isinstance(state, torch.Tensor):
        return state.detach().to("cpu", copy=True)
    if isinstance(state, dict):
        return {k: host_copy(v) for k, v in state.items()}
    if isinstance(state, (list, tuple)):
        return type(state)(host_copy(v) for v in state)
    return copy.deepcopy(state)


def load_checkpoint(path: str | Path) -> dict:
    """Read a checkpoint written by :class:`CheckpointStore`; a damaged file is a CheckpointError."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint; pass an existing .pt file to --resume or use --resume auto")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types for a truncated or foreign file
        raise CheckpointError(f"{path}: cannot read this checkpoint ({type(e).__name__}); it is damaged or not a "
                              "checkpoint of this tool, so resume from another file or start afresh") from e
    if not isinstance(state, dict) or state.get("format") != FORMAT or "model" not in state:
        raise CheckpointError(f"{path}: not a checkpoint of this tool (no format {FORMAT} header); "
                              "pass a checkpoints/last.pt written by train.py")
    return state


def is_finished(state: dict, epochs: int) -> bool:
    """Whether a checkpoint's run has trained all ``epochs`` epochs (and evaluated the last)."""
    return bool(state.get("finished")) and state.get("epoch", 0) >= epochs


def run_finished(run_dir: str | Path, epochs: int) -> bool:
    """Whether the run in ``run_dir`` has finished ``epochs`` epochs, by its ``checkpoints/last.pt``.

    The file is memory-mapped, so asking costs no read of the weights; a missing or unreadable
    checkpoint means not finished (``--resume auto`` then decides what to do with it).

    Example::

        run_finished("outputs/soft_s0", epochs=60)   # -> True once train.py finished it
    """
    state = peek_last(run_dir)
    return state is not None and is_finished(state, epochs)


def peek_last(run_dir: str | Path) -> Optional[dict]:
    """The run's ``checkpoints/last.pt`` memory-mapped (its weights are not read), or None when it is missing
    or unreadable (damaged: ``--resume auto`` then falls back to ``previous.pt`` or says why)."""
    path = CheckpointStore(run_dir).last
    if not path.is_file():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:
        return None
    return state if isinstance(state, dict) else None


class RunLock:
    """An exclusive lock on a run directory, held for the life of the process.

    It is an ``flock`` on ``run_dir/.lock``: the kernel releases it when the process
    dies, so the lock of a killed run is stale by construction and is simply taken over.
    """

    def __init__(self, run_dir: str | Path) -> None:
        self.path = Path(run_dir) / ".lock"
        self._file: Any = None

    def acquire(self) -> "RunLock":
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            f = open(self.path, "a+")
        except OSError as e:
            raise OutputError(f"cannot write the run directory {self.path.parent}: {e.strerror or e}; "
                              "choose a writable output.root") from e
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            f.seek(0)
            owner = f.read().strip() or "another process"
            f.close()
            raise RunLockedError(f"{self.path.parent} is in use by {owner}; wait for it to finish, stop it, "
                                 "or set output.name to train into another run directory")
        f.seek(0)
        f.truncate()
        f.write(f"pid {os.getpid()} on {socket.gethostname()}")
        f.flush()
        self._file = f
        return self

    def release(self) -> None:
        if self._file is not None:
            fcntl.flock(self._file.fileno(), fcntl.LOCK_UN)
            self._file.close()
            self._file = None

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()
