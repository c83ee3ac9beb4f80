"""The training device, its precision, the process-wide backend switches of a run, and the compiled model.

Example::

    dev = resolve_device("auto")                       # cuda when present, else cpu
    configure_backends(cfg.train, dev)                 # determinism, TF32, cuDNN autotuning
    amp = autocast_dtype(cfg.train.precision, dev)     # bfloat16 on an A100/H100/H200, float16 on a V100/T4, None on the CPU
    net = CompiledWithFallback(model)                  # train.compile: torch.compile, eager where it fails
"""

from __future__ import annotations

import os
from typing import Any, Optional

import torch
from torch import nn
from tqdm import tqdm

from ..errors import ConfigError

# cuBLAS reproducibility: a fixed workspace per stream (NVIDIA's documented setting)
CUBLAS_WORKSPACE_CONFIG = ":4096:8"


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` -> CUDA when present, else the CPU; ``cuda`` without a GPU is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name not in ("cpu", "cuda"):
        raise ConfigError(f"--device {name!r}: choose cpu, cuda or auto")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda: no CUDA device is visible; use --device cpu or auto")
    return torch.device(name)


def computes_bf16_natively(device: torch.device) -> bool:
    """True on GPUs of compute capability 8.0 (Ampere) or newer.

    ``torch.cuda.is_bf16_supported()`` also answers True on older GPUs (V100, T4) that
    emulate bf16, where cuDNN has no bf16 convolutions and training crawls.
    """
    major, _ = torch.cuda.get_device_capability(device)
    return major >= 8


def autocast_dtype(precision: str, device: torch.device) -> Optional[torch.dtype]:
    """The autocast dtype for ``train.precision`` on ``device`` (None = float32).

    ``auto``: bf16 on GPUs that compute it natively, fp16 (with the GradScaler) on older
    GPUs, float32 on the CPU. ``fp16`` needs CUDA.
    """
    if precision == "auto":
        if device.type != "cuda":
            return None
        return torch.bfloat16 if computes_bf16_natively(device) else torch.float16
    if precision == "fp16" and device.type != "cuda":
        raise ConfigError("train.precision = fp16 needs CUDA; use bf16 or fp32 on the CPU")
    return {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": None}[precision]


def eval_autocast_dtype(precision: str, device: torch.device) -> Optional[torch.dtype]:
    """The autocast dtype for evaluating (and embedding with) a run trained with ``precision``: as in
    training on CUDA; float32 on the CPU whatever the run trained in. CPU bf16 buys little for inference,
    and some CPUs' bf16 kernels return wrong features that are still finite (reid.engine.cpu_bf16), so a
    run trained in bf16 on a GPU ranks the same on any CPU as in float32."""
    if device.type != "cuda":
        return None
    return autocast_dtype(precision, device)


def precision_name(dtype: Optional[torch.dtype]) -> str:
    """``torch.bfloat16`` -> ``bf16``, ``torch.float16`` -> ``fp16``, None -> ``fp32``."""
    return {torch.bfloat16: "bf16", torch.float16: "fp16", None: "fp32"}[dtype]


def configure_backends(deterministic: bool, tf32: bool) -> None:
    """Set the process-wide switches of ``train.deterministic`` and ``train.tf32``.

    Deterministic: deterministic algorithms only (an operation without one raises), no cuDNN
    autotuning, and cuBLAS's fixed workspace (read when CUDA creates its handle, so this runs
    before the first CUDA operation). Otherwise cuDNN autotunes its convolutions for the fixed
    input size, and atomic-add kernels make CUDA results vary in the last bits from run to run.
    TF32: float32 matmuls and convolutions on CUDA use TensorFloat-32 (10-bit mantissa inputs,
    float32 accumulation); it has no effect on the CPU or under bf16/fp16 autocast.
    """
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", CUBLAS_WORKSPACE_CONFIG)
    torch.use_deterministic_algorithms(deterministic)
    torch.backends.cudnn.deterministic = deterministic
    torch.backends.cudnn.benchmark = not deterministic
    torch.backends.cuda.matmul.allow_tf32 = tf32
    torch.backends.cudnn.allow_tf32 = tf32


class CompiledWithFallback(nn.Module):
    """``torch.compile(net)`` that trains on uncompiled where the compiler fails.

    ``torch.compile`` is lazy: a missing C compiler or an unsupported platform shows only when a
    batch is first run (or a new shape is compiled). Such a failure prints one warning and the
    batch runs again eagerly, as does the rest of the run; an error of the model itself then
    surfaces from the eager call, as without compile.
    """

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net
        self.compiled: Optional[Any] = torch.compile(net)

    def forward(self, *args: Any) -> Any:
        if self.compiled is not None:
            try:
                return self.compiled(*args)
            except Exception as e:  # noqa: BLE001 - any compiler failure; the eager call below re-raises real errors
                tqdm.write(f"warning: train.compile is on but torch.compile failed ({type(e).__name__}: "
                           f"{str(e).strip().splitlines()[0] if str(e).strip() else ''}); training without it")
                self.compiled = None
        return self.net(*args)
