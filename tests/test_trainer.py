"""The trainer end to end on tiny synthetic data: the .mat contract, resume rules, the
paired-run invariant, the NaN stop and the schedule."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.io import loadmat
from torch import nn

from reid.config import Config, ScheduleConfig, load_config, run_dir
from reid.engine import trainer as trainer_module
from reid.engine.optim import EpochSchedule
from reid.engine.run import train
from reid.errors import CheckpointError, ConfigError, TrainingDivergedError
from reid.losses import CRITERIA, register_criterion

REPO = Path(__file__).resolve().parents[1]
ROW_KEYS = ["train_loss", "train_acc", "train_epoch", "train_lr", "train_batch_size",
            "val_loss", "val_acc", "val_epoch", "val_batch_size"]
EVAL_KEYS = ["eval_epoch", "eval_rank1", "eval_rank5", "eval_rank10", "eval_mAP"]


def config(overrides: list[str], *more: str, name: str = "demo_standard.yaml") -> Config:
    return load_config(REPO / "configs" / name, [*overrides, *more])


def module_overrides(tmp: Path, synthetic_root: Path) -> list[str]:
    """conftest's ``tiny_overrides`` writing under ``tmp``, for the runs this module's tests share."""
    return [f"data.root={synthetic_root}", "data.synthetic=null", f"data.cache_dir={tmp / 'cache'}",
            "data.size=[32,16]", "data.val_per_id=1", "model.name=resnet18", "model.pretrained=none",
            "train.batch_size=6", "train.epochs=2", "eval.every_epochs=1", f"output.root={tmp / 'outputs'}"]


class SpiedRun:
    """A finished run of demo_standard.yaml (2 epochs, evaluated after each) with what its steps saw:
    ``steps`` (loss, correct, images) as returned by each train step, ``batches`` (epoch, step, rows,
    labels, sum of the augmented pixels) of each train batch."""

    def __init__(self, overrides: list[str], name: str = "demo_standard.yaml") -> None:
        self.overrides, self.steps, self.batches = overrides, [], []
        real_step, real_batch = trainer_module.Trainer.train_step, trainer_module.Trainer.train_batch

        def step(trainer, images, labels):
            sums = real_step(trainer, images, labels)
            self.steps.append((float(sums["loss"]) / len(labels), int(sums["acc"]), len(labels)))
            return sums

        def batch(trainer, global_idx, epoch, step):
            images, labels = real_batch(trainer, global_idx, epoch, step)
            self.batches.append((epoch, step, global_idx.tolist(), labels.tolist(), float(images.double().sum())))
            return images, labels

        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(trainer_module.Trainer, "train_step", step)
            mp.setattr(trainer_module.Trainer, "train_batch", batch)
            self.cfg = config(overrides, name=name)
            self.out = train(self.cfg, device="cpu", progress=False)


@pytest.fixture(scope="module")
def standard_run(tmp_path_factory, synthetic_root) -> SpiedRun:
    """The run several tests read (none of them changes it): trained once per module."""
    return SpiedRun(module_overrides(tmp_path_factory.mktemp("standard_run"), synthetic_root))


def test_mat_file_has_one_entry_per_mini_batch(standard_run):
    out = standard_run.out
    m = loadmat(out / "mini_batch_data.mat")
    for key in ROW_KEYS + EVAL_KEYS:
        assert m[key].dtype == np.float64 and m[key].shape[0] == 1, key
    # 40 train images in batches of 6: 6 full + 1 of 4 per epoch; 8 val images: 6 + 2.
    assert m["train_batch_size"][0].tolist() == [6, 6, 6, 6, 6, 6, 4] * 2
    assert m["train_epoch"][0].tolist() == [1] * 7 + [2] * 7
    assert m["val_batch_size"][0].tolist() == [6, 2] * 2
    assert m["val_epoch"][0].tolist() == [1, 1, 2, 2]
    assert all(m[k].shape[1] == 14 for k in ROW_KEYS if k.startswith("train"))
    assert all(m[k].shape[1] == 4 for k in ROW_KEYS if k.startswith("val"))
    for acc in ("train_acc", "val_acc"):
        sizes = m[acc.replace("acc", "batch_size")][0]
        # accuracy is a fraction whose numerator is a whole number of images
        assert np.allclose(m[acc][0] * sizes, np.round(m[acc][0] * sizes)) and m[acc].min() >= 0 and m[acc].max() <= 1
    assert np.all(np.isfinite(m["train_loss"])) and np.all(m["train_lr"] == 0.01)
    assert m["eval_epoch"][0].tolist() == [1, 2]
    assert m["criterion"][0] == "cross_entropy"
    assert "criterion:" in str(m["config"][0]) and (out / "config.yaml").read_text() == str(m["config"][0])
    results = json.loads((out / "results.json").read_text())
    assert results["rank1"] == pytest.approx(m["eval_rank1"][0, -1]) and results["mAP"] == pytest.approx(m["eval_mAP"][0, -1])
    f = loadmat(out / "features.mat")
    assert f["query_f"].dtype == np.float32 and np.allclose(np.linalg.norm(f["query_f"], axis=1), 1, atol=1e-5)
    assert len((out / "log.txt").read_text().splitlines()) == 4  # start line, machine line, one per epoch


def test_train_loss_is_the_criterion_on_the_batch(standard_run):
    """The recorded loss/accuracy of a step are those of the logits the optimiser step used."""
    m = loadmat(standard_run.out / "mini_batch_data.mat")
    assert len(standard_run.steps) == 14
    assert m["train_loss"][0].tolist() == pytest.approx([s[0] for s in standard_run.steps], rel=1e-6)
    assert m["train_acc"][0].tolist() == pytest.approx([s[1] / s[2] for s in standard_run.steps])


def test_paired_runs_see_the_same_batches_and_augmentation(standard_run):
    soft = SpiedRun([*standard_run.overrides, "output.name=soft"], name="demo_soft.yaml")
    assert soft.batches == standard_run.batches and len(soft.batches) == 14
    a = loadmat(standard_run.out / "mini_batch_data.mat")
    b = loadmat(soft.out / "mini_batch_data.mat")
    assert a["criterion"][0] == "cross_entropy" and b["criterion"][0] == "soft_cross_entropy"
    assert not np.array_equal(a["train_loss"], b["train_loss"])


def test_resume_refuses_a_changed_experiment(standard_run):
    out = standard_run.out
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file() and p.name != ".lock"}
    changed = config(standard_run.overrides, "criterion=soft_cross_entropy", "seed=1")
    with pytest.raises(CheckpointError, match=r"differs in criterion, seed"):
        train(changed, device="cpu", resume="auto", progress=False)
    with pytest.raises(CheckpointError, match="already holds a run; continue it with --resume auto"):
        train(standard_run.cfg, device="cpu", resume=None, progress=False)
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file() and p.name != ".lock"} == before


def test_a_finished_run_is_not_redone(standard_run):
    out = standard_run.out
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file() and p.name != ".lock"}
    train(standard_run.cfg, device="cpu", resume="auto", progress=False)
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file() and p.name != ".lock"} == before


def test_raising_epochs_continues_a_finished_run(tiny_overrides):
    one = train(config(tiny_overrides, "train.epochs=1"), device="cpu", progress=False)
    two = train(config(tiny_overrides, "train.epochs=2"), device="cpu", resume="auto", progress=False)
    assert one == two
    m = loadmat(two / "mini_batch_data.mat")
    assert m["train_epoch"][0].tolist() == [1] * 7 + [2] * 7


class NanAfter(nn.Module):
    """Cross entropy that returns NaN from its ``after``-th call on (for the NaN-stop test)."""

    def __init__(self, after: int = 3):
        super().__init__()
        self.after, self.calls = after, 0

    def forward(self, logits, targets, features=None):
        self.calls += 1
        loss = nn.functional.cross_entropy(logits.float(), targets)
        return loss * float("nan") if self.calls >= self.after else loss


def test_nan_loss_stops_the_run_naming_epoch_and_step(tiny_overrides, monkeypatch):
    if "nan_after_test" not in CRITERIA:
        register_criterion("nan_after_test")(NanAfter)
    # 7 train calls in epoch 1 (ok), then val (2 calls), then epoch 2: call 10 is its step 1, 12 its step 3.
    cfg = config(tiny_overrides, "criterion={name: nan_after_test, after: 12}", "eval.every_epochs=0")
    with pytest.raises(TrainingDivergedError, match=r"loss became nan at epoch 2, step 3; the last good checkpoint is"):
        train(cfg, device="cpu", progress=False)
    out = run_dir(cfg)
    m = loadmat(out / "mini_batch_data.mat")
    assert m["train_epoch"][0].tolist() == [1] * 7 + [2] * 7  # the whole epoch's records, NaN ones included
    assert np.isnan(m["train_loss"][0, 9]) and np.isfinite(m["train_loss"][0, :9]).all()
    state = torch.load(out / "checkpoints" / "last.pt", weights_only=True)
    assert (state["epoch"], state["epoch_done"]) == (1, True)  # the last good checkpoint stays
    assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())


def test_warmup_multistep_schedule_values():
    sched = EpochSchedule(ScheduleConfig(name="multistep", milestones=[40, 70], gamma=0.1, warmup_epochs=10,
                                         warmup_factor=0.01), total_epochs=120)
    # BoT: factor = warmup(e) * 0.1^(#milestones <= e), e = epoch - 1
    expected = {1: 0.01, 2: 0.01 + 0.99 * 0.1, 6: 0.01 + 0.99 * 0.5, 10: 0.01 + 0.99 * 0.9, 11: 1.0, 40: 1.0,
                41: 0.1, 70: 0.1, 71: 0.01, 120: 0.01}
    for epoch, value in expected.items():
        assert sched.factor(epoch) == pytest.approx(value), epoch


def torch_schedule_factors(make, epochs: int) -> list[float]:
    """Per-epoch lr factors of a PyTorch scheduler stepped once per epoch (the oracle)."""
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0)
    sched, factors = make(opt), []
    for _ in range(epochs):
        factors.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return factors


@pytest.mark.parametrize("cfg, make", [
    (ScheduleConfig(name="step", step_size=40, gamma=0.1), lambda o: torch.optim.lr_scheduler.StepLR(o, 40, 0.1)),
    (ScheduleConfig(name="multistep", milestones=[40, 70], gamma=0.1),
     lambda o: torch.optim.lr_scheduler.MultiStepLR(o, [40, 70], 0.1)),
    (ScheduleConfig(name="cosine", min_lr_factor=0.0), lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, 120)),
])
def test_schedules_match_pytorch_schedulers(cfg, make):
    ours = [EpochSchedule(cfg, total_epochs=120).factor(e) for e in range(1, 121)]
    assert ours == pytest.approx(torch_schedule_factors(make, 120), abs=1e-12)


def test_device_resident_cache_path_equals_the_host_copy_path(standard_run):
    """The GPU's default path (cache on the device, gather inside the augmentation; data.device_cache auto
    is on) and the host path (gather in host memory, copy, augment) train identically."""
    off = train(config(standard_run.overrides, "data.device_cache=off", "output.name=cache_off"), device="cpu",
                progress=False)
    runs = {}
    for mode, out in (("on", standard_run.out), ("off", off)):
        runs[mode] = (loadmat(out / "mini_batch_data.mat"), torch.load(out / "checkpoints" / "last.pt", weights_only=True))
    (mat_on, ck_on), (mat_off, ck_off) = runs["on"], runs["off"]
    for key in ("train_loss", "train_acc", "val_loss", "val_acc", "eval_rank1", "eval_mAP"):
        np.testing.assert_array_equal(mat_on[key], mat_off[key], err_msg=key)
    assert all(torch.equal(ck_on["model"][k], ck_off["model"][k]) for k in ck_on["model"])


PLUGIN = '''
import torch.nn.functional as F
from torch import nn
from reid.losses import register_criterion

@register_criterion("focal_from_plugin")
class Focal(nn.Module):
    def __init__(self, gamma: float = 2.0):
        super().__init__()
        self.gamma = gamma
    def forward(self, logits, targets, features=None):
        logp = F.log_softmax(logits.float(), dim=1).gather(1, targets[:, None]).squeeze(1)
        return (-(1 - logp.exp()) ** self.gamma * logp).mean()
'''


def test_a_criterion_from_the_users_own_file(tiny_overrides, tmp_path):
    plugin = tmp_path / "my_losses.py"
    plugin.write_text(PLUGIN)
    cfg = config(tiny_overrides, f"imports=[{plugin}]", "criterion={name: focal_from_plugin, gamma: 2.0}",
                 "train.epochs=1", "eval.every_epochs=0")
    m = loadmat(train(cfg, device="cpu", progress=False) / "mini_batch_data.mat")
    assert m["criterion"][0] == "focal_from_plugin" and np.isfinite(m["train_loss"]).all()
    with pytest.raises(ConfigError, match="imports: cannot import 'no_such_module'"):
        train(config(tiny_overrides, "imports=[no_such_module]"), device="cpu", progress=False)


@pytest.mark.parametrize("override, message", [
    ("train.sync_bn=true", "train.sync_bn = true needs CUDA devices"),
    ("train.precision=fp16", "train.precision = fp16 needs CUDA; use bf16 or fp32 on the CPU"),
])
def test_cuda_only_options_are_refused_on_the_cpu_before_any_file_is_written(tiny_overrides, override, message):
    cfg = config(tiny_overrides, override)
    with pytest.raises(ConfigError, match=message):
        train(cfg, device="cpu", progress=False)
    assert not run_dir(cfg).exists()


def test_step_records_weight_each_part_by_the_batch_and_an_empty_share_adds_nothing():
    """Global batch of 5 over 2 processes, seen from one process holding 3 (their per-sample losses sum to
    6.0, 1 correct): its part is 6.0 / 5, and its plain cross entropy sums -log p of its 3 targets. A process
    holding no image of a batch has the sums of an empty batch, 0 (not the nan of a mean over nothing), so
    the sums stay finite."""
    from reid.engine.records import StepRecords, step_sums
    from reid.data import Share
    from reid.losses import BatchShare
    from reid.losses.shares import sample_mean_part

    targets = torch.tensor([0, 2, 1, 1, 0])
    logits = torch.tensor([[3.0, 0.0, 0.0], [0.0, 0.0, 1.0], [2.0, 0.0, 0.0]])  # rows 0..2: right, right, wrong
    held = BatchShare.of(Share(5, rank=0, world_size=2), logits, None, targets)
    empty = BatchShare.of(Share(5, rank=5, world_size=6), torch.empty(0, 3), None, targets)
    assert (empty.lo, empty.hi, len(empty.targets)) == (5, 5, 0)  # 6 processes, 5 images: the last holds none
    records = StepRecords([5, 5], torch.device("cpu"))
    records.record(0, step_sums(held, torch.tensor(6.0 / 5)))
    records.record(1, step_sums(empty, sample_mean_part(torch.empty(0), empty)))
    means, sizes = records.take(2)
    nll = -torch.log_softmax(logits.double(), 1)[torch.arange(3), targets[:3]].sum().item()  # the 3 rows' -log p
    assert means["loss"] == pytest.approx([6.0 / 5, 0.0]) and means["acc"] == pytest.approx([2 / 5, 0.0])
    assert means["nll"] == pytest.approx([nll / 5, 0.0], rel=1e-6) and sizes == [5, 5]


def test_a_run_outside_the_imagenet_regime_is_warned_with_the_key_to_set_and_its_log_names_the_run(
        tiny_overrides, tmp_path, capsys):
    """A user's config on standard.yaml, from scratch at 32x16: the trunk's lower rate and the 10-pixel padding
    of 256x128 stay as configured (the experiment is not changed behind the user's back), and one warning line
    each names the key to set. The log begins with the run's name and its config file. The demo config,
    which sets both keys, is not warned."""
    import yaml

    from reid.config import untuned_defaults

    mine = tmp_path / "my_experiment.yaml"
    mine.write_text(f"_base_: {REPO / 'configs' / 'standard.yaml'}\n")
    run = train(load_config(mine, [*tiny_overrides, "train.epochs=1", "eval.every_epochs=0", "output.name=r18"]),
                device="cpu", progress=False)
    printed = capsys.readouterr().out
    log = (run / "log.txt").read_text().splitlines()
    assert log[0].startswith(f"training r18 ({mine}): 8 identities"), log[0]
    warnings = [line for line in log if line.startswith("warning: ")]
    assert len(warnings) == 2 and all(w in printed.splitlines() for w in warnings), log
    assert "optim.backbone_lr = 0.005" in warnings[0] and "set optim.backbone_lr: null for one rate" in warnings[0]
    assert "augment.pad = 10" in warnings[1] and "data.size is [32, 16]" in warnings[1]
    assert "set augment.pad (e.g. 1, the same share of the width)" in warnings[1]
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert (saved["optim"]["backbone_lr"], saved["augment"]["pad"]) == (0.005, 10)
    assert untuned_defaults(config(tiny_overrides)) == []


def test_the_plain_cross_entropy_is_the_standard_loss_and_below_the_soft_loss(tmp_path_factory, synthetic_root):
    """The criteria of configs/standard.yaml (plain cross entropy, no class weights) and configs/soft.yaml, at a
    tiny size: for standard, train_nll equals train_loss and val_nll equals val_loss to 1e-6 step by step (the
    same measure); soft adds uniform_weight x mean_c -log p_c > 0 to the cross entropy, so its val_nll is below
    its val_loss at every step, and the gap is that term (at least -log(1/K) for K classes, by Jensen)."""
    overrides = module_overrides(tmp_path_factory.mktemp("nll"), synthetic_root)
    mats = {}
    for name in ("standard", "soft"):
        cfg = config(overrides, "train.epochs=1", "optim.lr=0.01", "optim.backbone_lr=0.01", name=f"{name}.yaml")
        mats[name] = loadmat(train(cfg, device="cpu", progress=False) / "mini_batch_data.mat")
    standard, soft = mats["standard"], mats["soft"]
    assert standard["criterion"][0] == "cross_entropy" and soft["criterion"][0] == "soft_cross_entropy"
    for phase, steps in (("train", 7), ("val", 2)):
        for m in (standard, soft):
            assert m[f"{phase}_nll"].shape == (1, steps) and np.isfinite(m[f"{phase}_nll"]).all()
        np.testing.assert_allclose(standard[f"{phase}_nll"][0], standard[f"{phase}_loss"][0], rtol=0, atol=1e-6)
    assert (soft["val_nll"][0] < soft["val_loss"][0]).all()
    # K = 8 training identities: mean_c -log p_c >= log 8 (uniform_weight 1)
    assert (soft["val_loss"][0] - soft["val_nll"][0] >= np.log(8) - 1e-6).all()
    for m in (standard, soft):  # one whole-split summary per epoch with a val phase
        assert m["val_summary_epoch"][0].tolist() == [1]
        assert 0 <= m["val_ece"][0, 0] <= 1 and 1 / 8 <= m["val_confidence"][0, 0] <= 1


def test_a_history_from_before_the_plain_cross_entropy_gets_nan_rows_of_its_length():
    """A checkpoint written before ``train_nll``/``val_nll`` existed resumes with nan for its mini-batches, so every
    row of a phase keeps one entry per mini-batch (the .mat contract) and the new steps append after them."""
    from reid.engine.history import History

    old = History("cross_entropy")
    old.extend("train", 1, loss=[2.0, 1.5], acc=[0.0, 0.5], nll=[2.0, 1.5], batch_size=[4, 4], lr=[0.1, 0.1])
    state = old.state_dict()
    del state["columns"]["train_nll"], state["columns"]["val_nll"]
    resumed = History.from_state_dict(state)
    resumed.extend("train", 2, loss=[1.0], acc=[1.0], nll=[1.0], batch_size=[4], lr=[0.1])
    nll = resumed.to_mat()["train_nll"][0]
    assert nll.shape == (3,) and np.isnan(nll[:2]).all() and nll[2] == 1.0
    assert resumed.to_mat()["val_nll"].size == 0  # no val mini-batch yet: nothing to pad


def test_val_feature_ratio_of_a_run_that_has_not_learnt_is_about_one(tmp_path_factory, synthetic_root):
    """Two val images of each of the 8 identities, a learning rate of 1e-9 (the weights stay at their
    initialisation; BatchNorm's running statistics follow the data as in any run): the retrieval features are
    about as far from an image of the same identity as from one of another, a ratio of about 1 (a run that has
    learnt goes well below: tests/test_evaluate_run.py)."""
    overrides = module_overrides(tmp_path_factory.mktemp("untrained"), synthetic_root)
    cfg = config(overrides, "data.val_per_id=2", "train.epochs=1", "eval.every_epochs=0", "optim.lr=0.000000001",
                 "optim.backbone_lr=0.000000001", name="standard.yaml")
    m = loadmat(train(cfg, device="cpu", progress=False) / "mini_batch_data.mat")
    assert m["val_batch_size"][0].sum() == 16 and m["val_summary_epoch"][0].tolist() == [1]
    assert m["val_feature_ratio"][0, 0] == pytest.approx(1.0, abs=0.1)
