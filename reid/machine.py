"""The machine a run computes on: what makes its numbers differ from another machine's.

The same seed and config give different float32 results on another CPU model (other kernels,
another summation order), and bf16 results depend on CPU features such as AMX. Each run records
its machine in ``results.json`` and its log, and comparisons say when their runs come from more
than one kind of machine.

Example::

    record = machine_record(torch.device("cpu"))
    record["cpu"], record["cpu_flags"]          # 'AMD EPYC', ['avx512_bf16']
    machine_line(record)                        # 'AMD EPYC (avx512_bf16, capability AVX512), torch 2.14.1, oneDNN v3.12.0'
    machine_kind(record)                        # what two runs must share to be paired

``python -m reid.machine`` prints the line of this machine (``.ci/run`` starts with it).
"""

from __future__ import annotations

import platform
import re
from pathlib import Path
from typing import Any, Optional

import torch

# CPU features that select other kernels for the same operation (oneDNN's AMX and AVX512-BF16 paths)
KERNEL_FLAGS = ("amx_bf16", "amx_tile", "amx_int8", "avx512_bf16", "avx512f")


def cpu_model_and_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> tuple[str, list[str]]:
    """The CPU's model name and which of :data:`KERNEL_FLAGS` it has (Linux; elsewhere the platform's name)."""
    try:
        text = cpuinfo.read_text()
    except OSError:
        return platform.processor() or platform.machine() or "unknown CPU", []
    model = re.search(r"^model name\s*:\s*(.+)$", text, re.MULTILINE)
    flags = re.search(r"^flags\s*:\s*(.+)$", text, re.MULTILINE)
    present = set(flags[1].split()) if flags else set()
    return (model[1].strip() if model else platform.machine() or "unknown CPU"), [f for f in KERNEL_FLAGS if f in present]


def onednn_version() -> Optional[str]:
    """oneDNN's version as torch was built with it (``v3.12.0``), None when torch has none."""
    found = re.search(r"(?:MKL-DNN|oneDNN)\s+(v[0-9][0-9.]*)", torch.__config__.show())
    return found[1] if found else None


def machine_record(device: torch.device) -> dict[str, Any]:
    """What a run on ``device`` records of its machine: CPU model and kernel flags, GPU name and compute
    capability (None on the CPU), and the versions of torch, CUDA, cuDNN and oneDNN."""
    cpu, flags = cpu_model_and_flags()
    record: dict[str, Any] = {
        "device": device.type, "cpu": cpu, "cpu_flags": flags,
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "gpu": None, "gpu_capability": None,
        "torch": str(torch.__version__), "cuda": torch.version.cuda,  # str: TorchVersion does not unpickle safely
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "onednn": onednn_version(),
    }
    if device.type == "cuda":
        major, minor = torch.cuda.get_device_capability(device)
        record["gpu"], record["gpu_capability"] = torch.cuda.get_device_name(device), f"{major}.{minor}"
    return record


def machine_kind(record: dict[str, Any]) -> str:
    """The part of a machine record that changes a run's numbers: on a GPU its name, capability and the
    torch/CUDA/cuDNN versions; on the CPU its model, kernel flags and the torch/oneDNN versions."""
    if record.get("gpu"):
        return (f"{record['gpu']} (compute {record['gpu_capability']}), torch {record['torch']}, "
                f"CUDA {record['cuda']}, cuDNN {record['cudnn']}")
    flags = ", ".join(record.get("cpu_flags") or []) or "no AMX/AVX512"
    return f"{record['cpu']} ({flags}), torch {record['torch']}, oneDNN {record.get('onednn')}"


def machine_line(record: dict[str, Any]) -> str:
    """One line for a log: the kind, and on the CPU the capability torch dispatches to."""
    line = machine_kind(record)
    if not record.get("gpu"):
        line += f", CPU capability {record.get('cpu_capability')}"
    return line


def ci_line() -> str:
    """The line ``.ci/run`` starts with: CPU model, AMX and AVX512-BF16 present or not, torch version."""
    cpu, flags = cpu_model_and_flags()
    yes = {True: "yes", False: "no"}
    return (f"machine: {cpu}; AMX {yes['amx_bf16' in flags]}; AVX512-BF16 {yes['avx512_bf16' in flags]}; "
            f"torch {torch.__version__}")


if __name__ == "__main__":
    print(ci_line())
