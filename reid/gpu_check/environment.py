"""Part 1: the card, its driver, and the torch, CUDA and cuDNN versions.

Example::

    facts = machine_facts(torch.device("cuda"))
    facts["card"], facts["driver"]        # ('NVIDIA H200', '570.86.15')
"""

from __future__ import annotations

import platform
import shutil
import subprocess

import torch

from .context import PartContext, StepError


def run(ctx: PartContext) -> None:
    with ctx.step("machine"):
        if ctx.device == "cuda" and not torch.cuda.is_available():
            raise StepError("--device cuda: no CUDA device is visible to torch "
                            f"{torch.__version__} (built for CUDA {torch.version.cuda})")
        facts = machine_facts(torch.device(ctx.device))
        for key, value in facts.items():
            ctx.fact(key, value)
        ctx.table("machine", ["what", "value"], [[k.replace("_", " "), v] for k, v in facts.items()])


def machine_facts(device: torch.device) -> dict[str, str]:
    """Card, driver, compute capability, memory and the software versions, as strings."""
    facts = {"card": cpu_name(), "driver": "none (CPU)", "compute_capability": "none"}
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        facts = {"card": props.name, "driver": driver_version(),
                 "compute_capability": f"{props.major}.{props.minor}",
                 "memory": f"{props.total_memory / 2**30:.1f} GiB", "multiprocessors": str(props.multi_processor_count),
                 "native_bf16": str(props.major >= 8)}
    cudnn = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
    return {**facts, "torch": torch.__version__, "cuda_build": str(torch.version.cuda),
            "cudnn": str(cudnn), "python": platform.python_version(), "cpu_threads": str(torch.get_num_threads())}


def driver_version() -> str:
    """The NVIDIA driver version from nvidia-smi, else from NVML, else 'unknown'."""
    if shutil.which("nvidia-smi"):
        try:
            out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                                 capture_output=True, text=True, timeout=30)
            if out.returncode == 0 and out.stdout.strip():
                return out.stdout.strip().splitlines()[0]
        except (OSError, subprocess.TimeoutExpired):
            pass
    try:
        import pynvml

        pynvml.nvmlInit()
        version = pynvml.nvmlSystemGetDriverVersion()
        return version.decode() if isinstance(version, bytes) else str(version)
    except Exception:  # noqa: BLE001 - NVML missing or failing: the version is unknown, nothing else
        return "unknown (no nvidia-smi, no NVML)"


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return f"CPU: {line.split(':', 1)[1].strip()}"
    except OSError:
        pass
    return f"CPU: {platform.processor() or platform.machine()}"
