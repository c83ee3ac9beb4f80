"""The runs of the 2-process vs 1-process test (tests/test_distributed.py): one per criterion, on a
small model whose normalisation does not depend on the batch (GroupNorm), so that a torchrun run
must reproduce the 1-process numbers.

Under torchrun it trains every run in the same processes (one start of torch for all of them), alone:

    python -m torch.distributed.run --standalone --nproc_per_node=2 tests/ddp_equivalence.py OUT --set KEY=VALUE ...

or, with :func:`train_all`, in the torchrun launch that tests/test_distributed.py shares between its tests.
The test trains the same runs with :func:`config` in its own process for the reference.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch.nn.functional as F
from torch import nn

from reid.config import Config, load_config
from reid.engine import distributed, run
from reid.losses import register_criterion
from reid.models import MODELS, register_model

REPO = Path(__file__).resolve().parents[1]

PK = ["sampler.name=pk", "sampler.num_instances=3", "train.batch_size=9", "train.epochs=2"]  # 9 = 5 + 4 images
# 2 val images per identity (so that the val feature ratio has same-identity pairs) leave 32 train images: batches
# of 9 are 9, 9, 9, 5, so the processes' shares differ in size (5/4, then 3/2); the 16 val images make batches of
# 9 and 7 (shares 5/4 and 4/3), whose retrieval features each process gathers for the feature ratio
RUNS = {
    "cross_entropy": ["criterion={name: cross_entropy, class_weight: [0.5, 1, 1.5, 2, 3, 1, 0.25, 2]}"],
    "soft_cross_entropy": ["criterion={name: soft_cross_entropy, uniform_weight: 0.5}"],
    "label_smoothing": ["criterion={name: label_smoothing, epsilon: 0.1}"],
    "triplet": ["criterion={name: triplet, margin: 0.3}", *PK],
    "center": ["criterion={name: center, weight: 0.5}"],
    "no_batch_part": ["criterion={name: focal_without_batch_part, gamma: 2.0}"],  # computed on the gathered batch
    "weighted_sum": ["criterion=[{name: label_smoothing, epsilon: 0.1, weight: 0.5}, "
                     "{name: triplet, margin: null}, {name: center, weight: 0.01}]", *PK],
}


class BatchFreeNet(nn.Module):
    """Conv + GroupNorm + pooling + a 16-wide feature + dropout + classifier: the registry's model contract."""

    def __init__(self, num_classes: int, **_: object) -> None:
        super().__init__()
        self.trunk = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.GroupNorm(2, 8), nn.ReLU(),
                                   nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.neck = nn.Linear(8, 16)
        self.dropout = nn.Dropout(0.3)
        self.classifier = nn.Linear(16, num_classes)
        self.feature_dim = 16

    def forward(self, x):
        feat = self.neck(self.trunk(x))
        return (self.classifier(self.dropout(feat)), feat) if self.training else feat

    def param_groups(self) -> dict:
        return {"backbone": list(self.trunk.parameters()),
                "head": [*self.neck.parameters(), *self.classifier.parameters()]}


class FocalWithoutBatchPart(nn.Module):
    """A user's criterion with no ``batch_part`` hook: under torchrun it runs on the gathered batch."""

    def __init__(self, gamma: float = 2.0) -> None:
        super().__init__()
        self.gamma = gamma

    def forward(self, logits, targets, features=None):
        logp = F.log_softmax(logits.float(), dim=1).gather(1, targets[:, None]).squeeze(1)
        return (-(1 - logp.exp()) ** self.gamma * logp).mean()


if "batch_free_net" not in MODELS.names():  # imported by the test and run by torchrun
    register_model("batch_free_net")(BatchFreeNet)
    register_criterion("focal_without_batch_part")(FocalWithoutBatchPart)


def config(name: str, out_root: Path, overrides: list[str]) -> Config:
    return load_config(REPO / "configs" / "demo_standard.yaml",
                       [*overrides, "model.name=batch_free_net", "train.epochs=1", "train.batch_size=9",
                        "data.val_per_id=2",
                        "eval.every_epochs=0", *RUNS[name], f"output.root={out_root}", f"output.name={name}"])


def train_all(out_root: Path, overrides: list[str]) -> None:
    """Every run, under ``out_root``, in this process's process group (kept: the caller shuts it down)."""
    distributed.init_distributed("cpu")
    shutdown, distributed.shutdown_distributed = distributed.shutdown_distributed, lambda: None  # one group for all
    try:
        for name in RUNS:
            run.train(config(name, out_root, overrides), device="cpu", progress=False)
    finally:
        distributed.shutdown_distributed = shutdown


def main(argv: list[str]) -> None:
    train_all(Path(argv[0]), [a for a in argv[1:] if a != "--set"])
    distributed.shutdown_distributed()


if __name__ == "__main__":
    main(sys.argv[1:])
