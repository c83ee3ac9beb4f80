"""Building, caching and falling back from the fused CPU augmentation kernel (its values: test_data_augment)."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import warnings

import pytest
import torch

from reid.data import BatchAugment, batch_generator, cpu_kernel

CC = shlex.split(os.environ.get("CC") or "cc")
needs_cc = pytest.mark.skipif(shutil.which(CC[0]) is None, reason="no C compiler on this machine")


@pytest.fixture
def kernel_env(tmp_path, monkeypatch):
    """A private kernel directory; the process-wide kernel state is forgotten before and after."""
    monkeypatch.setenv("REID_KERNEL_DIR", str(tmp_path / "kernels"))
    monkeypatch.delenv("REID_CPU_KERNEL", raising=False)
    cpu_kernel.reset()
    yield tmp_path / "kernels"
    cpu_kernel.reset()


def _logging_compiler(tmp_path, body: str) -> str:
    """A CC that appends a line to ``cc.log`` per call, then runs ``body``."""
    script = tmp_path / "logging-cc"
    script.write_text(f"#!/bin/sh\necho called >> {tmp_path / 'cc.log'}\n{body}\n")
    script.chmod(0o755)
    return str(script)


def _augment_both_ways():
    cache = torch.randint(0, 256, (10, 3, 32, 16), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    idx = torch.tensor([9, 0, 3, 3, 5])
    fused, ops = (BatchAugment((32, 16), pad=4, erasing_p=0.5, fused=f) for f in (True, False))
    p = fused.sample_params(5, batch_generator(0, 1, 2))
    return fused.apply(cache, p, index=idx), ops.apply(cache, p, index=idx)


@needs_cc
def test_built_once_then_loaded_by_later_processes(kernel_env, tmp_path, monkeypatch):
    monkeypatch.setenv("CC", _logging_compiler(tmp_path, f'exec {shlex.join(CC)} "$@"'))
    show = [sys.executable, "-c", "from reid.data import cpu_kernel; print(cpu_kernel.status())"]
    outs = [subprocess.run(show, capture_output=True, text=True, check=True).stdout for _ in range(2)]
    assert all(o.startswith("fused C kernel (") for o in outs), outs
    assert (tmp_path / "cc.log").read_text().count("called") == 1
    assert [p.suffix for p in kernel_env.iterdir()] == [".so"]  # no temporary file left behind


def test_without_a_compiler_warns_and_gives_the_same_results(kernel_env, monkeypatch):
    monkeypatch.setenv("CC", "/nonexistent/bin/cc")
    with pytest.warns(UserWarning, match="could not be built.*same results"):
        assert cpu_kernel.load() is None
    assert cpu_kernel.status().startswith("PyTorch ops (kernel not built")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # warned once per process, not per batch
        fused, ops = _augment_both_ways()
    assert torch.equal(fused, ops)
    assert not kernel_env.exists() or not any(kernel_env.iterdir())


def test_compiler_errors_are_quoted_in_the_warning(kernel_env, tmp_path, monkeypatch):
    monkeypatch.setenv("CC", _logging_compiler(tmp_path, 'echo "cpu_kernel.c:1: boom" >&2; exit 1'))
    with pytest.warns(UserWarning, match="boom"):
        assert cpu_kernel.load() is None
    assert not kernel_env.exists() or not any(kernel_env.iterdir())  # nothing is left in the kernel folder


def test_off_switch(kernel_env, monkeypatch):
    monkeypatch.setenv("REID_CPU_KERNEL", "off")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert cpu_kernel.load() is None
    assert cpu_kernel.status() == "PyTorch ops (REID_CPU_KERNEL=off)"


@needs_cc
def test_a_damaged_library_file_is_built_again(kernel_env):
    show = [sys.executable, "-c", "from reid.data import cpu_kernel; print(cpu_kernel.status())"]
    subprocess.run(show, check=True, capture_output=True)
    (lib,) = kernel_env.iterdir()
    damaged = lib.with_suffix(".damaged")
    damaged.write_bytes(b"not a shared library")
    damaged.replace(lib)  # a new file (a library another process has loaded must not change under it)
    out = subprocess.run(show, check=True, capture_output=True, text=True).stdout
    assert out.startswith("fused C kernel (") and lib.read_bytes()[:4] == b"\x7fELF"


@needs_cc
def test_rows_outside_the_source_are_refused_before_the_c_code_reads_them(kernel_env):
    src, out = torch.zeros(4, 3, 8, 4, dtype=torch.uint8), torch.empty(1, 3, 8, 4)
    z = torch.zeros(1, dtype=torch.long)
    args = (z, z, torch.zeros(1, dtype=torch.bool), torch.zeros(1, 4, dtype=torch.long), torch.ones(3), torch.zeros(3))
    with pytest.raises(IndexError, match=r"\[0, 4\)"):
        cpu_kernel.augment_into(out, src, torch.tensor([4]), *args)
    with pytest.raises(IndexError):
        cpu_kernel.augment_into(out, src, torch.tensor([-1]), *args)
    cpu_kernel.augment_into(out, src, torch.tensor([3]), *args)
    assert torch.equal(out, torch.zeros_like(out))  # black pixels * 1 + 0


@needs_cc
def test_an_unwritable_cache_folder_falls_back_to_a_temporary_one(tmp_path, monkeypatch):
    blocked = tmp_path / "not-a-folder"
    blocked.write_text("a file where the cache folder would go")
    (tmp_path / "tmp").mkdir()
    monkeypatch.delenv("REID_KERNEL_DIR", raising=False)
    monkeypatch.delenv("REID_CPU_KERNEL", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(blocked))
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path / "tmp"))
    cpu_kernel.reset()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            assert cpu_kernel.load() is not None
        (folder,) = (tmp_path / "tmp").iterdir()
        assert folder.name.startswith("reid-kernels-") and str(folder) in cpu_kernel.status()
        fused, ops = _augment_both_ways()
        assert torch.equal(fused, ops)
    finally:
        cpu_kernel.reset()
