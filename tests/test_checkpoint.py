"""reid.engine.checkpoint: last.pt/previous.pt rotation, fallback, damaged or foreign files, the run lock."""

from __future__ import annotations

import os
import pickle
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from reid.engine.checkpoint import FORMAT, CheckpointStore, RunLock, load_checkpoint
from reid.errors import CheckpointError, OutputError, RunLockedError


def state(epoch: int) -> dict:
    return {"model": {"w": torch.full((3,), float(epoch))}, "epoch": epoch}


def truncate(path: Path, keep: float = 0.5) -> bytes:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    return data


# ----------------------------------------------------------------------------- CheckpointStore

def test_save_keeps_the_previous_checkpoint(tmp_path):
    store = CheckpointStore(tmp_path)
    assert store.load_latest() == (None, None)
    assert store.save(state(1)) == store.last
    assert not store.previous.exists()
    store.save(state(2))
    store.save(state(3))
    assert load_checkpoint(store.last)["epoch"] == 3
    assert load_checkpoint(store.previous)["epoch"] == 2
    assert load_checkpoint(store.last)["format"] == FORMAT
    assert torch.equal(load_checkpoint(store.last)["model"]["w"], torch.full((3,), 3.0))
    assert sorted(p.name for p in store.folder.iterdir()) == ["last.pt", "previous.pt"]  # no temporary left


def test_load_latest_reads_last(tmp_path):
    store = CheckpointStore(tmp_path)
    store.save(state(1))
    store.save(state(2))
    loaded, path = store.load_latest()
    assert path == store.last and loaded["epoch"] == 2


