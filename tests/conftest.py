"""Shared fixtures: a tiny synthetic Market-1501 and the real one when REID_MARKET_ROOT is set."""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path

import pytest

MEMORY_BASETEMP = pytest.StashKey[str]()


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory) -> Path:
    """A small synthetic Market-1501 (8 train + 8 test ids, 6 images each, 6 cameras), made once per session."""
    from reid.data.synthetic import generate_synthetic

    return generate_synthetic(tmp_path_factory.mktemp("synthetic") / "market", ids=8, images_per_id=6,
                              cameras=6, distractors=4, junk=3, seed=0)


@pytest.fixture
def market_root() -> Path:
    """The real (or mini) Market-1501 named by REID_MARKET_ROOT; the test is skipped when it is unset."""
    root = os.environ.get("REID_MARKET_ROOT")
    if not root:
        pytest.skip("REID_MARKET_ROOT is not set")
    return Path(root).resolve()


@pytest.fixture(scope="session")
def full_market_layout(tmp_path_factory) -> Path:
    """Empty files named like the full Market-1501 release, quirks included (made once per session).

    751 train ids / 12,936 images; 3,368 queries of 750 ids; 19,732 gallery images of which 3,819
    junk (-1) and 2,798 distractors (0000); the release's 24 double extensions and stray files.
    Returns the ``Market-1501-v15.09.15`` folder.
    """
    root = tmp_path_factory.mktemp("full") / "Market-1501-v15.09.15"
    folders = {k: root / k for k in ("bounding_box_train", "query", "bounding_box_test")}
    for f in folders.values():
        f.mkdir(parents=True)

    def write(folder, names):
        for n in names:
            (folder / n).write_bytes(b"")

    train_pids = list(range(2, 1504, 2))                          # 751 training identities
    test_pids = list(range(1, 1501, 2))                           # 750 others
    train = [f"{train_pids[i % 751]:04d}_c{1 + i % 6}s1_{i:06d}_01.jpg" for i in range(12936)]
    query = [f"{test_pids[i % 750]:04d}_c{1 + i % 6}s2_{i:06d}_00.jpg" for i in range(3368)]
    real = 19732 - 3819 - 2798
    gallery = ([f"{test_pids[i % 750]:04d}_c{1 + (i + 1) % 6}s3_{i:06d}_01.jpg" for i in range(real)]
               + [f"-1_c{1 + i % 6}s4_{i:06d}_02.jpg" for i in range(3819)]
               + [f"0000_c{1 + i % 6}s5_{i:06d}_03.jpg" for i in range(2798)])
    # the 24 double extensions of the real release, in query and bounding_box_test
    query[:12] = [n + ".jpg" for n in query[:12]]
    gallery[:6] = [n + ".jpg" for n in gallery[:6]]
    gallery[real:real + 6] = [n + ".jpg" for n in gallery[real:real + 6]]  # junk ones too
    write(folders["bounding_box_train"], train + ["Thumbs.db"])
    write(folders["query"], query + ["Thumbs.db", "readme.txt"])
    write(folders["bounding_box_test"], gallery + ["Thumbs.db"])
    return root


REPO = Path(__file__).resolve().parents[1]


MEMORY_FOLDER = Path("/dev/shm")


def pytest_configure(config) -> None:
    config.addinivalue_line("markers", "cuda: needs a CUDA device; skipped without one (scripts/gpu_check.sh runs "
                                       "them on a GPU: pytest -m cuda)")
    # The tests write tens of thousands of small files (the full-size layouts of the other datasets) and about
    # 1 GB of checkpoints (the GPU check's rehearsal), each synced: in a memory file system a file costs 20 us
    # instead of 250 us on this disk. Only where it has room (a container's /dev/shm may hold 64 MB); a
    # --basetemp given on the command line is kept (and kept afterwards, for a look at a failure).
    if config.option.basetemp is None and has_room(MEMORY_FOLDER, 4 * 2**30):
        config.option.basetemp = tempfile.mkdtemp(prefix="reid-tests-", dir=MEMORY_FOLDER)
        config.stash[MEMORY_BASETEMP] = config.option.basetemp


def has_room(folder: Path, size: int) -> bool:
    return folder.is_dir() and os.access(folder, os.W_OK) and shutil.disk_usage(folder).free >= size


def pytest_unconfigure(config) -> None:
    """The memory folder of this session goes with it: memory, unlike /tmp, is not cleaned by pytest's rotation."""
    folder = config.stash.get(MEMORY_BASETEMP, None)
    if folder:
        shutil.rmtree(folder, ignore_errors=True)


def pytest_collection_modifyitems(config, items) -> None:
    """Tests marked ``cuda`` skip on a machine without a CUDA device."""
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if item.get_closest_marker("cuda"):
            item.add_marker(skip)


