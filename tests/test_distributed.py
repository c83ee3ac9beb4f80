"""torchrun (DDP, gloo on the CPU): sharding of global batches, the refusal of a global batch too small
for the processes, 2 processes training as 1, and a torchrun run stopped by a signal, killed, restarted by torchrun and
compared with an uninterrupted one, whose .mat holds global mini-batches: one torchrun launch for them all."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import assert_same_run
from scipy.io import loadmat

from reid.data import PKSampler, RandomBatchSampler, shard

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("world_size", [1, 2, 3, 4])
def test_union_of_rank_shards_is_the_single_process_batch(world_size):
    labels = np.repeat(np.arange(12), 5)
    for sampler in (RandomBatchSampler(len(labels), 10, seed=3), PKSampler(labels, 4, 4, seed=3)):
        single = sampler.batches(epoch=2)  # what one process trains on, step by step
        for step, batch in enumerate(sampler.batches(epoch=2)):  # each rank builds the same global batches
            parts = [shard(batch, r, world_size) for r in range(world_size)]
            assert np.array_equal(np.concatenate(parts), single[step])
            assert sum(len(p) for p in parts) == len(single[step])


def env() -> dict:
    return dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")


STOP_LINE = "stopped at epoch {}, step {}: checkpoint written; continue with --resume auto"

LAUNCH = """
import json, os, runpy, signal, sys
from pathlib import Path
from torch import nn
from torch.distributed.algorithms.ddp_comm_hooks.default_hooks import allreduce_hook
from reid.engine import distributed, trainer

main = runpy.run_path(sys.argv[1])["main"]
argv, attempt = sys.argv[2:], os.environ["TORCHELASTIC_RESTART_COUNT"]
now = {"run": "-", "step": 0}  # the run training and its step in this process life (0: before its first step)


def note(*words):  # rank 0 notes each gradient bucket DDP reduces, and each step that ends, in BUCKETS
    if os.environ["RANK"] == "0":
        with open(os.environ["BUCKETS"], "a") as f:
            print(attempt, now["run"], now["step"], *words, file=f)


def noted_allreduce(group, bucket):  # DDP's reduction of a bucket (the sum, divided by the processes), noted
    note(bucket.buffer().numel())
    return allreduce_hook(group, bucket)


class BucketNotingDDP(nn.parallel.DistributedDataParallel):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        now.update(run="-", step=0)
        self.register_comm_hook(None, noted_allreduce)


nn.parallel.DistributedDataParallel = BucketNotingDDP

if attempt == "0":  # first the uninterrupted runs, in these processes and process group (no torch start of their own)
    import ddp_equivalence
    ddp_equivalence.train_all(Path(os.environ["EQUIVALENCE_OUT"]), json.loads(os.environ["EQUIVALENCE_SETS"]))
    shutdown, distributed.shutdown_distributed = distributed.shutdown_distributed, lambda: None
    assert main([*argv, "--set", "output.name=ddp_reference"]) == 0
    distributed.shutdown_distributed = shutdown

real_step, calls = trainer.Trainer.train_step, [0]

def step(self, images, labels):
    calls[0] += 1
    now.update(run=self.run_dir.name, step=calls[0])
    if os.environ["RANK"] == "1" and (attempt, calls[0]) == ("0", 2):
        os.kill(os.getpid(), signal.SIGTERM)  # rank 1 alone is told to stop, in epoch 1's second step
    if os.environ["RANK"] == "1" and (attempt, calls[0]) == ("1", 7):
        os.kill(os.getpid(), signal.SIGKILL)  # then dies in epoch 2's third step, after epoch 1's evaluation
    out = real_step(self, images, labels)
    note("done")
    return out

