"""ONNX export of a trained run's retrieval model: ``python -m reid.export RUN_DIR --onnx model.onnx``.

The graph maps ``images``, uint8 RGB (batch, 3, H, W) in 0..255 at the run's
``data.size``, to ``features``, float32 (batch, D) L2-normalised: the ImageNet
normalisation, the ``eval.flip`` average and the L2 normalisation are inside, so the
output is the evaluation's feature of an image already resized to H x W. The batch
dimension is dynamic. Before the file is written, the graph is run with onnxruntime on
a few seeded random images and compared with the PyTorch evaluation path; the largest
absolute difference is printed, and one above ``TOLERANCE`` is an error.

Needs the optional extra: ``pip install -e '.[export]'`` (onnx, onnxruntime).

Example::

    >>> from reid.export import export_onnx
    >>> export_onnx("outputs/soft", "soft.onnx").max_abs_diff
    3.2e-07
"""

from __future__ import annotations

import argparse
import inspect
import io
import os
import sys
import warnings
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from .cli import run_main
from .data.augment import _norm_tensors
from .embed import load_model
from .errors import ReidError
from .evaluation import extract_features, retrieval_feature
from .io import atomic_write_bytes

TOLERANCE = 1e-4
OPSET = 17
CHECK_IMAGES = 4
INSTALL_HINT = "install the export extra: pip install -e '.[export]' (onnx and onnxruntime)"


class ExportGraph(nn.Module):
    """uint8 images (B, 3, H, W) -> the L2-normalised retrieval feature (B, D) of ``model``.

    Example::

        >>> ExportGraph(model.eval(), flip=True)(torch.zeros(2, 3, 256, 128, dtype=torch.uint8)).shape
        torch.Size([2, 512])
    """

    def __init__(self, model: nn.Module, flip: bool) -> None:
        super().__init__()
        self.model = model
        self.flip = flip
        # reid.data.normalize writes into a preallocated tensor (copy_), which the ONNX
        # exporters do not translate; these are its constants and its two float32 roundings.
        scale, bias = _norm_tensors(torch.device("cpu"))
        self.register_buffer("scale", scale.clone(), persistent=False)
        self.register_buffer("bias", bias.clone(), persistent=False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return retrieval_feature(self.model, images.float() * self.scale + self.bias, self.flip)


def require_onnx() -> tuple[object, object]:
    """The ``onnx`` and ``onnxruntime`` modules, or a ReidError saying what to install."""
    try:
        import onnx
        import onnxruntime
    except ImportError as e:
        raise ReidError(f"ONNX export needs the {e.name} package; {INSTALL_HINT}") from e
    return onnx, onnxruntime


def onnx_bytes(graph: nn.Module, example: torch.Tensor) -> bytes:
    """The serialised ONNX model of ``graph`` traced on ``example``, batch dimension dynamic."""
    kwargs = dict(input_names=["images"], output_names=["features"], opset_version=OPSET,
                  dynamic_axes={"images": {0: "batch"}, "features": {0: "batch"}})
    # The TorchScript exporter: in every supported PyTorch (2.3 on) and needing no onnxscript;
    # PyTorch >= 2.9 defaults to the torch.export one, so ask for this one by name there.
    if "dynamo" in inspect.signature(torch.onnx.export).parameters:
        kwargs["dynamo"] = False
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(graph, (example,), buffer, **kwargs)
    return buffer.getvalue()


def random_images(n: int, size: tuple[int, int], seed: int = 0) -> torch.Tensor:
    """``n`` seeded random uint8 images (n, 3, H, W): the check's inputs."""
    return torch.randint(0, 256, (n, 3, *size), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))


def max_difference(model_bytes: bytes, model: nn.Module, images: torch.Tensor, flip: bool) -> float:
    """Largest |onnxruntime - PyTorch| over the features of ``images`` (PyTorch: the evaluation path)."""
    _, ort = require_onnx()
    session = ort.InferenceSession(model_bytes, providers=["CPUExecutionProvider"])
    got = session.run(None, {"images": images.numpy()})[0]
    want = extract_features(model, images, size=tuple(images.shape[-2:]), device="cpu", flip=flip, progress=False)
    return float(np.abs(got - want.numpy()).max())


@dataclass
class OnnxExport:
    """What :func:`export_onnx` wrote and how well it agrees with PyTorch."""

    path: str
    size: tuple[int, int]  # (H, W) of the input images
    feature_dim: int
    flip: bool
    max_abs_diff: float

    def summary(self) -> str:
        h, w = self.size
        return (f"wrote {self.path}: input 'images' uint8 RGB (batch, 3, {h}, {w}) in 0..255, normalisation inside; "
                f"output 'features' float32 (batch, {self.feature_dim}) L2-normalised, eval.flip "
                f"{str(self.flip).lower()}\nchecked against PyTorch on {CHECK_IMAGES} images: "
                f"max abs difference {self.max_abs_diff:.3g}")


def export_onnx(run_dir: str | os.PathLike, out: str | os.PathLike,
                checkpoint: str | os.PathLike | None = None) -> OnnxExport:
    """Write ``run_dir``'s model to ``out`` as ONNX (see the module docstring), checked against PyTorch first.

    Example::

        >>> export_onnx("outputs/soft", "soft.onnx", checkpoint="outputs/soft/checkpoints/last.pt")
    """
    require_onnx()
    embedder = load_model(run_dir, checkpoint, device="cpu")
    flip = embedder.cfg.eval.flip
    graph = ExportGraph(embedder.model, flip).eval()
    size = tuple(embedder.cfg.data.size)
    model_bytes = onnx_bytes(graph, random_images(2, size, seed=1))
    diff = max_difference(model_bytes, embedder.model, random_images(CHECK_IMAGES, size), flip)
    if not diff <= TOLERANCE:
        raise ReidError(f"the ONNX model of {run_dir} differs from PyTorch by up to {diff:.3g} (more than "
                        f"{TOLERANCE:g}) on {CHECK_IMAGES} images; {out} was not written")
    atomic_write_bytes(out, model_bytes)
    return OnnxExport(str(out), size, embedder.feature_dim, flip, diff)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m reid.export", description="Export a run's model to ONNX.")
    p.add_argument("run_dir")
    p.add_argument("--onnx", required=True, metavar="FILE", help="the .onnx file to write")
    p.add_argument("--checkpoint", default=None, help="default: RUN_DIR/checkpoints/last.pt")
    p.add_argument("--debug", action="store_true")
    args = p.parse_args(argv)

    def body() -> int:
        print(export_onnx(args.run_dir, args.onnx, args.checkpoint).summary())
        return 0

    return run_main(body, debug=args.debug)


if __name__ == "__main__":
    sys.exit(main())
