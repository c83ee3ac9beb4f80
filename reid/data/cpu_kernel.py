"""The fused CPU augmentation kernel (``cpu_kernel.c``): build once, load with ctypes.

Why a kernel: on the CPU, :class:`~reid.data.BatchAugment` made with PyTorch ops passes over
each float32 output image several times (convert, scale, shift, erase); memory traffic, not
arithmetic, is the cost. The kernel reads the cached uint8 pixels once and writes each output
value once. Its results are bit for bit those of the PyTorch ops (same two float32 roundings;
tests/test_data_augment.py compares them), so whether it runs never changes an experiment.

It is compiled on first use with the system C compiler (``$CC``, else ``cc``) into
``$REID_KERNEL_DIR`` (default ``$XDG_CACHE_HOME/reid/kernels``, i.e. ``~/.cache/reid/kernels``,
or a per-user folder under the temporary directory where that cannot be written), under a name
that hashes the source, the compiler command and the machine type, so later runs (and other
processes) just load it. Where no compiler works, one warning is printed and the
PyTorch ops run instead (same numbers, slower). ``REID_CPU_KERNEL=off`` turns the kernel off.

Example::

    >>> from reid.data import cpu_kernel
    >>> cpu_kernel.status()
    'fused C kernel (/home/me/.cache/reid/kernels/cpu_kernel-1f2e3d4c5b6a.so)'
    >>> cpu_kernel.load() is None     # False when built; BatchAugment uses it by itself
    False
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shlex
import subprocess
import tempfile
import threading
import warnings
from pathlib import Path

import torch

from ..errors import OutputError
from ..io import atomic_write_bytes

SOURCE = Path(__file__).with_name("cpu_kernel.c")
FLAGS = ("-O3", "-ffp-contract=off", "-fPIC", "-shared")  # no -ffast-math: rounding must match PyTorch

_lock = threading.Lock()
_state: dict = {}  # "fn": the loaded function or None, "status": a sentence for status()


class CompileError(OSError):
    """The C compiler is missing or rejected the source (a folder elsewhere would not help)."""


def kernel_dirs() -> list[Path]:
    """Where built kernels are kept, in order of preference.

    ``$REID_KERNEL_DIR`` alone when it is set; else ``$XDG_CACHE_HOME/reid/kernels`` (default
    ``~/.cache/reid/kernels``), then a per-user folder in the temporary directory for machines
    whose home is read-only.
    """
    if os.environ.get("REID_KERNEL_DIR"):
        return [Path(os.environ["REID_KERNEL_DIR"])]
    folders = []
    try:
        cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
        folders.append(Path(cache) / "reid" / "kernels")
    except RuntimeError:  # no home directory
        pass
    user = os.getuid() if hasattr(os, "getuid") else "user"
    return folders + [Path(tempfile.gettempdir()) / f"reid-kernels-{user}"]


def _compiler() -> list[str]:
    return shlex.split(os.environ.get("CC") or "cc")


def _library_name() -> str:
    key = hashlib.sha256(SOURCE.read_bytes())
    key.update(repr((_compiler(), FLAGS, platform.machine(), platform.system())).encode())
    return f"cpu_kernel-{key.hexdigest()[:12]}.so"


def _build(path: Path) -> None:
    """Compile in a temporary folder, then write ``path`` atomically (concurrent builds are safe)."""
    with tempfile.TemporaryDirectory(prefix="reid-kernel-") as tmp:
        built = Path(tmp) / path.name
        cmd = [*_compiler(), *FLAGS, "-o", str(built), str(SOURCE)]
        try:
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
        except (OSError, subprocess.SubprocessError) as e:
            raise CompileError(f"`{cmd[0]}` could not run: {e}") from e
        if done.returncode != 0:
            detail = (done.stderr.strip().splitlines() or [f"exit status {done.returncode}"])[0]
            raise CompileError(f"`{cmd[0]}` failed: {detail}")
        atomic_write_bytes(path, built.read_bytes())


def _bind(path: Path):
    fn = ctypes.CDLL(str(path)).reid_augment
    p, i = ctypes.c_void_p, ctypes.c_int64
    fn.argtypes = [p, i, i, i, i, i, i, p, p, p, p, p, p, p, p, i]
    fn.restype = None
    return fn


def _load_built(path: Path):
    """The function from ``path``, built first when missing; a damaged or foreign file is built again once."""
    if not path.exists():
        _build(path)
    try:
        return _bind(path)
    except OSError:
        _build(path)
        return _bind(path)


def _without_kernel(reason: str):
    warnings.warn(f"the fused CPU augmentation kernel could not be built ({reason}); using PyTorch ops instead "
                  "(same results, slower). Install a C compiler (cc) or set CC to use it.", stacklevel=4)
    return None, f"PyTorch ops (kernel not built: {reason})"


def _load_or_build():
    if os.environ.get("REID_CPU_KERNEL", "on").lower() in ("off", "0", "false", "no"):
        return None, "PyTorch ops (REID_CPU_KERNEL=off)"
    try:
        name = _library_name()
    except OSError as e:  # the source file is missing from the installation
        return _without_kernel(str(e))
    unusable = []
    for folder in kernel_dirs():
        try:
            return _load_built(folder / name), f"fused C kernel ({folder / name})"
        except CompileError as e:
            return _without_kernel(str(e))
        except (OSError, OutputError) as e:  # this folder cannot be written or cannot load libraries: the next
            unusable.append(f"{folder}: {e}")
    return _without_kernel("no folder to build it in: " + "; ".join(unusable))


def load():
    """The kernel's C function, built on first use; ``None`` when it is off or cannot be built."""
    with _lock:
        if "fn" not in _state:
            _state["fn"], _state["status"] = _load_or_build()
        return _state["fn"]


