"""Helpers the launcher tests share (fixtures are in conftest.py)."""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
from pathlib import Path


def stub_calls(tmp_path: Path) -> list[dict]:
    """The stub trainer's training calls (tests/stub_trainer.py), in the order they ended."""
    log = tmp_path / "calls.jsonl"
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


def assert_same_run(a: Path, b: Path) -> None:
    """Two finished runs are the same: every .mat array bit-identical (not the resolved config text, which
    names each run's own folders) and every weight of their last checkpoint equal."""
    import numpy as np
    import torch
    from scipy.io import loadmat

    ma, mb = loadmat(a / "mini_batch_data.mat"), loadmat(b / "mini_batch_data.mat")
    assert sorted(ma) == sorted(mb)
    for key in ma:
        if not key.startswith("__") and key != "config":
            # nan rows are equal (val_feature_ratio without two val images of an identity)
            same = np.array_equal(ma[key], mb[key], equal_nan=ma[key].dtype.kind == "f")
            assert ma[key].dtype == mb[key].dtype and same, (a, b, key)
    sa = torch.load(a / "checkpoints" / "last.pt", weights_only=True)
    sb = torch.load(b / "checkpoints" / "last.pt", weights_only=True)
    assert sa["finished"] and sb["finished"] and (sa["epoch"], sa["step"]) == (sb["epoch"], sb["step"])
    assert sa["model"].keys() == sb["model"].keys()
    for key in sa["model"]:
        assert torch.equal(sa["model"][key], sb["model"][key]), (a, b, key)


def process_alive(pid: int) -> bool:
    """Whether a process with this id exists (signal 0 checks without sending anything)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def launch_in_process(main, args, env: dict) -> subprocess.CompletedProcess:
    """What ``scripts/study.sh``/``paired.sh ARGS`` does, with the launcher's ``main`` (``reid.launch.study.main``
    or ``reid.launch.paired.main``) called in this process: ``env`` as the environment (``PYTHON`` runs the
    trainer), the repository as working directory, ``--trainer`` the checkout's train.py as the scripts pass
    it. Its trainers are still processes of their own. Returns the exit status and the printed text like
    ``subprocess.run(..., capture_output=True, text=True)``: it saves the launcher's interpreter start and
    the comparison's imports (torch, matplotlib) per launch; each script keeps real-process launches too."""
    from unittest import mock

    repo = Path(__file__).resolve().parents[1]
    argv = [*map(str, args), "--trainer", str(repo / "train.py")]
    env = dict(env, PYTHONPATH=os.pathsep.join(filter(None, [str(repo), env.get("PYTHONPATH")])))  # as the scripts
    out, err, cwd = io.StringIO(), io.StringIO(), os.getcwd()
    try:
        os.chdir(repo)
        with mock.patch.dict(os.environ, env, clear=True), contextlib.redirect_stdout(out), \
                contextlib.redirect_stderr(err):
            try:
                code = main(argv)
            except SystemExit as e:  # argparse's usage errors
                code = e.code
    finally:
        os.chdir(cwd)
    return subprocess.CompletedProcess(["main", *argv], code, out.getvalue(), err.getvalue())
