"""Every bad input of issue 10 meets one line ``error: ...`` naming the file/key/value, exit code 2,
no traceback, and leaves what was written before byte for byte as it was.

Each CLI-level case calls ``train.py``'s ``main(argv)`` in-process (its stdout, stderr, warnings
and exit code captured) on a tiny synthetic Market-1501 (ResNet-18 at 32x16, no pretrained
weights); what needs a real process runs ``train.py`` in one: the lock of another or a killed
process, and one check that a user error prints one line and no traceback. A finished two-epoch
run (``finished`` fixture) is made once per module; every test snapshots the output root before
the bad command and compares after. The write failure mid-run is simulated in-process (a patched
``torch.save`` / ``scipy.io.savemat``).
"""

from __future__ import annotations

import contextlib
import errno
import importlib.util
import io
import os
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
TRAIN = REPO / "train.py"
CONFIG = REPO / "configs" / "demo_standard.yaml"
TINY = ["model.name=resnet18", "data.size=[32,16]", "model.pretrained=none", "data.synthetic=null",
        "eval.every_epochs=0"]


# ----------------------------------------------------------------------------- helpers

def sets(root: Path, cache: Path, out_root: Path, name: str, epochs: int = 1, extra: tuple = ()) -> list[str]:
    args = []
    for s in [*TINY, f"data.root={root}", f"data.cache_dir={cache}", f"output.root={out_root}",
              f"output.name={name}", f"train.epochs={epochs}", *extra]:
        args += ["--set", s]
    return args


def train_main():
    """``main`` of train.py, loaded by path (the checkout's entry point, not an installed module)."""
    spec = importlib.util.spec_from_file_location("train_entry", TRAIN)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


def run_train(args: list[str], resume: str | None = None, flags: tuple = (),
              config: Path = CONFIG) -> subprocess.CompletedProcess:
    """``train.py --config CONFIG ARGS --device cpu --no-progress`` in-process: its exit code and output
    (warnings first on stderr, as ``warning: ...`` lines)."""
    argv = ["--config", str(config), *args, "--device", "cpu", "--no-progress", *flags]
    if resume:
        argv += ["--resume", resume]
    out, err = io.StringIO(), io.StringIO()
    with warnings.catch_warnings(record=True) as caught, contextlib.redirect_stdout(out), \
            contextlib.redirect_stderr(err):
        warnings.simplefilter("always")
        code = train_main()(argv)
    said = "".join(f"warning: {w.message}\n" for w in caught)
    return subprocess.CompletedProcess(argv, code, out.getvalue(), said + err.getvalue())


def run_train_process(args: list[str], config: Path = CONFIG, timeout: int = 300) -> subprocess.CompletedProcess:
    """``train.py`` in a real process of its own."""
    cmd = [sys.executable, str(TRAIN), "--config", str(config), *args, "--device", "cpu", "--no-progress"]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=REPO)


