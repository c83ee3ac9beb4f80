"""Decode once: every image of a split as one uint8 tensor (N, 3, H, W), kept on disk.

JPEG decoding is the slow part of a classic per-image data pipeline; Market-1501
train at its native 128x64 is about 300 MiB of uint8, so it is decoded once, stored
as a ``.npy`` file in ``cache_dir`` keyed by a hash of the file list (paths, sizes,
mtimes) and the size, and later runs load that file instead of decoding anything.

Example::

    >>> from reid.data import Market1501, load_image_cache
    >>> ds = Market1501("data")
    >>> images = load_image_cache([s.path for s in ds.train], cache_dir=Path("data/.cache"), desc="train")
    >>> images.shape, images.dtype
    (torch.Size([12936, 3, 128, 64]), torch.uint8)
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from PIL import Image

from ..errors import DatasetError
from ..io import atomic_write_with

CACHE_VERSION = 1


def decode_image(path: str, size: tuple[int, int]) -> np.ndarray:
    """One image as (H, W, 3) uint8 RGB at ``size`` = (H, W).

    Grayscale, RGBA and palette images are converted to RGB; other sizes are resized
    with PIL's bilinear filter (antialiased when shrinking). Tests monkeypatch this
    function to count decodes.
    """
    try:
        with Image.open(path) as im:
            return image_to_array(im, size)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise DatasetError(f"{path}: cannot decode the image ({e}); replace or delete the file") from e


def image_to_array(image: Image.Image, size: tuple[int, int]) -> np.ndarray:
    """A PIL image as (H, W, 3) uint8 RGB at ``size`` = (H, W), exactly as :func:`decode_image` makes it."""
    h, w = size
    image = image.convert("RGB")
    if image.size != (w, h):
        image = image.resize((w, h), Image.BILINEAR)
    return np.asarray(image, dtype=np.uint8)


def cache_key(paths: Sequence[str | os.PathLike], size: tuple[int, int]) -> str:
    """Hash of (absolute path, byte size, mtime) of every file, the size and the cache version."""
    h = hashlib.sha256(json.dumps([CACHE_VERSION, list(size)]).encode())
    for p in paths:
        p = os.path.abspath(p)
        try:
            st = os.stat(p)
        except OSError as e:
            raise DatasetError(f"{p}: cannot read the image ({e.strerror or e}); check the dataset is complete") from e
        h.update(f"{p}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:20]


def cache_path(cache_dir: Path, paths: Sequence[str | os.PathLike], size: tuple[int, int], desc: str = "") -> Path:
    """Where the on-disk copy of these images lives."""
    tag = re.sub(r"[^A-Za-z0-9_-]+", "_", desc).strip("_") or "images"
    return Path(cache_dir) / f"{tag}_{len(paths)}x{size[0]}x{size[1]}_{cache_key(paths, size)}.npy"


def decode_images(paths: Sequence[str | os.PathLike], size: tuple[int, int] = (128, 64), desc: str = "",
                  progress: bool = True, num_threads: int | None = None) -> torch.Tensor:
    """Decode ``paths`` into a new uint8 tensor (N, 3, H, W) with a thread pool (PIL releases the GIL)."""
    from tqdm import tqdm

    h, w = size
    out = np.empty((len(paths), 3, h, w), dtype=np.uint8)
    if num_threads is None:
        num_threads = min(8, os.cpu_count() or 1)

    def work(i: int) -> int:
        out[i] = decode_image(str(paths[i]), (h, w)).transpose(2, 0, 1)
        return i

    with tqdm(total=len(paths), desc=f"decode {desc}".strip(), unit="img", disable=None if progress else True) as bar:
        if num_threads <= 1:
            for i in range(len(paths)):
                work(i)
                bar.update()
        else:
            with ThreadPoolExecutor(num_threads) as pool:
                for _ in pool.map(work, range(len(paths)), chunksize=64):
                    bar.update()
    return torch.from_numpy(out)


def load_image_cache(paths: Sequence[str | os.PathLike], size: tuple[int, int] = (128, 64),
                     cache_dir: Path | str | None = None, desc: str = "", progress: bool = True) -> torch.Tensor:
    """All ``paths`` as one uint8 tensor (N, 3, H, W) on the CPU, decoded at most once.

    With ``cache_dir`` the tensor is also saved there (atomically, as ``.npy``) under a
    name that hashes the file list (paths, sizes, mtimes) and ``size``; the next call
    with the same files loads it and decodes nothing. A changed, added or removed file
    changes the name, so a stale cache is never used. An image that cannot be decoded
    raises DatasetError naming it.

    Example::

        >>> x = load_image_cache(["a.jpg", "b.jpg"], size=(128, 64), cache_dir="data/.cache")
        >>> x.shape
        torch.Size([2, 3, 128, 64])
    """
    size = (int(size[0]), int(size[1]))
    if len(paths) == 0:
        return torch.empty((0, 3, *size), dtype=torch.uint8)
    if cache_dir is None:
        return decode_images(paths, size, desc=desc, progress=progress)
    file = cache_path(Path(cache_dir), paths, size, desc)
    if file.is_file():
        try:
            arr = np.load(file, allow_pickle=False)
            if arr.shape == (len(paths), 3, *size) and arr.dtype == np.uint8:
                return torch.from_numpy(arr)
        except (OSError, ValueError):
            pass  # unreadable copy (e.g. disk trouble): decode again and replace it
    images = decode_images(paths, size, desc=desc, progress=progress)
    atomic_write_with(file, lambda f: np.save(f, images.numpy(), allow_pickle=False))
    return images