def status() -> str:
    """Which CPU augmentation path runs, in words (builds the kernel when needed)."""
    load()
    return _state["status"]


def reset() -> None:
    """Forget the loaded kernel, so that the next :func:`load` reads the environment again (tests)."""
    with _lock:
        _state.clear()


def augment_into(out: torch.Tensor, src: torch.Tensor, rows: torch.Tensor, sy: torch.Tensor, sx: torch.Tensor,
                 flip: torch.Tensor, box: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """Run the kernel: ``out`` (B, 3, H, W) float32 from ``src`` (N, 3, H, W) uint8, any strides.

    ``rows``, ``sy``, ``sx``: int64 (B,); ``flip``: bool (B,); ``box``: int64 (B, 4) as
    (y, x, h, w), h = 0 for no erasing; ``scale``, ``bias``: float32 (3,). Rows are checked
    against ``src`` here, because the C code trusts them.
    """
    fn = load()
    if fn is None:
        raise RuntimeError(f"the fused CPU kernel is not available: {status()}")
    B, (N, C, H, W) = int(rows.shape[0]), src.shape
    if C != 3 or src.dtype != torch.uint8 or out.shape != (B, 3, H, W) or out.dtype != torch.float32 \
            or not out.is_contiguous():
        raise ValueError(f"augment_into expects uint8 src (N, 3, H, W) and a contiguous float32 out (B, 3, H, W); "
                         f"got {src.dtype} {tuple(src.shape)} and {out.dtype} {tuple(out.shape)}")
    if B and (int(rows.min()) < 0 or int(rows.max()) >= N):
        raise IndexError(f"rows must lie in [0, {N}), got {int(rows.min())}..{int(rows.max())}")
    args = [t.to(dtype).contiguous() for t, dtype in
            ((rows, torch.int64), (sy, torch.int64), (sx, torch.int64), (flip, torch.uint8), (box, torch.int64),
             (scale, torch.float32), (bias, torch.float32))]
    fn(src.data_ptr(), *src.stride(), H, W, *(a.data_ptr() for a in args), out.data_ptr(), B)
    return out