def test_load_latest_falls_back_to_previous_with_a_warning(tmp_path):
    store = CheckpointStore(tmp_path)
    store.save(state(1))
    store.save(state(2))
    damaged = truncate(store.last)
    with pytest.warns(UserWarning, match="previous.pt") as w:
        loaded, path = store.load_latest()
    assert path == store.previous and loaded["epoch"] == 1
    assert str(store.last) in str(w[0].message)
    # The damaged file is set aside (kept for inspection), so the next save cannot rotate it into previous.pt.
    aside = store.folder / "last.pt.damaged"
    assert aside.read_bytes() == damaged[: len(damaged) // 2] and not store.last.exists()
    store.save(state(2))
    assert load_checkpoint(store.previous)["epoch"] == 1 and load_checkpoint(store.last)["epoch"] == 2


def test_load_latest_with_last_missing_uses_previous(tmp_path):
    store = CheckpointStore(tmp_path)
    store.save(state(1))
    store.save(state(2))
    store.last.unlink()
    with pytest.warns(UserWarning, match="missing"):
        loaded, path = store.load_latest()
    assert path == store.previous and loaded["epoch"] == 1


def test_load_latest_without_a_good_checkpoint_is_an_error(tmp_path):
    store = CheckpointStore(tmp_path)
    store.save(state(1))
    truncate(store.last)
    with pytest.raises(CheckpointError, match="last.pt"):  # no previous.pt to fall back to
        store.load_latest()

    store.save(state(2))  # rotates the damaged last.pt into previous.pt; then damage the new last.pt too
    truncate(store.last)
    with pytest.raises(CheckpointError, match="previous.pt"):
        store.load_latest()
    assert store.last.exists()  # nothing moved when there is nothing to resume from


def test_checkpoint_files_get_the_usual_permissions(tmp_path):
    """Atomic writes go through mkstemp (0600); the result must be readable by others like any output."""
    old = os.umask(0o022)
    try:
        store = CheckpointStore(tmp_path)
        store.save(state(1))
        assert store.last.stat().st_mode & 0o777 == 0o644
        store.last.chmod(0o640)
        store.save(state(2))  # an existing file keeps its mode
        assert store.last.stat().st_mode & 0o777 == 0o640
    finally:
        os.umask(old)


def test_save_into_an_unwritable_folder_is_an_output_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(OutputError, match=str(blocker / "checkpoints" / "last.pt")):
        CheckpointStore(blocker).save(state(1))


# ----------------------------------------------------------------------------- load_checkpoint

def test_load_checkpoint_missing(tmp_path):
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        load_checkpoint(tmp_path / "nope.pt")


@pytest.mark.parametrize("content", [b"", b"garbage" * 100, b"PK\x03\x04" + os.urandom(200)])
def test_load_checkpoint_on_garbage(tmp_path, content):
    path = tmp_path / "bad.pt"
    path.write_bytes(content)
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    assert str(path) in str(info.value) and "cannot read this checkpoint" in str(info.value)


@pytest.mark.parametrize("keep", [0.1, 0.5, 0.99])
def test_load_checkpoint_on_a_truncated_file(tmp_path, keep):
    store = CheckpointStore(tmp_path)
    store.save(state(1))
    truncate(store.last, keep)
    with pytest.raises(CheckpointError, match="cannot read this checkpoint"):
        load_checkpoint(store.last)


@pytest.mark.parametrize("obj", [{"weights": torch.zeros(2)}, {"format": FORMAT + 1, "model": {}}, [1, 2, 3],
                                 {"format": FORMAT}, torch.zeros(3)])
def test_load_checkpoint_on_a_foreign_file(tmp_path, obj):
    path = tmp_path / "foreign.pt"
    torch.save(obj, path)
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    assert str(path) in str(info.value) and "not a checkpoint of this tool" in str(info.value)


class Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_load_checkpoint_refuses_arbitrary_pickles(tmp_path):
    path = tmp_path / "evil.pt"
    with open(path, "wb") as f:
        torch.save({"format": FORMAT, "model": Evil()}, f, pickle_module=pickle)
    with pytest.raises(CheckpointError, match=str(path)):
        load_checkpoint(path)


# ----------------------------------------------------------------------------- RunLock

HOLDER = textwrap.dedent("""\
    import sys, time
    from reid.engine.checkpoint import RunLock
    lock = RunLock(sys.argv[1]).acquire()
    print("locked", flush=True)
    time.sleep(600)
""")


def hold_lock_in_subprocess(run_dir: Path) -> subprocess.Popen:
    p = subprocess.Popen([sys.executable, "-c", HOLDER, str(run_dir)], stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "locked"
    return p


def test_run_lock_is_exclusive_across_processes_and_released_by_sigkill(tmp_path):
    """This process, waiting for the lock a second process holds, is refused while the holder lives and
    gets the lock right after the holder is SIGKILLed (no clean-up ran)."""
    run = tmp_path / "run"
    p = hold_lock_in_subprocess(run)
    try:
        with pytest.raises(RunLockedError) as info:
            RunLock(run).acquire()
        message = str(info.value)
        assert str(run) in message and f"pid {p.pid} " in message and "output.name" in message
    finally:
        p.send_signal(signal.SIGKILL)
        p.wait()
    # The kernel dropped the flock with the process: the stale lock file is taken over.
    assert (run / ".lock").read_text().startswith(f"pid {p.pid} ")
    lock = RunLock(run).acquire()
    try:
        assert (run / ".lock").read_text().startswith(f"pid {os.getpid()} ")
    finally:
        lock.release()


def test_run_lock_in_one_process(tmp_path):
    run = tmp_path / "run"
    with RunLock(run):
        with pytest.raises(RunLockedError, match=f"pid {os.getpid()} "):
            RunLock(run).acquire()  # a second holder is refused even in the same process
    with RunLock(run):  # released on exit
        pass


def test_run_lock_on_a_stale_lock_file(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / ".lock").write_text("pid 999999999 on some-host-that-died")
    lock = RunLock(run).acquire()
    lock.release()
    lock.release()  # releasing twice is harmless


def test_run_lock_in_an_unwritable_place(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(OutputError, match=str(blocker / "run")):
        RunLock(blocker / "run").acquire()