def user_error(r: subprocess.CompletedProcess, *needles: str) -> str:
    """The one ``error:`` line of a failed run; asserts exit 2, no traceback, and that it names ``needles``."""
    both = r.stdout + r.stderr
    assert r.returncode == 2, both
    assert "Traceback" not in both, both
    errors = [line for line in r.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, r.stderr
    line = errors[0]
    assert r.stderr.rstrip().endswith(line), r.stderr  # the error is the last thing said
    for needle in needles:
        assert needle in line, f"{needle!r} not in {line!r}"
    return line


def snapshot(folder: Path) -> dict[str, tuple[int, int, int]]:
    """(inode, size, modification time) of every file under ``folder`` (the run lock's pid file aside: it is not
    data). Any write changes it, even one of the same bytes: in place (mtime) or renamed into place (inode).
    Hashing the checkpoints instead cost half a second per snapshot."""
    return {str(p.relative_to(folder)): (st.st_ino, st.st_size, st.st_mtime_ns)
            for p in sorted(folder.rglob("*")) if p.is_file() and p.name != ".lock" for st in [p.stat()]}


def copy_dataset(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def no_run_written(run_dir: Path) -> None:
    """A run that failed before training wrote no checkpoint, .mat, log or results."""
    if run_dir.exists():
        assert not (run_dir / "checkpoints").exists() or not any((run_dir / "checkpoints").iterdir())
        for name in ("mini_batch_data.mat", "log.txt", "results.json", "features.mat"):
            assert not (run_dir / name).exists(), name


# ----------------------------------------------------------------------------- fixtures

@pytest.fixture(scope="module")
def finished(synthetic_root, tmp_path_factory):
    """A finished two-epoch run: (dataset root, cache dir, output root, run dir)."""
    base = tmp_path_factory.mktemp("errors")
    cache, out = base / "cache", base / "outputs"
    r = run_train(sets(synthetic_root, cache, out, "done", epochs=2))
    assert r.returncode == 0, r.stdout + r.stderr
    run = out / "done"
    assert (run / "checkpoints" / "last.pt").is_file() and not (run / "checkpoints" / "previous.pt").exists()
    assert (run / "mini_batch_data.mat").is_file()
    return synthetic_root, cache, out, run


@pytest.fixture
def guard(finished):
    """Snapshot of the output root and the image cache; asserts after the test that neither changed."""
    root, cache, out, run = finished
    before = snapshot(out), snapshot(cache)
    yield finished
    after = snapshot(out), snapshot(cache)
    assert after[0] == before[0], "files under the output root were changed"
    assert after[1] == before[1], "the image cache was changed"


def fresh_run_args(finished, name: str, root: Path | None = None, extra: tuple = ()) -> list[str]:
    data_root, cache, out, _ = finished
    return sets(root or data_root, cache, out, name, extra=extra)


# ----------------------------------------------------------------------------- dataset

def test_missing_dataset_root(guard, tmp_path):
    missing = tmp_path / "no-such-market"
    r = run_train(fresh_run_args(guard, "missing_root", root=missing))
    user_error(r, str(missing), "does not exist", "data.root")
    assert not (guard[2] / "missing_root").exists()  # a failed start leaves no directory holding only .lock


def test_wrong_dataset_root(guard, tmp_path):
    wrong = tmp_path / "photos"
    (wrong / "holiday").mkdir(parents=True)
    (wrong / "holiday" / "0001_c1s1_000001_00.jpg").write_bytes(b"x")
    r = run_train(fresh_run_args(guard, "wrong_root", root=wrong))
    user_error(r, str(wrong), "bounding_box_train", "Market-1501-v15.09.15", "data.root")
    no_run_written(guard[2] / "wrong_root")


@pytest.mark.parametrize("split", ["bounding_box_train", "query"])
def test_empty_split(guard, tmp_path, split):
    root = copy_dataset(guard[0], tmp_path / "market")
    for f in (root / split).iterdir():
        f.unlink()
    r = run_train(fresh_run_args(guard, f"empty_{split}", root=root))
    user_error(r, str(root / split), "no images")
    no_run_written(guard[2] / f"empty_{split}")


def test_unparsable_file_name(guard, tmp_path):
    root = copy_dataset(guard[0], tmp_path / "market")
    some = next((root / "bounding_box_train").glob("*.jpg"))
    bad = root / "bounding_box_train" / "IMG_1234.jpg"
    shutil.copy(some, bad)
    r = run_train(fresh_run_args(guard, "bad_name", root=root))
    user_error(r, str(bad), "PID_cCsS_FRAME_BOX.jpg", "rename")
    no_run_written(guard[2] / "bad_name")


def test_names_of_another_dataset_are_named(guard):
    """data.name=dukemtmc on a Market-1501 folder: the first file whose name is not a Duke name."""
    first = sorted((guard[0] / "bounding_box_train").glob("*.jpg"))[0]
    r = run_train(fresh_run_args(guard, "duke_names", extra=("data.name=dukemtmc",)))
    user_error(r, str(first), "DukeMTMC-reID pattern PID_cC_fFRAME.jpg", "rename")
    no_run_written(guard[2] / "duke_names")


def test_unreadable_cross_domain_dataset_is_named_before_training(guard, tmp_path):
    missing = tmp_path / "no-such-msmt17"
    r = run_train(fresh_run_args(guard, "cross_missing", extra=(f"eval.datasets=[{{name: msmt17, root: {missing}}}]",)))
    user_error(r, "eval.datasets[0] (msmt17)", str(missing), "does not exist", "eval.datasets[0].root")
    no_run_written(guard[2] / "cross_missing")


def test_corrupt_jpeg_is_named_before_training(guard, tmp_path):
    root = copy_dataset(guard[0], tmp_path / "market")
    victim = sorted((root / "bounding_box_train").glob("*.jpg"))[3]
    victim.write_bytes(b"\xff\xd8\xff\xe0 this is not a JPEG " + os.urandom(64))
    r = run_train(fresh_run_args(guard, "corrupt_jpeg", root=root))
    user_error(r, str(victim), "cannot decode")
    assert "epoch 1/" not in r.stdout  # training never started
    no_run_written(guard[2] / "corrupt_jpeg")


# ----------------------------------------------------------------------------- config

def test_unknown_config_key_suggests_the_closest(guard):
    """The one real-process check: a user error is one line on stderr, exit code 2, no traceback."""
    r = run_train_process(fresh_run_args(guard, "typo", extra=("train.epoch=3",)))
    user_error(r, "'train.epoch'", "did you mean 'train.epochs'")
    assert r.stderr.count("\n") == 1
    assert not (guard[2] / "typo").exists()


def test_unknown_key_in_config_file_names_the_file(guard, tmp_path):
    cfg = tmp_path / "mine.yaml"
    cfg.write_text(f"_base_: {CONFIG}\noptim:\n  learning_rate: 0.1\n")
    r = run_train(fresh_run_args(guard, "typo2"), config=cfg)
    user_error(r, str(cfg), "'optim.learning_rate'", "did you mean")
    assert not (guard[2] / "typo2").exists()


def test_debug_shows_the_traceback_and_the_same_error(guard):
    r = run_train(fresh_run_args(guard, "typo", extra=("train.epoch=3",)), flags=("--debug",))
    assert r.returncode == 2 and "Traceback" in r.stderr and "ConfigError" in r.stderr
    assert r.stderr.rstrip().splitlines()[-1].startswith("error: ") and "'train.epoch'" in r.stderr


@pytest.mark.parametrize("raised, line, code", [
    ("user", "error: train.batch_size = 5 is too small\n", 2),
    ("stop", "stopped at epoch 1, step 3: checkpoint written; continue with --resume auto\n", 75),
    ("interrupt", "interrupted\n", 130)])
def test_what_a_command_says_last_is_written_in_one_piece(monkeypatch, raised, line, code):
    """The processes of a torchrun group share the terminal: each line goes out in one write (print's separate
    newline let two ranks' unbuffered lines run into each other, 'processeserror: ...')."""
    from reid.cli import run_main
    from reid.errors import ConfigError
    from reid.errors import Stopped

    writes = []

    class Terminal:
        def write(self, text: str) -> int:
            writes.append(text)
            return len(text)

        def flush(self) -> None:
            pass

    exceptions = {"user": ConfigError("train.batch_size = 5 is too small"), "stop": Stopped(line.strip()),
                  "interrupt": KeyboardInterrupt()}

    def body():
        raise exceptions[raised]

    monkeypatch.setattr(sys, "stderr", Terminal())
    assert run_main(body) == code
    assert writes == [line]


def test_wrong_value_type(guard):
    r = run_train(fresh_run_args(guard, "bad_type", extra=("train.batch_size=many",)))
    line = user_error(r, "train.batch_size", "'many'", "integer")
    assert line.startswith("error: --set train.batch_size=many: ")  # the --set gave it, not the config file
    assert str(CONFIG) not in line
    assert not (guard[2] / "bad_type").exists()


def test_a_misplaced_key_suggests_the_same_key_in_its_section(guard):
    r = run_train(fresh_run_args(guard, "misplaced", extra=("train.lr=0.1",)))
    user_error(r, "--set train.lr=0.1: ", "unknown key 'train.lr'", "did you mean 'optim.lr'?")
    assert not (guard[2] / "misplaced").exists()


def test_triplet_with_the_random_sampler_names_the_key_that_fixes_it(guard):
    r = run_train(fresh_run_args(guard, "triplet_random", extra=("criterion=[cross_entropy, triplet]",)))
    user_error(r, "criterion 'triplet'", "random sampler", "sampler.name: pk")
    assert not (guard[2] / "triplet_random").exists()


def test_imports_are_relative_to_the_config_file_and_the_error_names_the_folders(guard, tmp_path, monkeypatch):
    folder = tmp_path / "experiment"
    folder.mkdir()
    (folder / "my_plugin.py").write_text("from reid.losses import CRITERIA\nIMPORTED_FROM_BESIDE_THE_CONFIG = 1\n")
    cfg = folder / "exp.yaml"
    cfg.write_text(f"_base_: {CONFIG}\nimports: [my_plugin.py]\n")
    monkeypatch.chdir(tmp_path)  # not the config's folder
    from reid.config import load_config

    assert load_config(cfg).imports == [str(folder / "my_plugin.py")]
    cfg.write_text(f"_base_: {CONFIG}\nimports: [missing_plugin.py]\n")
    r = run_train(fresh_run_args(guard, "imports_missing"), config=cfg)
    user_error(r, str(cfg), "missing_plugin.py not found", str(folder), str(tmp_path))
    assert not (guard[2] / "imports_missing").exists()


def test_synthetic_set_on_real_data_gives_the_real_fix(guard, tmp_path):
    real = copy_dataset(guard[0], tmp_path / "my_market")
    (real / "synthetic.json").unlink(missing_ok=True)
    before = snapshot(real)
    r = run_train(fresh_run_args(guard, "on_real", root=real, extra=("data.synthetic={ids: 4}",)))
    line = user_error(r, str(real), "data.synthetic is set", "--set data.synthetic=null")
    assert "delete" not in line
    assert snapshot(real) == before
    assert not (guard[2] / "on_real").exists()


def test_synthetic_set_on_a_real_cross_domain_dataset_names_the_entry_and_a_fix_that_works(guard, tmp_path):
    """--set reaches no entry of the eval.datasets list: the fix named is an edit of the config."""
    real = copy_dataset(guard[0], tmp_path / "other_market")
    (real / "synthetic.json").unlink(missing_ok=True)
    entry = f"eval.datasets=[{{name: market1501, root: {real}, synthetic: {{ids: 4}}}}]"
    r = run_train(fresh_run_args(guard, "cross_on_real", extra=(entry,)))
    line = user_error(r, "eval.datasets[0] (market1501)", str(real), "eval.datasets[0].synthetic is set",
                      "remove synthetic from eval.datasets[0] in the config", "set eval.datasets[0].root to a folder")
    assert "--set" not in line
    no_run_written(guard[2] / "cross_on_real")


def test_evaluate_a_run_without_checkpoint_does_not_suggest_resume(guard, tmp_path, capsys):
    from reid.evaluate import main as evaluate_main

    run = tmp_path / "unfinished"
    run.mkdir()
    shutil.copy(guard[3] / "config.yaml", run / "config.yaml")
    assert evaluate_main([str(run), "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {run / 'checkpoints' / 'last.pt'}: no checkpoint there") and "--checkpoint" in err
    assert "to --resume" not in err and "use --resume" not in err
    assert evaluate_main([str(run), "--checkpoint", str(tmp_path / "nope.pt"), "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: --checkpoint {tmp_path / 'nope.pt'}: no such file") and "--resume" not in err


def test_unknown_criterion_lists_the_valid_names(guard):
    from reid.losses import CRITERIA

    r = run_train(fresh_run_args(guard, "bad_criterion", extra=("criterion=sofft_cross_entropy",)))
    line = user_error(r, "'sofft_cross_entropy'", "did you mean 'soft_cross_entropy'")
    for name in [n for n in CRITERIA.names() if CRITERIA.get(n).__module__.startswith("reid.")]:  # built-ins; tests register more
        assert name in line
    no_run_written(guard[2] / "bad_criterion")


def test_unknown_model_lists_the_valid_names(guard):
    from reid.models import MODELS

    r = run_train(fresh_run_args(guard, "bad_model", extra=("model.name=resnet5",)))
    line = user_error(r, "'resnet5'")
    for name in [n for n in MODELS.names() if MODELS.get(n).__module__.startswith("reid.")]:
        assert name in line
    no_run_written(guard[2] / "bad_model")


# ----------------------------------------------------------------------------- output

def test_unwritable_output_directory(guard, tmp_path):
    data_root, cache, _, _ = guard
    if os.geteuid() == 0:  # root writes anywhere: a path under a regular file fails for root too
        blocker = tmp_path / "a_file"
        blocker.write_text("not a folder\n")
        out_root = blocker / "sub"
    else:
        parent = tmp_path / "readonly"
        parent.mkdir()
        parent.chmod(0o500)
        out_root = parent / "outputs"
    try:
        r = run_train(sets(data_root, cache, out_root, "cannot"))
    finally:
        if os.geteuid() != 0:
            (tmp_path / "readonly").chmod(0o700)
    user_error(r, str(out_root / "cannot"), "output.root")
    if os.geteuid() == 0:
        assert blocker.read_text() == "not a folder\n"


# ----------------------------------------------------------------------------- checkpoints

def copy_run(finished, tmp_path: Path, name: str) -> Path:
    """A copy of the finished run under a new output root (same output.name, so the config matches)."""
    _, _, _, run = finished
    dst = tmp_path / "outputs" / run.name
    shutil.copytree(run, dst)
    return dst


def test_resume_path_on_a_truncated_checkpoint(guard, tmp_path):
    data_root, cache, out, run = guard
    bad = tmp_path / "half.pt"
    data = (run / "checkpoints" / "last.pt").read_bytes()
    bad.write_bytes(data[: len(data) // 2])
    r = run_train(sets(data_root, cache, out, "from_bad", epochs=3), resume=str(bad))
    user_error(r, str(bad), "cannot read this checkpoint")
    no_run_written(out / "from_bad")

    r = run_train(sets(data_root, cache, out, "from_missing", epochs=3), resume=str(tmp_path / "nope.pt"))
    user_error(r, str(tmp_path / "nope.pt"), "no such checkpoint")


def test_resume_auto_falls_back_to_previous_when_last_is_truncated(finished, tmp_path):
    """A crash while the last checkpoint was written: last.pt is cut short, previous.pt holds epoch 1 (a finished
    run keeps no previous.pt: epoch 1's checkpoint is that of the same run trained for 1 epoch)."""
    data_root, cache, _, run = finished
    copy = copy_run(finished, tmp_path, "fallback")
    r = run_train(sets(data_root, cache, tmp_path / "one_epoch", run.name, epochs=1))
    assert r.returncode == 0, r.stdout + r.stderr
    shutil.copyfile(tmp_path / "one_epoch" / run.name / "checkpoints" / "last.pt", copy / "checkpoints" / "previous.pt")
    last = copy / "checkpoints" / "last.pt"
    data = last.read_bytes()
    last.write_bytes(data[: len(data) // 3])
    r = run_train(sets(data_root, cache, copy.parent, copy.name, epochs=2), resume="auto")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "Traceback" not in r.stderr
    warning = [line for line in r.stderr.splitlines() if line.startswith("warning: ")]
    assert warning and str(last) in warning[0] and str(copy / "checkpoints" / "previous.pt") in warning[0], r.stderr
    assert "resumed from" in r.stdout and "previous.pt" in r.stdout and "epoch 2/2" in r.stdout

    # Epoch 2 was retrained from epoch 1's checkpoint: the same curve as the uninterrupted run.
    from scipy.io import loadmat

    from reid.engine.checkpoint import load_checkpoint
    a, b = loadmat(run / "mini_batch_data.mat"), loadmat(copy / "mini_batch_data.mat")
    for key in ("train_loss", "train_acc", "val_loss", "val_acc", "train_epoch"):
        np.testing.assert_allclose(a[key], b[key], rtol=1e-5, atol=1e-6, err_msg=key)
    state = load_checkpoint(last)  # last.pt is whole again
    assert state["finished"] and state["epoch"] == 2
    # The damaged file was set aside (tests/test_checkpoint.py: so that a save does not rotate it into
    # previous.pt); the finished run keeps last.pt alone.
    assert (copy / "checkpoints" / "last.pt.damaged").read_bytes() == data[: len(data) // 3]
    assert not (copy / "checkpoints" / "previous.pt").exists()


def test_checkpoint_of_another_experiment(guard):
    data_root, cache, out, run = guard
    r = run_train(sets(data_root, cache, out, run.name, epochs=3,
                       extra=("criterion=soft_cross_entropy", "optim.lr=0.5")), resume="auto")
    line = user_error(r, str(run / "checkpoints" / "last.pt"), "different experiment", "output.name")
    assert "criterion" in line and "optim.lr" in line
    assert "seed" not in line and "train.epochs" not in line  # only the keys that differ

    r = run_train(sets(data_root, cache, out, "other_exp", epochs=3, extra=("criterion=soft_cross_entropy",)),
                  resume=str(run / "checkpoints" / "last.pt"))
    user_error(r, "different experiment", "criterion")
    no_run_written(out / "other_exp")


def test_fresh_start_into_a_finished_run_refuses(guard):
    data_root, cache, out, run = guard
    r = run_train(sets(data_root, cache, out, run.name, epochs=2))
    user_error(r, str(run), "--resume auto", "output.name")


# ----------------------------------------------------------------------------- concurrency

def test_concurrent_run_is_refused_naming_the_other_process(guard):
    from reid.engine.checkpoint import RunLock

    data_root, cache, out, run = guard
    lock = RunLock(run).acquire()
    try:
        r = run_train(sets(data_root, cache, out, run.name, epochs=3), resume="auto")
    finally:
        lock.release()
    user_error(r, str(run), f"pid {os.getpid()}", "output.name")


def dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid  # reaped: nobody holds it (pid reuse within the test is vanishingly unlikely)


def test_stale_lock_of_a_killed_process_is_taken_over(finished, tmp_path):
    """A lock file left by a process that is gone: the run takes it over and trains. (A trainer SIGKILLed while
    holding the lock, its flock dropped by the kernel, is taken over by each next life in tests/test_resume.py.)"""
    data_root, cache, _, _ = finished
    out = tmp_path / "outputs"
    run = out / "stale"
    run.mkdir(parents=True)
    (run / ".lock").write_text(f"pid {dead_pid()} on {os.uname().nodename}")
    r = run_train(sets(data_root, cache, out, "stale"))
    assert r.returncode == 0, r.stdout + r.stderr
    assert (run / ".lock").read_text().startswith(f"pid {os.getpid()} ")
    assert (run / "mini_batch_data.mat").is_file() and (run / "checkpoints" / "last.pt").is_file()


# ----------------------------------------------------------------------------- write failure mid-run

@pytest.mark.parametrize("marker", ["last.pt", "mini_batch_data.mat"])
def test_write_failure_mid_run_names_the_path_and_keeps_the_previous_files(finished, tmp_path, monkeypatch, marker):
    """Epoch 2's write of ``marker`` fails half-way with ENOSPC: OutputError naming it, epoch 1's files intact."""
    from scipy.io import loadmat

    import reid.io
    from reid.config import load_config
    from reid.engine.checkpoint import load_checkpoint
    from reid.engine.run import train
    from reid.errors import OutputError

    data_root, cache, _, _ = finished
    out = tmp_path / "outputs"
    run = out / "diskfull"
    last, mat = run / "checkpoints" / "last.pt", run / "mini_batch_data.mat"
    cfg = load_config(str(CONFIG), sets(data_root, cache, out, "diskfull", epochs=3)[1::2])

    real_write_with = reid.io.atomic_write_with
    calls, before = [], {}

    def disk_full_on_second(path, write):
        if Path(path).name == marker:
            calls.append(path)
            if len(calls) == 2:
                before.update(last=last.read_bytes(), mat=mat.read_bytes())

                def write(f):
                    f.write(b"\0" * 4096)  # part of the file, then the disk is full
                    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_write_with(path, write)

    monkeypatch.setattr(reid.io, "atomic_write_with", disk_full_on_second)
    with pytest.raises(OutputError) as info:
        train(cfg, device="cpu", resume=None, progress=False)
    monkeypatch.undo()
    message = str(info.value)
    assert len(calls) == 2
    target = last if marker == "last.pt" else mat
    assert str(target) in message and os.strerror(errno.ENOSPC) in message and "resume" in message

    # The file being written keeps its previous content, everything is loadable, no temporary file is left.
    assert target.read_bytes() == before["last" if marker == "last.pt" else "mat"]
    assert mat.read_bytes() == before["mat"]
    assert loadmat(mat)["train_epoch"].max() == 1
    state = load_checkpoint(last)
    assert state["epoch"] == (1 if marker == "last.pt" else 2) and not state["finished"]
    assert load_checkpoint(run / "checkpoints" / "previous.pt")["epoch"] == 1
    assert not list(run.rglob("*.tmp")), sorted(run.rglob("*"))

    # Not stuck: once there is room again, --resume auto finishes the run.
    assert train(cfg, device="cpu", resume="auto", progress=False) == run
    assert load_checkpoint(last)["finished"]
    assert loadmat(mat)["train_epoch"].max() == 3


def test_evaluate_names_the_set_that_gave_a_bad_value(guard, capsys):
    from reid.evaluate import main as evaluate_main

    run = guard[3]
    assert evaluate_main([str(run), "--set", "eval.distance=manhattan", "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --set eval.distance=manhattan: eval.distance = 'manhattan' is not allowed"), err
    assert str(run / "config.yaml") not in err


def test_a_failed_command_is_named_by_its_first_error_line_else_its_last_line():
    """One rule for the launcher's failed runs and the GPU check's failed parts (reid.cli.error_line)."""
    from reid.cli import ErrorLine, error_line

    user_error = "epoch 1/2\nerror: data.root: no such folder\nTraceback (most recent call last):\nValueError: x\n"
    crash = "epoch 1/2\nTraceback (most recent call last):\n  File 'a.py'\nValueError: boom\n\n   \n"
    for text, line in [(user_error, "error: data.root: no such folder"), (crash, "ValueError: boom"),
                       ("  1/9 steps\r  2/9 steps\r", "2/9 steps"),  # a progress bar's carriage returns end lines
                       ("error: first\nerror: second\n", "error: first"), ("", ""), (" \n\r\n", "")]:
        assert error_line(text) == line, text
        reader = ErrorLine()  # fed line by line, as the launcher reads a trainer's output
        for piece in text.splitlines(keepends=True):
            reader.feed(piece)
        assert str(reader) == line, text


def test_launcher_names_a_missing_trainer_script(tmp_path, capsys):
    from reid.launch.study import main as study_main

    assert study_main([str(CONFIG), "--seeds", "0", "--trainer", str(tmp_path / "train.py")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: --trainer {tmp_path / 'train.py'}: no such file; give the path of the project's "
                          "train.py") and len(err.splitlines()) == 1, err


@pytest.mark.parametrize("script", ["paired.sh", "study.sh"])
def test_launcher_help_does_not_ask_users_for_the_trainer_the_script_passes(script):
    r = subprocess.run(["bash", str(REPO / "scripts" / script), "--help"], capture_output=True, text=True, timeout=60,
                       env=dict(os.environ, PYTHON=sys.executable))
    assert r.returncode == 0 and "usage:" in r.stdout, r.stderr
    assert "--trainer" not in r.stdout, r.stdout


def test_launcher_started_without_a_trainer_says_how(capsys):
    from reid.launch.study import main as study_main

    assert study_main([str(CONFIG), "--seeds", "0"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: no trainer given: start the launcher through scripts/paired.sh or scripts/study.sh")


def test_a_batch_of_one_image_is_refused_before_anything_is_written(guard):
    r = run_train(fresh_run_args(guard, "batch_of_one", extra=("train.batch_size=1",)))
    user_error(r, "train.batch_size = 1", "BatchNorm", "set train.batch_size >= 2")
    assert not (guard[2] / "batch_of_one").exists()


def test_tensorboard_without_its_package_is_one_line_before_anything_is_written(guard, monkeypatch):
    from types import SimpleNamespace

    from reid.engine import board

    monkeypatch.setattr(board, "importlib", SimpleNamespace(util=SimpleNamespace(find_spec=lambda name: None)))
    r = run_train(fresh_run_args(guard, "no_board", extra=("train.tensorboard=true",)))
    user_error(r, "train.tensorboard is true, but the tensorboard package is not installed", "[tensorboard] extra")
    assert not (guard[2] / "no_board").exists()
