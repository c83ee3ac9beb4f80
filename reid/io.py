"""Atomic file writes: write to a temporary name in the same folder, fsync, rename.

A crash (or SIGKILL) at any moment leaves either the old file or the new one,
never a half-written file.

Example::

    atomic_write_bytes(run_dir / "results.json", json.dumps(r).encode())
    atomic_torch_save(state, run_dir / "checkpoints" / "last.pt")
"""

from __future__ import annotations

import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any, Callable, Iterator

from .errors import OutputError


@contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "wb") -> Iterator[IO]:
    """Open a temporary file beside ``path``; on success it is fsynced and renamed to ``path``."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        _give_usual_mode(fd, path)
    except OSError as e:
        raise OutputError(f"cannot write {path}: {e.strerror or e}; check the folder exists and is writable") from e
    try:
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        _remove_quietly(tmp)
        raise OutputError(f"cannot write {path}: {e.strerror or e}; free space or fix permissions, then resume") from e
    except BaseException:
        _remove_quietly(tmp)
        raise
    _fsync_dir(path.parent)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_open(path, "wb") as f:
        f.write(data)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_with(path: str | os.PathLike, write: Callable[[IO], Any]) -> None:
    """Atomically write ``path`` with ``write(file_object)`` (e.g. torch.save, savemat)."""
    with atomic_open(path, "wb") as f:
        write(f)


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> None:
    import torch

    atomic_write_with(path, lambda f: torch.save(obj, f))


def atomic_savemat(path: str | os.PathLike, arrays: dict) -> None:
    from scipy.io import savemat

    atomic_write_with(path, lambda f: savemat(f, arrays))


def _give_usual_mode(fd: int, path: Path) -> None:
    """mkstemp creates 0600 files; give the file the mode it had, or 0666 less the umask as open() would."""
    try:
        mode = path.stat().st_mode & 0o777
    except OSError:
        mask = os.umask(0o022)
        os.umask(mask)
        mode = 0o666 & ~mask
    try:
        os.fchmod(fd, mode)
    except OSError:
        pass


def _remove_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
