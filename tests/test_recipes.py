"""The shipped configs follow their reference recipes: BoT trains on every training image, the
classic baseline evaluates flip-averaged features, and random erasing samples its box as BoT does."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from reid.config import load_config
from reid.data import BatchAugment, batch_generator
from reid.data.augment import ERASING_TRIES
from reid.engine.builder import build_split
from reid.engine.run import train

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("name, train_images, val_images", [
    ("bot", 12936, 0), ("bot_center", 12936, 0),       # BoT: all of bounding_box_train
    ("bot_standard", 12936 - 751, 751), ("bot_soft", 12936 - 751, 751),  # studies: val curves
])
def test_bot_trains_on_every_training_image_and_studies_keep_a_val_split(name, train_images, val_images,
                                                                        full_market_layout):
    cfg = load_config(REPO / "configs" / f"{name}.yaml", [f"data.root={full_market_layout}"])
    _, split = build_split(cfg)
    assert (len(split.train), len(split.val), split.num_classes) == (train_images, val_images, 751)


@pytest.mark.parametrize("name, flip", [("standard", True), ("soft", True), ("label_smoothing", True),
                                        ("bot", False), ("bot_center", False)])
def test_classic_configs_evaluate_flip_averaged_features(name, flip):
    assert load_config(REPO / "configs" / f"{name}.yaml").eval.flip is flip


def test_without_a_val_split_the_epoch_line_has_no_val_fields(tiny_overrides):
    out = train(load_config(REPO / "configs" / "demo_standard.yaml",
                            [*tiny_overrides, "data.val_per_id=0", "train.epochs=1", "eval.every_epochs=0"]),
                device="cpu", progress=False)
    line = (out / "log.txt").read_text().splitlines()[-1]
    assert line.startswith("epoch 1/1 train_loss ") and " lr " in line and "val" not in line and "nan" not in line


class _Draws:
    """Python's ``random`` as BoT calls it, answering from the uniforms BatchAugment drew.

    ``uniform(a, b)`` is ``a + (b - a) * u`` and ``randint(a, b)`` is ``a + floor(u * (b - a + 1))``
    for the next ``u`` of the stream it is asked from, in BoT's order.
    """

    def __init__(self, u_erase, u_area, u_ratio, u_y, u_x):
        self.first, self.tries, self.position = [u_erase], list(zip(u_area, u_ratio)), [u_y, u_x]
        self.calls = 0

    def uniform(self, a, b):
        self.calls += 1
        if self.calls == 1:
            u = self.first.pop()
        else:  # tries alternate area, ratio
            k, which = divmod(self.calls - 2, 2)
            u = self.tries[k][which]
        return a + (b - a) * u

    def randint(self, a, b):
        return a + math.floor(self.position.pop(0) * (b - a + 1))


def _bot_random_erasing_box(rnd, H, W, probability, sl, sh, r_lo, r_hi):
    """BoT's RandomErasing.__call__ (reid-strong-baseline, data/transforms/transforms.py), line by line,
    returning the box it erases (top, left, height, width) or None; BoT's r1 = 0.3, 1 / r1 = 3.33."""
    if rnd.uniform(0, 1) >= probability:
        return None
    for attempt in range(100):
        area = H * W
        target_area = rnd.uniform(sl, sh) * area
        aspect_ratio = rnd.uniform(r_lo, r_hi)
        h = int(round(math.sqrt(target_area * aspect_ratio)))
        w = int(round(math.sqrt(target_area / aspect_ratio)))
        if w < W and h < H:
            x1 = rnd.randint(0, H - h)
            y1 = rnd.randint(0, W - w)
            return x1, y1, h, w
    return None


@pytest.mark.parametrize("size, area", [((256, 128), (0.02, 0.4)), ((32, 16), (0.02, 0.4)), ((16, 8), (0.8, 1.0))])
def test_erasing_boxes_follow_bots_random_erasing_draw_for_draw(size, area):
    H, W = size
    aug = BatchAugment(size, erasing_p=0.5, erasing_area=area, erasing_ratio=(0.3, 3.33))
    B, found, missed = 256, 0, 0
    g = batch_generator(3, 1, 4)
    p = aug.sample_params(B, g)
    # the same stream again, in BatchAugment's order, to hand BoT its uniforms
    g = batch_generator(3, 1, 4)
    torch.rand(B, generator=g, dtype=torch.float64)
    torch.randint(0, 2 * aug.pad + 1, (B,), generator=g)
    torch.randint(0, 2 * aug.pad + 1, (B,), generator=g)
    u_erase = torch.rand(B, generator=g, dtype=torch.float64)
    u_area, u_ratio = torch.rand(2, B, ERASING_TRIES, generator=g, dtype=torch.float64)
    u_y, u_x = torch.rand(2, B, generator=g, dtype=torch.float64)
    for i in range(B):
        rnd = _Draws(float(u_erase[i]), u_area[i].tolist(), u_ratio[i].tolist(), float(u_y[i]), float(u_x[i]))
        box = _bot_random_erasing_box(rnd, H, W, 0.5, *area, 0.3, 3.33)
        ours = (int(p.erase_y[i]), int(p.erase_x[i]), int(p.erase_h[i]), int(p.erase_w[i])) if p.erase[i] else None
        assert ours == box, i
        found += box is not None
        missed += box is None and float(u_erase[i]) < 0.5  # no try fitted
    assert found > 50
    if area[1] > 0.5:
        assert missed > 0  # large areas: some samples exhaust their tries and are not erased
