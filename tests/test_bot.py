"""The strong-baseline (BoT) configs and their criterion-study variants run end to end."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.io import loadmat

from reid.config import load_config
from reid.engine import trainer as trainer_module
from reid.engine.run import train

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("name, criteria", [
    ("bot", ["label_smoothing", "triplet"]),
    ("bot_center", ["label_smoothing", "triplet", "center"]),
    ("bot_standard", ["cross_entropy", "triplet"]),
    ("bot_soft", ["soft_cross_entropy", "triplet"]),
])
def test_bot_config_trains_and_evaluates(name, criteria, tiny_overrides, monkeypatch):
    batches = []
    real_batch = trainer_module.Trainer.train_batch

    def spy(self, global_idx, epoch, step):
        images, labels = real_batch(self, global_idx, epoch, step)
        batches.append(labels.tolist())
        return images, labels

    monkeypatch.setattr(trainer_module.Trainer, "train_batch", spy)
    overrides = [o for o in tiny_overrides if not o.startswith(("model.name", "train.batch_size", "eval.every"))]
    sets = [*overrides, "train.batch_size=16", "schedule.warmup_epochs=1", "eval.every_epochs=0"]
    cfg = load_config(REPO / "configs" / f"{name}.yaml", sets)
    assert (cfg.model.name, cfg.model.last_stride, cfg.model.neck) == ("resnet50", 1, "bnneck")
    # trained with the recipe's neck and last stride on the smaller trunk (ResNet-50 is tested in test_models.py)
    out = train(load_config(REPO / "configs" / f"{name}.yaml", [*sets, "model.name=resnet18"]), device="cpu",
                progress=False)
    m = loadmat(out / "mini_batch_data.mat")
    assert m["criterion"][0] == " + ".join(criteria)
    assert np.isfinite(m["train_loss"]).all() and m["train_loss"].shape[1] == len(batches) > 0
    for labels in batches:  # P x K: 4 distinct identities, 4 images each
        ids, counts = np.unique(labels, return_counts=True)
        assert len(ids) == 4 and (counts == 4).all()
    # warm-up: epoch 1 at warmup_factor x lr, epoch 2 at lr
    lrs = dict(zip(m["train_epoch"][0], m["train_lr"][0]))
    assert lrs[1] == pytest.approx(3.5e-4 * 0.01) and lrs[2] == pytest.approx(3.5e-4)
    results = json.loads((out / "results.json").read_text())
    assert 0 <= results["rank1"] <= 1 and results["num_valid_queries"] > 0
    state = torch.load(out / "checkpoints" / "last.pt", weights_only=True)
    if "center" in criteria:
        assert any(k.endswith("centers") for k in state["criterion"]) and state["extra_optimizer"] is not None
        assert state["extra_optimizer"]["param_groups"][0]["lr"] == 0.5
