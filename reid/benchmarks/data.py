"""``scripts/bench.py data``: the classic per-image pipeline against the cached batched path.

Both run on one CPU thread (``torch.set_num_threads(1)``) over the same images and
the same augmentation (resize to ``--size``, flip, pad + crop, normalise, and random
erasing when ``--erasing-p`` > 0):

(a) classic: what a DataLoader with num_workers=0 does every epoch: PIL decode +
    torchvision transforms per image, then collate (torch.stack) per batch;
(b) cached batched: the uint8 cache already built (decoded once), batches gathered
    from it and augmented by :class:`reid.data.BatchAugment`; reported twice, with the
    cache at 128x64 (resized in every batch) and with the cache resized once to
    ``--size`` (:func:`reid.data.resize_images`, a one-time cost like decoding).

Example::

    python scripts/bench.py data                      # a synthetic set in a temp dir
    python scripts/bench.py data --root data/Market-1501-v15.09.15 --images 4000
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--root", default=None, help="Market-1501 root (default: a synthetic set in a temp dir)")
    parser.add_argument("--images", type=int, default=2000, help="images of bounding_box_train to use")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--size", type=int, nargs=2, default=(256, 128), metavar=("H", "W"))
    parser.add_argument("--pad", type=int, default=10)
    parser.add_argument("--erasing-p", type=float, default=0.5)
    parser.add_argument("--repeats", type=int, default=3, help="passes over the images for (b); the best is kept")


def _classic(paths: list[str], size: tuple[int, int], pad: int, erasing_p: float, batch_size: int) -> float:
    from PIL import Image
    import torchvision.transforms as T

    from ..data.augment import classic_transform

    transform = classic_transform(size, pad=pad, flip_p=0.5)
    erase = T.RandomErasing(p=erasing_p, scale=(0.02, 0.4), ratio=(0.3, 3.3), value=0) if erasing_p > 0 else None
    torch.manual_seed(0)
    start = time.perf_counter()
    for i in range(0, len(paths), batch_size):
        batch = []
        for p in paths[i:i + batch_size]:
            with Image.open(p) as im:
                x = transform(im.convert("RGB"))
            batch.append(erase(x) if erase is not None else x)
        torch.stack(batch)  # default_collate
    return len(paths) / (time.perf_counter() - start)


def _batched(cache: torch.Tensor, aug, batch_size: int, repeats: int) -> float:
    from ..data import RandomBatchSampler, batch_generator

    sampler = RandomBatchSampler(len(cache), batch_size, seed=0)
    best = 0.0
    for epoch in range(repeats + 1):  # epoch 0 warms up
        start = time.perf_counter()
        for step, idx in enumerate(sampler.batches(epoch)):
            aug(cache[torch.from_numpy(idx)], batch_generator(0, epoch, step))
        rate = len(cache) / (time.perf_counter() - start)
        if epoch > 0:
            best = max(best, rate)
    return best


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Measure and print the table; return the numbers as a JSON-able dict."""
    from ..data import BatchAugment, Market1501, load_image_cache, resize_images
    from ..data.synthetic import generate_synthetic

    size = (int(args.size[0]), int(args.size[1]))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with tempfile.TemporaryDirectory(prefix="reid-bench-data-") as tmp:
            if args.root is None:
                ids = max(2, -(-args.images // 12))
                root = generate_synthetic(Path(tmp) / "synthetic", ids=ids, images_per_id=12, distractors=0, junk=0)
                source = f"synthetic ({ids} ids x 12, 128x64 JPEG)"
            else:
                root, source = args.root, str(args.root)
            paths = [s.path for s in Market1501(root).train][: args.images]
            t0 = time.perf_counter()
            cache = load_image_cache(paths, (128, 64), cache_dir=Path(tmp) / "cache", progress=False)
            build_s = time.perf_counter() - t0
            t0 = time.perf_counter()
            cache_full = resize_images(cache, size)
            resize_s = time.perf_counter() - t0

            classic = _classic(paths, size, args.pad, args.erasing_p, args.batch_size)
            aug = BatchAugment(size, flip_p=0.5, pad=args.pad, erasing_p=args.erasing_p)
            small = _batched(cache, aug, args.batch_size, args.repeats)
            full = _batched(cache_full, aug, args.batch_size, args.repeats)
    finally:
        torch.set_num_threads(threads)

    result = {
        "source": source, "images": len(paths), "batch_size": args.batch_size, "size": list(size),
        "pad": args.pad, "erasing_p": args.erasing_p, "threads": 1,
        "classic_images_per_s": classic,
        "batched_images_per_s": small, "batched_speedup": small / classic,
        "batched_presized_images_per_s": full, "batched_presized_speedup": full / classic,
        "cache_build_s": build_s, "cache_resize_s": resize_s,
    }
    print(format_table(result))
    return result


def format_table(r: dict[str, Any]) -> str:
    h, w = r["size"]
    rows = [
        ("(a) classic: PIL decode + torchvision per image", r["classic_images_per_s"], 1.0),
        ("(b) cached 128x64, BatchAugment (resize per batch)", r["batched_images_per_s"], r["batched_speedup"]),
        (f"(b) cached resized once to {h}x{w}, BatchAugment", r["batched_presized_images_per_s"],
         r["batched_presized_speedup"]),
    ]
    lines = [f"data pipeline, 1 thread, {r['images']} images of {r['source']}, batch {r['batch_size']}, "
             f"output {h}x{w}, pad {r['pad']}, erasing p {r['erasing_p']}",
             f"{'pipeline':<56}{'images/s':>10}{'speedup':>9}"]
    lines += [f"{name:<56}{rate:>10.0f}{speed:>8.1f}x" for name, rate, speed in rows]
    lines.append(f"one-time: cache build (decode) {r['cache_build_s']:.2f} s, resize once {r['cache_resize_s']:.2f} s")
    return "\n".join(lines)


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arguments(p)
    run(p.parse_args())