@pytest.fixture
def tiny_overrides(tmp_path, synthetic_root) -> list[str]:
    """``--set`` overrides for a seconds-long CPU run on ``synthetic_root`` writing under ``tmp_path``.

    40 train / 8 val images in batches of 6: 7 train mini-batches per epoch, the last one partial.
    """
    return [f"data.root={synthetic_root}", "data.synthetic=null", f"data.cache_dir={tmp_path / 'cache'}",
            "data.size=[32,16]", "data.val_per_id=1", "model.name=resnet18", "model.pretrained=none",
            "train.batch_size=6", "train.epochs=2", "eval.every_epochs=1", f"output.root={tmp_path / 'outputs'}"]


@pytest.fixture
def stub_env(tmp_path):
    """A stub trainer (tests/stub_trainer.py) as PYTHON, configs standard.yaml and soft.yaml.

    Returns (tmp_path, env, standard config, soft config); the stub's calls are logged in
    ``tmp_path / "calls.jsonl"`` and its runs go under ``tmp_path / "outputs"`` (the configs'
    ``output.root``, where the launcher resolves their run directories).
    """
    stub = tmp_path / "bin" / "python"
    stub.parent.mkdir()
    stub.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{REPO / "tests" / "stub_trainer.py"}" "$@"\n')
    stub.chmod(0o755)
    cfg = tmp_path / "configs"
    cfg.mkdir()
    for name in ("standard", "soft"):
        # no ImageNet weights: a study checks that a config's weights are there before it starts its runs
        (cfg / f"{name}.yaml").write_text(f"# {name}\nmodel:\n  pretrained: none\noutput:\n  root: {tmp_path / 'outputs'}\n")
    env = dict(os.environ, PYTHON=str(stub), STUB_ROOT=str(tmp_path / "outputs"),
               STUB_LOG=str(tmp_path / "calls.jsonl"))
    env.pop("CUDA_VISIBLE_DEVICES", None)
    return tmp_path, env, cfg / "standard.yaml", cfg / "soft.yaml"


@pytest.fixture(scope="session")
def trained_demo_run(tmp_path_factory, synthetic_root) -> Path:
    """The demo config (configs/demo_standard.yaml) on ``synthetic_root``, one epoch, ``eval.flip`` on, trained
    once per session: a run directory with config.yaml, checkpoints/last.pt, features.mat and results.json."""
    from reid.config import load_config
    from reid.engine.run import train

    tmp = tmp_path_factory.mktemp("demo_run")
    cfg = load_config(REPO / "configs" / "demo_standard.yaml",
                      [f"data.root={synthetic_root}", "data.synthetic=null", "data.val_per_id=1",
                       f"data.cache_dir={tmp / 'cache'}", f"output.root={tmp / 'out'}", "train.epochs=1",
                       "eval.flip=true"])
    return train(cfg, device="cpu", progress=False)


@pytest.fixture(scope="session")
def slurm_cluster():
    """A real single-node SLURM (tests/slurm_cluster.py), started once per session and stopped by pid.

    Skipped, with the reason, only where it cannot start (packages missing, not root); ``.ci/run``
    installs the packages, so CI runs these tests.
    """
    import slurm_cluster as sc

    try:
        cluster = sc.start()
    except sc.Unavailable as e:
        pytest.skip(f"no SLURM: {e}")
    yield cluster
    cluster.stop()


DEMO_CONFIGS = [REPO / "configs" / "demo_standard.yaml", REPO / "configs" / "demo_soft.yaml"]


@pytest.fixture(scope="session")
def demo_study(tmp_path_factory, synthetic_root) -> tuple[Path, list[str]]:
    """The runs of ``study.sh configs/demo_standard.yaml configs/demo_soft.yaml --seeds 0`` on
    ``synthetic_root`` (tiny: 32x16, resnet18, 2 epochs of 7 steps, evaluated every epoch), trained once
    per session with the very commands the local study runs, called in this process with one thread
    (trainer subprocesses run with OMP_NUM_THREADS=1: the thread count changes float sums). The oracle
    of the preemption and cluster tests. Returns (output root, overrides without output.root)."""
    import runpy

    import torch

    from reid.launch.runs import TrainerCommand
    from reid.launch.study import Variant, plan

    tmp = tmp_path_factory.mktemp("demo_study")
    overrides = [f"data.root={synthetic_root}", "data.synthetic=null", f"data.cache_dir={tmp / 'cache'}",
                 "data.size=[32,16]", "data.val_per_id=1", "model.name=resnet18", "model.pretrained=none",
                 "train.batch_size=6", "train.epochs=2", "eval.every_epochs=1"]
    trainer = TrainerCommand(sys.executable, REPO / "train.py", ["--resume", "auto", "--device", "cpu"])
    main = runpy.run_path(str(REPO / "train.py"))["main"]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for job in plan([Variant.of(c) for c in DEMO_CONFIGS], [0], [*overrides, f"output.root={tmp / 'outputs'}"]):
            assert main([*trainer.argv(job)[2:], "--no-progress"]) == 0, job.label
    finally:
        torch.set_num_threads(threads)
    return tmp / "outputs", overrides
