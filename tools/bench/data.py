"""``scripts/bench.py data``: the classic per-image pipeline against the cached batched path.

Both run on one CPU thread (``torch.set_num_threads(1)``) over the same images and
the same augmentation (resize to ``--size``, flip, pad + crop, normalise, and random
erasing when ``--erasing-p`` > 0); each row is the best of ``--repeats`` passes:

(a) classic: what a researcher's loop does every epoch: a torchvision-style dataset whose
    ``__getitem__`` opens the JPEG with PIL, converts to RGB and applies the torchvision
    transforms, read through ``DataLoader(num_workers=0, shuffle=True)`` (default_collate);
(b) cached batched: the uint8 cache already built (decoded once), index batches from the
    sampler, labels gathered, images augmented straight from the cache by
    ``BatchAugment.apply(cache, params, index=rows)``; reported with the cache at 128x64 (resized
    in every batch) and with the cache resized once to ``--size`` (:func:`reid.data.resize_images`,
    a one-time cost like decoding), which is what the trainer does.

For information only: a training step's speed is set by the model's forward and backward, which
``scripts/bench.py train`` measures against the full trainer step.

Example::

    python scripts/bench.py data                      # a synthetic set in a temp dir
    python scripts/bench.py data --root data/Market-1501-v15.09.15 --images 4000
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from typing import Any

import torch

from .timing import timed


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--root", default=None, help="Market-1501 root (default: a synthetic set in a temp dir)")
    parser.add_argument("--images", type=int, default=2000, help="images of bounding_box_train to use")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--size", type=int, nargs=2, default=(256, 128), metavar=("H", "W"))
    parser.add_argument("--pad", type=int, default=10)
    parser.add_argument("--erasing-p", type=float, default=0.5)
    parser.add_argument("--repeats", type=int, default=3, help="passes over the images for (b); the best is kept")


def classic_transform(size: tuple[int, int] = (256, 128), pad: int = 10, flip_p: float = 0.5):
    """The classic per-image torchvision pipeline (the benchmark's baseline): PIL image -> float tensor.

    Resize -> RandomHorizontalFlip -> Pad -> RandomCrop -> ToTensor -> Normalize.

    Example::

        >>> t = classic_transform((256, 128))
        >>> t(Image.open("0002_c1s1_000451_03.jpg").convert("RGB")).shape
        torch.Size([3, 256, 128])
    """
    import torchvision.transforms as T

    from reid.data import IMAGENET_MEAN, IMAGENET_STD

    return T.Compose([
        T.Resize(tuple(size), interpolation=T.InterpolationMode.BILINEAR),
        T.RandomHorizontalFlip(p=flip_p),
        T.Pad(pad),
        T.RandomCrop(tuple(size)),
        T.ToTensor(),
        T.Normalize(IMAGENET_MEAN, IMAGENET_STD),
    ])


class _ClassicDataset:
    """What a researcher's torchvision-style dataset does per item: open, decode, convert, transform."""

    def __init__(self, paths: list[str], pids: list[int], transform) -> None:
        self.paths, self.pids, self.transform = paths, pids, transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        from PIL import Image

        img = Image.open(self.paths[i]).convert("RGB")
        return self.transform(img), self.pids[i]


def _classic(paths: list[str], pids: list[int], size: tuple[int, int], pad: int, erasing_p: float,
             batch_size: int, repeats: int) -> float:
    """(a): a DataLoader with num_workers=0 (random order, default_collate) over a torchvision-style dataset."""
    import torchvision.transforms as T
    from torch.utils.data import DataLoader

    transform = classic_transform(size, pad=pad, flip_p=0.5)
    if erasing_p > 0:
        transform = T.Compose([transform, T.RandomErasing(p=erasing_p, scale=(0.02, 0.4), ratio=(0.3, 3.3), value=0)])
    loader = DataLoader(_ClassicDataset(paths, pids, transform), batch_size=batch_size, shuffle=True,
                        num_workers=0, generator=torch.Generator().manual_seed(0))
    torch.manual_seed(0)
    # the files are in the page cache after the cache build: no disk I/O
    seconds, _ = timed(lambda: [None for _ in loader], repeats)
    return len(paths) / min(seconds)


def _batched(cache: torch.Tensor, labels: torch.Tensor, aug, batch_size: int, repeats: int) -> float:
    """(b): index batches from the sampler, labels gathered, images augmented straight from the cache."""
    from reid.data import RandomBatchSampler, batch_generator

    sampler = RandomBatchSampler(len(cache), batch_size, seed=0)

    epochs = iter(range(repeats + 1))

    def epoch() -> None:
        k = next(epochs)
        for step, idx in enumerate(sampler.batches(k)):
            rows = torch.from_numpy(idx)
            labels[rows]
            aug.apply(cache, aug.sample_params(len(rows), batch_generator(0, k, step)), index=rows)

    seconds, _ = timed(epoch, repeats, warmup=1)  # the fastest pass after one that warms up
    return len(cache) / min(seconds)


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Measure and print the table; return the numbers as a JSON-able dict."""
    from reid.data import BatchAugment, Market1501, load_image_cache, resize_images
    from reid.data.synthetic import generate_synthetic

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
            samples = Market1501(root).train[: args.images]
            paths, pids = [s.path for s in samples], [s.pid for s in samples]
            labels = torch.tensor(pids)
            (build_s,), cache = timed(lambda: load_image_cache(paths, (128, 64), cache_dir=Path(tmp) / "cache",
                                                               progress=False))
            (resize_s,), cache_full = timed(lambda: resize_images(cache, size))

            classic = _classic(paths, pids, size, args.pad, args.erasing_p, args.batch_size, args.repeats)
            aug = BatchAugment(size, flip_p=0.5, pad=args.pad, erasing_p=args.erasing_p)
            small = _batched(cache, labels, aug, args.batch_size, args.repeats)
            full = _batched(cache_full, labels, aug, args.batch_size, args.repeats)
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
        ("(a) classic: DataLoader(workers=0), PIL + torchvision, collate", r["classic_images_per_s"], 1.0),
        ("(b) cached 128x64, BatchAugment, resize per batch", r["batched_images_per_s"], r["batched_speedup"]),
        (f"(b) cached resized once to {h}x{w}, BatchAugment (the trainer's path)",
         r["batched_presized_images_per_s"], r["batched_presized_speedup"]),
    ]
    lines = [f"data pipeline, 1 thread, {r['images']} images of {r['source']}, batch {r['batch_size']}, "
             f"output {h}x{w}, pad {r['pad']}, erasing p {r['erasing_p']}",
             f"{'pipeline':<72}{'images/s':>10}{'speedup':>9}"]
    lines += [f"{name:<72}{rate:>10.0f}{speed:>8.1f}x" for name, rate, speed in rows]
    lines.append(f"one-time: cache build (decode) {r['cache_build_s']:.2f} s, resize once {r['cache_resize_s']:.2f} s")
    lines.append("for information: a training step is bound by the model (scripts/bench.py train)")
    return "\n".join(lines)


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arguments(p)
    run(p.parse_args())
