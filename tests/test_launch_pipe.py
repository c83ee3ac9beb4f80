"""paired.sh and study.sh on a closed pipe (``| head``): they end within seconds, with no traceback
and no hang, stop the runs they started and say so on stderr.

The trainer is the stub of tests/stub_trainer.py (fixture ``stub_env``): each run "trains" for
60 s and writes its pid into ``STUB_PIDS``, so a launcher that waited for its runs, or left them
running, fails the test.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

import pytest
from helpers import process_alive, stub_calls

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = {"study": [REPO / "scripts" / "study.sh", "--seeds", "0,1"],
           "paired": [REPO / "scripts" / "paired.sh", "--seed", "0"]}

pytestmark = pytest.mark.skipif(shutil.which("bash") is None or shutil.which("head") is None,
                                reason="the launchers need bash")


def slow_env(stub_env) -> tuple[Path, dict, list[str]]:
    tmp_path, env, a, b = stub_env
    (tmp_path / "pids").mkdir()
    env = dict(env, STUB_SECONDS="60", STUB_PIDS=str(tmp_path / "pids"))
    return tmp_path, env, [str(a), str(b)]


@pytest.mark.parametrize("launcher", ["study", "paired"])
def test_piped_into_head_returns_within_seconds_without_traceback(stub_env, launcher):
    tmp_path, env, configs = slow_env(stub_env)
    script, *options = SCRIPTS[launcher]
    command = f"bash {script} {' '.join(configs)} {' '.join(options)} | head -1"
    start = time.monotonic()
    r = subprocess.run(["bash", "-c", command], env=env, capture_output=True, text=True, timeout=50, cwd=REPO)
    took = time.monotonic() - start
    assert took < 20, f"{command} took {took:.0f} s: it waited for the 60 s runs"
    assert len(r.stdout.splitlines()) == 1
    assert "Traceback" not in r.stderr and "Exception ignored" not in r.stderr, r.stderr
    assert r.stderr.startswith("output closed:"), r.stderr
    assert stub_calls(tmp_path) == []  # no run finished
    for pid_file in (tmp_path / "pids").iterdir():  # each run that started was stopped, as the message says
        assert not process_alive(int(pid_file.read_text())), f"{pid_file.stem} still runs"
        assert f"stopped run(s) {pid_file.stem if launcher == 'study' else ''}" in r.stderr


@pytest.mark.parametrize("launcher", ["study", "paired"])
def test_output_closed_while_a_run_trains_stops_it_and_names_it(stub_env, launcher):
    """The reader closes the pipe once the first run has started and prints nothing: the launcher notices
    without writing, stops that run (it resumes with the same command) and starts no other."""
    tmp_path, env, configs = slow_env(stub_env)
    script, *options = SCRIPTS[launcher]
    proc = subprocess.Popen(["bash", str(script), *configs, *options], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=REPO)
    first = "standard_s0" if launcher == "study" else "standard"
    pid_file = tmp_path / "pids" / f"{first}.pid"
    deadline = time.monotonic() + 20
    while not pid_file.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert pid_file.exists(), "the first run never started"
    proc.stdout.close()
    _, err = proc.communicate(timeout=20)
    assert proc.returncode == 141
    assert "Traceback" not in err, err
    label = first if launcher == "study" else "A"
    assert f"output closed: stopped run(s) {label} at their next step" in err
    assert "rerun the same command to resume them" in err
    assert not process_alive(int(pid_file.read_text()))
    assert [p.name for p in (tmp_path / "pids").iterdir()] == [pid_file.name]  # no other run started
    assert stub_calls(tmp_path) == []
