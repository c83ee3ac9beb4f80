"""Stub interpreter for the launcher tests (paired.sh, study.sh): fakes train.py, runs anything else for real.

Called as ``PYTHON SCRIPT ARGS``: when SCRIPT is not a ``train.py`` the real interpreter runs
it (the launcher itself, scripts/compare.py). As ``train.py`` it trains into
``output.root``/``output.name`` from the overrides, else ``$STUB_ROOT``/config stem (the stub
configs' ``output.root``, where the launcher resolves their run directories), appends a JSON
line per training call to ``$STUB_LOG`` (config, overrides, CUDA_VISIBLE_DEVICES, start and
end times, how many stub runs shared its GPU at its start), and writes a contract-3
``mini_batch_data.mat`` whose numbers depend on the seed. Environment knobs:

* ``STUB_FAIL``: comma-separated config stems or run names that fail (exit 3, last line
  ``error: stub failure of NAME``, or ``error: $STUB_FAIL_LINE`` when that is set);
* ``STUB_RENDEZVOUS`` (a folder) and ``STUB_WAVE`` (N): the first N runs to start each wait
  until N have started (20 s at most, else exit 4): they must run at the same time;
* ``STUB_SECONDS``: how long each run "trains" (default 0);
* ``STUB_PIDS`` (a folder): each training call writes ``<name>.pid`` there when it starts;
* ``STUB_MAP``: JSON ``{run name without _s<seed>: [effect, jitter]}``: the run also records one
  evaluation (epoch 2) whose mAP (and rank-1) is ``0.5 + 0.01 * sin(seed) + effect + jitter * u``, ``u``
  a fixed draw in [-1, 1] per run name: runs of one seed share the ``sin`` term, as a seed's data order;
* ``STUB_CHECKPOINT`` (a file): copied to the run's ``checkpoints/last.pt`` (a finished run's checkpoint
  made by the test), so that launchers see the run finished.
"""

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

if len(sys.argv) < 2 or not sys.argv[1].endswith("train.py"):
    os.execv(sys.executable, [sys.executable] + sys.argv[1:])

p = argparse.ArgumentParser()
p.add_argument("--config", required=True)
p.add_argument("--set", action="append", default=[])
p.add_argument("--resume")
p.add_argument("--device")
a = p.parse_args(sys.argv[2:])
sets = dict(s.split("=", 1) for s in a.set)
stem = Path(a.config).stem
name = sets.get("output.name", stem)
run_dir = Path(sets.get("output.root", os.environ["STUB_ROOT"])) / name

if os.environ.get("STUB_PIDS"):
    (Path(os.environ["STUB_PIDS"]) / f"{name}.pid").write_text(str(os.getpid()))
cuda = os.environ.get("CUDA_VISIBLE_DEVICES")
started = time.time()
rendezvous = os.environ.get("STUB_RENDEZVOUS")
sharing = None
if rendezvous:
    folder = Path(rendezvous)
    first_wave = len(list(folder.glob("started_*"))) < int(os.environ.get("STUB_WAVE", "2"))
    (folder / f"started_{name}").touch()
    (folder / f"running_{cuda}_{name}").touch()
    sharing = len(list(folder.glob(f"running_{cuda}_*")))
    deadline = time.time() + 20
    while first_wave and len(list(folder.glob("started_*"))) < int(os.environ.get("STUB_WAVE", "2")):
        if time.time() > deadline:
            print("stub: the other runs never started", file=sys.stderr)
            sys.exit(4)
        time.sleep(0.05)
time.sleep(float(os.environ.get("STUB_SECONDS", "0")))
if rendezvous:
    (Path(rendezvous) / f"running_{cuda}_{name}").unlink()
with open(os.environ["STUB_LOG"], "a") as f:
    f.write(json.dumps({"config": a.config, "name": name, "set": a.set, "resume": a.resume, "device": a.device,
                        "cuda": cuda, "start": started, "end": time.time(), "sharing": sharing}) + "\n")
if stem in os.environ.get("STUB_FAIL", "").split(",") or name in os.environ.get("STUB_FAIL", "").split(","):
    print(f"stub: training {name}")
    print(f"error: {os.environ.get('STUB_FAIL_LINE') or f'stub failure of {name}'}", file=sys.stderr)
    sys.exit(3)

import numpy as np  # noqa: E402
from scipy.io import savemat  # noqa: E402

seed = int(sets.get("seed", 0))
n, v = 20, 6
rows = dict(train_loss=np.linspace(5, 1, n) + seed, train_acc=np.linspace(0, 0.9, n), train_epoch=np.repeat([1., 2.], n // 2),
            train_lr=np.full(n, 0.1), train_batch_size=np.full(n, 8.), val_loss=np.linspace(4, 2, v),
            val_acc=np.linspace(0.2, 0.6, v) - 0.01 * seed, val_epoch=np.repeat([1., 2.], v // 2),
            val_batch_size=np.full(v, 5.))
maps = json.loads(os.environ.get("STUB_MAP", "{}"))
group = name.rsplit("_s", 1)[0]
if group in maps:
    effect, jitter = maps[group]
    u = np.random.default_rng(list(name.encode())).uniform(-1, 1)
    value = 0.5 + 0.01 * np.sin(seed) + effect + jitter * u
    rows.update(eval_epoch=np.array([2.0]), eval_rank1=np.array([value]), eval_rank5=np.array([value]),
                eval_rank10=np.array([value]), eval_mAP=np.array([value]))
run_dir.mkdir(parents=True, exist_ok=True)
if os.environ.get("STUB_CHECKPOINT"):
    (run_dir / "checkpoints").mkdir(exist_ok=True)
    shutil.copyfile(os.environ["STUB_CHECKPOINT"], run_dir / "checkpoints" / "last.pt")
savemat(run_dir / "mini_batch_data.mat", {**{k: r.reshape(1, -1) for k, r in rows.items()}, "criterion": stem,
                                          "config": f"seed: {seed}\n"})
print("trained", stem)
