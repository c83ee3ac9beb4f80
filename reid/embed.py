"""Features for new images from a trained run, exactly as its evaluation computes them.

``reid.load_model(run_dir)`` gives an :class:`Embedder`; ``embed(images)`` takes file
paths, PIL images or uint8 tensors and returns the L2-normalised features the
evaluation uses: each image is decoded to ``data.cache_size`` the way the image cache
decodes it, then goes through the evaluation's own ``extract_features`` (resize to
``data.size``, ImageNet normalisation, ``eval.flip``, the run's precision).

Command line::

    python -m reid.embed outputs/soft photos/ extra.jpg --out feats.npy   # + feats.txt (names)
    python -m reid.embed outputs/soft photos/ --out feats.mat --skip-bad   # keys features, names

Example::

    >>> import reid
    >>> model = reid.load_model("outputs/soft")             # checkpoints/last.pt, GPU when present
    >>> f = model.embed(["a.jpg", "b.jpg"])                 # (2, D) float32, rows of norm 1
    >>> (f[0] @ f[1]).item()                                # cosine similarity
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Iterable, Sequence, Union

import numpy as np
import torch
from PIL import Image

from .cli import run_main
from .config import Config
from .data.cache import decode_image, image_to_array
from .data.market1501 import is_image_name
from .engine.device import eval_autocast_dtype
from .errors import DatasetError, ReidError
from .evaluation import extract_features
from .io import atomic_savemat, atomic_write_text, atomic_write_with
from .rundir import load_run_model

ImageInput = Union[str, os.PathLike, Image.Image, torch.Tensor]
OUTPUT_SUFFIXES = (".npy", ".mat")
# Images decoded at once by the command line: bounds memory on large folders.
CHUNK = 1024


class Embedder:
    """A trained model that embeds images the way its run's evaluation does.

    Made by :func:`load_model`. ``cfg`` is the run's config, ``device`` where the model runs.

    Example::

        >>> emb = load_model("outputs/soft", device="cpu")
        >>> emb.embed(Image.open("a.jpg")).shape
        torch.Size([1, 512])
    """

    def __init__(self, model: torch.nn.Module, cfg: Config, device: torch.device) -> None:
        self.model = model.eval().to(device)
        self.cfg = cfg
        self.device = device

    @property
    def feature_dim(self) -> int:
        return int(self.model.feature_dim)

    def decode(self, images: ImageInput | Sequence[ImageInput]) -> torch.Tensor:
        """uint8 (N, 3, H, W) at ``data.cache_size``: what the image cache would hold for these images.

        A path is decoded like a dataset image; a PIL image or a uint8 tensor (3, H, W) of
        another size is resized like one; a uint8 tensor (N, 3, H, W) is N images.
        """
        size = tuple(self.cfg.data.cache_size)
        items = _as_list(images)
        out = np.empty((len(items), 3, *size), dtype=np.uint8)
        for i, item in enumerate(items):
            out[i] = _image_array(item, size).transpose(2, 0, 1)
        return torch.from_numpy(out)

    def embed(self, images: ImageInput | Sequence[ImageInput], batch_size: int | None = None,
              progress: bool = False) -> torch.Tensor:
        """L2-normalised features (N, D) float32 on the CPU, one row per image, in order.

        Example::

            >>> emb.embed(["a.jpg", Image.open("b.png"), torch.zeros(3, 128, 64, dtype=torch.uint8)])
        """
        cfg = self.cfg
        return extract_features(self.model, self.decode(images), size=tuple(cfg.data.size),
                                batch_size=batch_size or cfg.eval.batch_size, device=self.device,
                                flip=cfg.eval.flip, amp_dtype=eval_autocast_dtype(cfg.train.precision, self.device),
                                channels_last=self.device.type == "cuda", progress=progress, desc="embed")


def load_model(run_dir: str | os.PathLike, checkpoint: str | os.PathLike | None = None,
               device: str = "auto") -> Embedder:
    """The model of ``run_dir`` (its ``checkpoints/last.pt`` unless ``checkpoint``) ready to embed images.

    ``device``: ``auto`` (CUDA when present), ``cpu`` or ``cuda``. A run directory
    without ``config.yaml`` or without the checkpoint is a ReidError saying so.

    Example::

        >>> f = load_model("outputs/soft", device="cpu").embed(["a.jpg"])
    """
    run = load_run_model(run_dir, checkpoint, device)
    return Embedder(run.model, run.cfg, run.device)


def _as_list(images: ImageInput | Sequence[ImageInput]) -> list:
    if isinstance(images, torch.Tensor):
        return list(images) if images.dim() == 4 else [images]
    if isinstance(images, (str, os.PathLike, Image.Image)):
        return [images]
    return list(images)


def _image_array(item: ImageInput, size: tuple[int, int]) -> np.ndarray:
    """(H, W, 3) uint8 at ``size`` from one path, PIL image or uint8 (3, H, W) tensor."""
    if isinstance(item, (str, os.PathLike)):
        return decode_image(str(item), size)
    if isinstance(item, Image.Image):
        return image_to_array(item, size)
    if isinstance(item, torch.Tensor):
        if item.dtype != torch.uint8 or item.dim() != 3 or item.shape[0] != 3:
            raise ReidError(f"an image tensor must be uint8 (3, H, W) RGB in 0..255, got {item.dtype} "
                            f"{tuple(item.shape)}; convert a float image with (x * 255).round().to(torch.uint8)")
        array = item.detach().cpu().permute(1, 2, 0).numpy()
        return array if array.shape[:2] == size else image_to_array(Image.fromarray(array), size)
    raise ReidError(f"cannot embed a {type(item).__name__}; pass file paths, PIL images or uint8 tensors")


# ----------------------------------------------------------------------------- command line

def list_images(inputs: Iterable[str | os.PathLike]) -> list[Path]:
    """Files as given, folders as their image files (sorted by name, not recursive)."""
    paths: list[Path] = []
    for item in map(Path, inputs):
        if item.is_dir():
            found = sorted(p for p in item.iterdir() if p.is_file() and is_image_name(p.name))
            if not found:
                raise DatasetError(f"{item}: no images in this folder (.jpg, .jpeg, .png, .bmp); pass another")
            paths += found
        elif item.exists():
            paths.append(item)
        else:
            raise DatasetError(f"{item}: no such file or folder; pass image files or folders of images")
    return paths


def embed_files(embedder: Embedder, paths: Sequence[Path], batch_size: int | None = None,
                skip_bad: bool = False, progress: bool = False) -> tuple[np.ndarray, list[str]]:
    """Features (N, D) float32 of the readable ``paths`` and their names, in order.

    An unreadable or non-image file is a DatasetError naming it; with ``skip_bad`` it is
    reported on stderr and left out.
    """
    from tqdm import tqdm

    size = tuple(embedder.cfg.data.cache_size)
    feats, names = [], []
    with tqdm(total=len(paths), desc="embed", unit="img", disable=None if progress else True) as bar:
        for start in range(0, len(paths), CHUNK):
            images = []
            for path in paths[start : start + CHUNK]:
                try:
                    images.append(decode_image(str(path), size).transpose(2, 0, 1))
                    names.append(str(path))
                except DatasetError as e:
                    if not skip_bad:
                        raise DatasetError(f"{e}, or pass --skip-bad to leave it out") from e
                    print(f"skipped {e}", file=sys.stderr)
                bar.update()
            if images:
                feats.append(embedder.embed(torch.from_numpy(np.stack(images)), batch_size).numpy())
    if not feats:
        raise DatasetError("none of the images could be read; see the files named above")
    return np.concatenate(feats), names


def write_embeddings(out: Path, features: np.ndarray, names: list[str]) -> list[Path]:
    """``.npy`` (+ the names, one a line, in a ``.txt`` of the same stem) or ``.mat``
    (keys ``features`` N x D, ``names`` N x 1 cell); returns the files written."""
    if out.suffix == ".npy":
        names_file = out.with_suffix(".txt")
        atomic_write_with(out, lambda f: np.save(f, features, allow_pickle=False))
        atomic_write_text(names_file, "".join(f"{n}\n" for n in names))
        return [out, names_file]
    atomic_savemat(out, {"features": features, "names": np.array(names, dtype=object).reshape(-1, 1)})
    return [out]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m reid.embed",
                                description="Embed images with a trained run's model (the evaluation's feature).")
    p.add_argument("run_dir")
    p.add_argument("images", nargs="+", metavar="IMAGE_OR_FOLDER", help="image files, or folders of them")
    p.add_argument("--out", required=True, help="feats.npy (names in feats.txt) or feats.mat")
    p.add_argument("--checkpoint", default=None, help="default: RUN_DIR/checkpoints/last.pt")
    p.add_argument("--batch-size", type=int, default=None, help="default: the run's eval.batch_size")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--skip-bad", action="store_true", help="leave out unreadable images (named on stderr)")
    p.add_argument("--debug", action="store_true")
    args = p.parse_args(argv)

    def body() -> int:
        out = Path(args.out)
        if out.suffix not in OUTPUT_SUFFIXES:
            raise ReidError(f"--out {out}: give a file name ending in {' or '.join(OUTPUT_SUFFIXES)}")
        if args.batch_size is not None and args.batch_size < 1:
            raise ReidError(f"--batch-size {args.batch_size}: give a positive number")
        embedder = load_model(args.run_dir, args.checkpoint, args.device)
        paths = list_images(args.images)
        features, names = embed_files(embedder, paths, args.batch_size, args.skip_bad, progress=sys.stderr.isatty())
        written = write_embeddings(out, features, names)
        print(f"{len(names)} images embedded ({features.shape[1]}-d, L2-normalised): "
              f"{', '.join(map(str, written))}")
        return 0

    return run_main(body, debug=args.debug)


if __name__ == "__main__":
    sys.exit(main())