trainer.Trainer.train_step = step
sys.exit(main(argv))
"""


# ddp_restarted's and ddp_reference's settings besides the module's overrides
RESTARTED = ["checkpoint.every_steps=2", "train.batch_size=5", "data.val_per_id=2"]


@pytest.fixture(scope="module")
def launch(synthetic_root, tmp_path_factory) -> tuple[list[str], Path, subprocess.CompletedProcess]:
    """One torchrun launch of 2 processes with --max-restarts=2, shared by this module's torchrun tests (each
    start of torch costs seconds): its first processes train the runs of tests/ddp_equivalence.py under
    OUT/two, then ddp_reference uninterrupted, then start ddp_restarted (a checkpoint every 2 steps, batches of 5
    over 32 train / 16 val images), which is stopped by a SIGTERM to rank 1 in step 2, restarted, killed by a
    SIGKILL of rank 1 in epoch 2's third step, and restarted to its end. Rank 0 notes every gradient bucket DDP
    reduces, with its run and step, in OUT/../buckets.txt. Returns (the overrides of every run but its name,
    OUT, the launch)."""
    tmp = tmp_path_factory.mktemp("torchrun")
    # conftest's tiny_overrides, for the module
    overrides = [f"data.root={synthetic_root}", "data.synthetic=null", f"data.cache_dir={tmp / 'cache'}",
                 "data.size=[32,16]", "data.val_per_id=1", "model.name=resnet18", "model.pretrained=none",
                 "train.batch_size=6", "train.epochs=2", "eval.every_epochs=1", f"output.root={tmp / 'outputs'}"]
    driver = tmp / "launch.py"
    driver.write_text(LAUNCH)
    restarted = [*overrides, *RESTARTED, "output.name=ddp_restarted"]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "--max-restarts=2",
           str(driver), str(REPO / "train.py"), "--config", str(REPO / "configs" / "demo_standard.yaml"),
           "--device", "cpu", "--no-progress", "--resume", "auto", *(a for o in restarted for a in ("--set", o))]
    done = subprocess.run(cmd, env=dict(env(), PYTHONPATH=f"{REPO}{os.pathsep}{REPO / 'tests'}",
                                        EQUIVALENCE_OUT=str(tmp / "outputs" / "two"), BUCKETS=str(tmp / "buckets.txt"),
                                        EQUIVALENCE_SETS=json.dumps(overrides)),
                          capture_output=True, text=True, timeout=300)
    return overrides, tmp / "outputs", done


def test_torchrun_stops_every_process_at_one_step_restarts_from_the_last_checkpoint_and_logs_global_batches(
        launch):
    """2 gloo processes, 2 epochs of global batches of 5, a checkpoint every 2 steps, under torchrun
    --max-restarts: a SIGTERM to one process stops all of them after the same step (checkpoint written, exit 75);
    torchrun restarts the group, which resumes there; a worker then SIGKILLed mid-epoch 2 makes torchrun restart
    the group again from the last checkpoint. The run ends with the .mat and weights of an uninterrupted 2-process
    run (trained first, in the same processes) and its .mat holds global mini-batches: the last train batch (2 =
    1 image each) and the last val batch (1 image) are merged into the batch before, so that no process gets fewer
    than two train images or no val image. (2 processes keep the launch short; what 3 or more need besides, the
    same gradient bucket layout at every start, is the next test's.)"""
    _, root, restarted = launch
    assert restarted.returncode == 0, restarted.stdout[-3000:] + restarted.stderr[-5000:]
    err = restarted.stderr
    assert err.count(STOP_LINE.format(1, 2)) == 1, err  # printed once, by rank 0, after the step in progress
    assert "(exitcode: 75)" in err and "(exitcode: -9)" in err, err
    run = root / "ddp_restarted"
    log = (run / "log.txt").read_text()
    last = run / "checkpoints" / "last.pt"
    # the kill in epoch 2's third step loses that step: the group resumes from the checkpoint of step 2
    assert f"resumed from {last} at epoch 1, step 2" in log and f"resumed from {last} at epoch 2, step 2" in log, log
    assert_same_run(root / "ddp_reference", run)
    m = loadmat(run / "mini_batch_data.mat")
    # global mini-batches: 32 train images in batches of 5 -> 5 + 5 + 5 + 5 + 5 + (5 + 2) per epoch;
    # 16 val images -> 5 + 5 + (5 + 1) per epoch
    assert m["train_batch_size"][0].tolist() == [5, 5, 5, 5, 5, 7] * 2
    assert m["val_batch_size"][0].tolist() == [5, 5, 6] * 2
    assert m["train_epoch"][0].tolist() == [1] * 6 + [2] * 6
    acc = m["train_acc"][0] * m["train_batch_size"][0]
    assert np.allclose(acc, np.round(acc))  # a global count of correct images, not one rank's fraction
    assert np.isfinite(m["train_loss"]).all() and np.isfinite(m["val_loss"]).all()
    assert m["eval_epoch"][0].tolist() == [1, 2]
    assert sorted(p.name for p in run.iterdir() if not p.name.startswith(".")) == [
        "checkpoints", "config.yaml", "features.mat", "log.txt", "mini_batch_data.mat", "results.json"]


def test_every_step_of_every_start_reduces_the_gradients_in_one_bucket_layout(launch):
    """DDP reduces its first backward's gradients as one bucket and regroups them after it; a resumed start whose
    first step kept the first layout would add the processes' gradients in another order than the uninterrupted
    run at that step: with 3 or more processes the weights then differ in their last bits (2 processes add two
    numbers either way, so the exact restart above cannot see it). Every start settles the layout before its
    first step: each step of each of the three starts of ddp_restarted reduces the same buckets."""
    _, root, done = launch
    layouts: dict[tuple[str, str], list[int]] = {}
    finished = set()
    for line in (root.parent / "buckets.txt").read_text().splitlines():
        attempt, run, step, what = line.split()  # "-" and step 0: before the run's first step
        if run != "ddp_restarted" or step == "0":
            continue
        if what == "done":
            finished.add((attempt, step))
        else:
            layouts.setdefault((attempt, step), []).append(int(what))
    steps = {key: tuple(buckets) for key, buckets in layouts.items() if key in finished}  # not the one killed
    assert {attempt for attempt, _ in steps} == {"0", "1", "2"}, done.stderr[-3000:]
    assert len(set(steps.values())) == 1, steps
    assert len(next(iter(steps.values()))) > 1  # the regrouped layout: several buckets


def test_a_global_batch_smaller_than_two_per_process_is_refused(tiny_overrides, monkeypatch):
    """Seen from rank 0 of 3 processes (the process group mocked away: the refusal comes before any
    collective): the error names the global batch and what to do, and no run directory is made."""
    from reid.config import load_config
    from reid.engine import distributed, run
    from reid.errors import ConfigError

    monkeypatch.setattr(distributed, "init_distributed", lambda device_type: distributed.DistInfo(0, 3, 0))
    cfg = load_config(REPO / "configs" / "demo_standard.yaml", [*tiny_overrides, "train.batch_size=5",
                                                                "output.name=small"])
    with pytest.raises(ConfigError) as refused:
        run.train(cfg, device="cpu", progress=False)
    assert str(refused.value) == ("train.batch_size = 5 is the global batch, split over 3 processes, and each needs "
                                  "at least 2 images; set train.batch_size >= 6 or start fewer processes")
    assert not (Path(next(o.split("=", 1)[1] for o in tiny_overrides if o.startswith("output.root="))) / "small").exists()


def test_the_process_group_outlasts_rank_zero_evaluating_alone(monkeypatch):
    """The others wait at a barrier while rank 0 evaluates: the collective timeout must exceed 10 minutes."""
    from datetime import timedelta

    from reid.engine import distributed

    seen = {}
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setattr(distributed.dist, "is_initialized", lambda: False)
    monkeypatch.setattr(distributed.dist, "init_process_group", lambda **kw: seen.update(kw))
    info = distributed.init_distributed("cpu")
    assert (info.rank, info.world_size) == (1, 2) and seen["backend"] == "gloo"
    assert seen["timeout"] >= timedelta(hours=1)


def test_two_processes_train_as_one_with_every_criterion(launch, tmp_path):
    """2 processes (gloo) against 1, for each criterion of tests/ddp_equivalence.py on a model without
    BatchNorm: the same per-step train loss, accuracy and plain cross entropy in the .mat, the same val loss and
    cross entropy, the same whole-split ECE, confidence and feature ratio of the val phase, and the same final
    weights (model and criterion), to 1e-5. The module's torchrun launch trains every run in the same
    processes."""
    import ddp_equivalence as runs

    from reid.engine.run import train

    overrides, root, done = launch
    two = root / "two"
    for name in runs.RUNS:
        assert (two / name / "checkpoints" / "last.pt").is_file(), done.stdout[-3000:] + done.stderr[-5000:]
        one = train(runs.config(name, tmp_path / "one", overrides), device="cpu", progress=False)
        a, b = loadmat(one / "mini_batch_data.mat"), loadmat(two / name / "mini_batch_data.mat")
        sizes = a["train_batch_size"][0].tolist()
        assert b["train_batch_size"][0].tolist() == sizes
        assert sizes in ([9, 9, 9, 5], [9] * 4), sizes  # shares of 5/4 and 3/2, or 5/4 (P x K)
        assert b["val_batch_size"][0].tolist() == a["val_batch_size"][0].tolist() == [9, 7] * len(a["val_summary_epoch"][0])
        for key in ("train_loss", "train_acc", "train_nll", "val_loss", "val_acc", "val_nll", "val_ece",
                    "val_confidence", "val_feature_ratio"):
            assert a[key].size and np.isfinite(a[key]).all(), f"{name}: {key}"
            np.testing.assert_allclose(b[key][0], a[key][0], rtol=0, atol=1e-5, err_msg=f"{name}: {key}")
        state_a = torch.load(one / "checkpoints" / "last.pt", weights_only=True)
        state_b = torch.load(two / name / "checkpoints" / "last.pt", weights_only=True)
        for part in ("model", "criterion"):
            assert state_a[part].keys() == state_b[part].keys()
            for key, value in state_a[part].items():
                assert (value.double() - state_b[part][key].double()).abs().max() <= 1e-5, f"{name}: {part}.{key}"
        torch.manual_seed(0)  # the model as the runs initialise it: they trained away from it
        start = runs.BatchFreeNet(num_classes=8).state_dict()
        assert (state_a["model"]["neck.weight"] - start["neck.weight"]).abs().max() > 1e-3, name


@pytest.mark.parametrize("setting", ["auto", True, False])
@pytest.mark.parametrize("device_type", ["cpu", "cuda"])
@pytest.mark.parametrize("world_size", [1, 2, 4])
def test_sync_bn_auto_synchronises_batchnorm_exactly_when_several_cuda_processes_train(setting, device_type,
                                                                                     world_size):
    """The device and the number of processes are only given, not used: this runs on the CPU."""
    from torch import nn

    from reid.engine import distributed
    from reid.models import build_model

    model = build_model("resnet18", num_classes=4, pretrained="none")
    device = torch.device(device_type)
    net = distributed.with_batchnorm_sync(model, setting, device, world_size)
    synced = any(isinstance(m, nn.SyncBatchNorm) for m in net.modules())
    expected = world_size > 1 and (device_type == "cuda" if setting == "auto" else setting)
    assert synced == expected
    if synced:  # every BatchNorm, and nothing left per process
        assert not any(type(m) is nn.BatchNorm2d or type(m) is nn.BatchNorm1d for m in net.modules())
    note = distributed.per_process_batchnorm_note(model, setting, device, world_size)
    assert (note is not None) == (world_size > 1 and not expected)
    if note and device_type == "cpu":
        assert "no CPU implementation" in note


def test_the_log_says_once_that_batchnorm_stays_per_process_on_the_cpu(monkeypatch, tiny_overrides, capsys):
    """A 2-process CPU run of ResNet-18 seen from rank 0, the process group mocked away: one note."""
    from reid.config import load_config
    from reid.engine import distributed, run, trainer

    logged = []
    monkeypatch.setattr(distributed, "init_distributed", lambda device_type: distributed.DistInfo(0, 2, 0))
    monkeypatch.setattr(trainer.Trainer, "_wrap_for_training", lambda self, model: model)  # needs a process group
    monkeypatch.setattr(trainer.Trainer, "fit", lambda self, start: logged.extend(self.log_lines))
    cfg = load_config(REPO / "configs" / "demo_standard.yaml", [*tiny_overrides, "output.name=note"])
    run.train(cfg, device="cpu", progress=False)
    notes = [line for line in logged if "BatchNorm" in line]
    assert notes == ["note: BatchNorm normalises each of the 2 processes' shares by itself (PyTorch's SyncBatchNorm "
                     "has no CPU implementation), so the numbers differ from a 1-process run's"]


def test_share_dropout_applies_the_masks_one_process_draws_for_the_whole_batch():
    """Each share (4 and 3 rows of 7), with the generator seeded alike, gets its rows of nn.Dropout's output."""
    from torch import nn

    from reid.engine import distributed

    from reid.data import Share

    x = torch.randn(7, 10)
    torch.manual_seed(5)
    whole = nn.Dropout(0.4).train()(x)
    model = nn.Sequential(nn.Identity(), nn.Dropout(0.4)).train()
    dropouts, outputs = distributed.with_share_dropout(model), []
    for rank in (0, 1):
        share = Share(7, rank, world_size=2)  # rows 0..3 and 4..6
        torch.manual_seed(5)
        with distributed.dropout_share(dropouts, share):
            outputs.append(model(share.rows(x)))
    assert dropouts == [model[1]] and isinstance(model[1], distributed.ShareDropout)
    assert torch.equal(torch.cat(outputs), whole) and (whole == 0).any()
    assert torch.equal(model.eval()(x), x)
    with pytest.raises(RuntimeError, match="dropout_share"):  # training without the step's share
        model.train()(x)


@pytest.mark.parametrize("ending", ["fails", "stops"])
def test_the_process_group_is_shut_down_however_the_run_ends(tiny_overrides, monkeypatch, ending):
    """In a 1-process torchrun environment (a real gloo group): a run that fails before training (its dataset
    root is missing) or is stopped by SIGTERM in its first step leaves no process group behind."""
    import signal
    import socket

    import torch.distributed as dist

    from reid.config import load_config
    from reid.engine import run, trainer
    from reid.errors import ReidError
    from reid.errors import Stopped

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    for key, value in dict(RANK="0", WORLD_SIZE="1", LOCAL_RANK="0", MASTER_ADDR="127.0.0.1",
                           MASTER_PORT=str(port)).items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("TORCHELASTIC_RESTART_COUNT", raising=False)
    overrides = [*tiny_overrides, f"output.name=group_{ending}"]
    if ending == "fails":
        overrides.append(f"data.root={REPO / 'no' / 'such' / 'root'}")
    real_step = trainer.Trainer.train_step

    def step(self, images, labels):
        assert dist.is_initialized()  # the run trains inside the group
        os.kill(os.getpid(), signal.SIGTERM)
        return real_step(self, images, labels)

    monkeypatch.setattr(trainer.Trainer, "train_step", step)
    with pytest.raises(ReidError if ending == "fails" else Stopped):
        run.train(load_config(REPO / "configs" / "demo_standard.yaml", overrides), device="cpu", progress=False)
    assert not dist.is_initialized()


SLOW_TRAIN = """
import os, runpy, signal, sys, time
if os.environ.get("SLURM_RESTART_COUNT", "0") == "0":  # the first life: epoch 1's step 3 waits for the warning
    from reid.engine import trainer

    real_step, calls = trainer.Trainer.train_step, [0]

    def step(self, images, labels):
        calls[0] += 1
        if calls[0] == 3:
            if os.environ["RANK"] == "0":
                open(os.environ["MARK"], "w").close()
            deadline = time.time() + 120
            while not signal.getsignal(signal.SIGTERM).requested and time.time() < deadline:
                time.sleep(0.05)
        return real_step(self, images, labels)

    trainer.Trainer.train_step = step
sys.argv[0] = os.environ["REAL_TRAIN"]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def test_a_torchrun_task_on_slurm_warned_mid_epoch_requeues_and_ends_as_the_uninterrupted_run(
        launch, slurm_cluster, tmp_path, monkeypatch, capsys):
    """study.sh --slurm --nproc-per-node 2: the task runs srun + torchrun with 2 gloo processes. The time-limit
    warning (SIGUSR1 to the batch shell) in epoch 1 reaches torchrun's agent as SIGTERM, which stops both
    processes at one step boundary with a checkpoint; the task requeues itself, resumes, and ends with the .mat
    and weights of the uninterrupted 2-process run of this module's launch (ddp_reference)."""
    import re
    import time

    from reid.launch.study import main as study_main

    overrides, root, _ = launch
    out, mark, slow = tmp_path / "outputs", tmp_path / "mark", tmp_path / "train.py"
    slow.write_text(SLOW_TRAIN)
    sets = [a for o in [*overrides, *RESTARTED, f"output.root={out}"] for a in ("--set", o)]
    for key, value in dict(env(), SLURM_CONF=slurm_cluster.env["SLURM_CONF"], MARK=str(mark), PYTHON=sys.executable,
                           REAL_TRAIN=str(REPO / "train.py"), PYTHONPATH=str(REPO)).items():
        monkeypatch.setenv(key, value)
    capsys.readouterr()
    assert study_main([str(REPO / "configs" / "demo_standard.yaml"), "--seeds", "0", "--device", "cpu", "--slurm",
                       "--nproc-per-node", "2", "--sbatch=--cpus-per-task=2", *sets, "--trainer", str(slow)]) == 0
    stdout = capsys.readouterr().out
    array, compare = re.search(r"submitted job array (\d+) \(1 tasks\) and comparison job (\d+)", stdout).groups()
    task, log = f"{array}_0", out / "demo_standard_s0.log"
    deadline = time.time() + 240
    while not mark.exists():
        assert time.time() < deadline and slurm_cluster.job_state(task) in ("PENDING", "RUNNING"), \
            log.read_text()[-3000:] if log.exists() else slurm_cluster.job_state(task)
        time.sleep(0.1)
    slurm_cluster.run("scancel", "--batch", "--signal=USR1", task)
    while "requeueing" not in log.read_text() or slurm_cluster.job_state(task) != "PENDING":
        assert time.time() < deadline, (slurm_cluster.job_state(task), log.read_text()[-3000:])
        time.sleep(0.2)
    assert slurm_cluster.job_state(compare) == "PENDING"  # the comparison waits for the requeued task
    slurm_cluster.run("scontrol", "update", f"JobId={task}", "StartTime=now+1")
    while slurm_cluster.job_state(task) in ("PENDING", "RUNNING", "COMPLETING"):
        assert time.time() < deadline, (slurm_cluster.job_state(task), log.read_text()[-3000:])
        time.sleep(0.2)
    slurm_cluster.run("scancel", compare)  # the comparison of a study is tests/test_slurm.py's
    text = log.read_text()
    stop = re.search(r"stopped at epoch 1, step (\d+): checkpoint written", text)
    assert stop and stop.group(1) == "3" and text.count("stopped at epoch") == 1, text[-3000:]  # by rank 0 alone
    last = out / "demo_standard_s0" / "checkpoints" / "last.pt"
    assert f"resumed from {last} at epoch 1, step {stop.group(1)}" in text and "restart 1" in text, text[-3000:]
    assert slurm_cluster.job_state(task) == "COMPLETED", text[-3000:]
    assert_same_run(root / "ddp_reference", out / "demo_standard_s0")
