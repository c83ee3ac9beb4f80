"""Batched augmentation of uint8 image tensors on the training device.

The classic re-ID pipeline (BoT, torchreid) transforms one PIL image at a time:
Resize -> RandomHorizontalFlip -> Pad -> RandomCrop -> ToTensor -> Normalize ->
RandomErasing. :class:`BatchAugment` does the same to a whole batch of the cached
uint8 images at once, on whatever device they live on (the GPU during training).

Randomness: every random parameter of a batch is drawn from the CPU generator that
is passed in, normally ``batch_generator(seed, epoch, step)``, in a fixed order and
always for every sample (also when a probability is 0), so a batch's choices depend
only on (seed, epoch, step) and the batch size, never on the device or on which
options are on. A resumed run therefore replays exactly the same augmentation.

Example::

    >>> aug = BatchAugment(size=(256, 128), flip_p=0.5, pad=10, erasing_p=0.5)
    >>> images = cache[batch_indices].to("cuda", non_blocking=True)    # uint8 (B, 3, 128, 64)
    >>> x = aug(images, batch_generator(seed, epoch, step))              # float32 (B, 3, 256, 128)
    >>> q = eval_transform(query_images, (256, 128))                     # resize + normalise only
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def batch_generator(seed: int, epoch: int, step: int) -> torch.Generator:
    """A CPU generator seeded from (seed, epoch, step) through numpy's SeedSequence.

    Nearby triples give unrelated streams (no ``seed + step`` collisions).

    Example::

        >>> g = batch_generator(0, 1, 0)
        >>> torch.rand(2, generator=g)   # the same numbers for (0, 1, 0), every time, everywhere
    """
    state = np.random.SeedSequence([int(seed), int(epoch), int(step)]).generate_state(2, np.uint32)
    return torch.Generator().manual_seed((int(state[0]) << 31) ^ int(state[1]))


def resize_images(images: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear resize (antialiased when shrinking) of uint8 images (B, 3, h, w) to ``size``; stays uint8.

    Returns ``images`` itself when the size already matches. On the CPU this uses
    PyTorch's native uint8 kernel; elsewhere it computes in float32 and rounds, so CPU
    and CUDA results can differ by one grey level (the random choices never differ).
    Resize the whole cache once with this (``resize_images(cache, (256, 128))``)
    to take the resize out of every batch.
    """
    size = (int(size[0]), int(size[1]))
    if tuple(images.shape[-2:]) == size:
        return images
    if images.device.type == "cpu":
        x = images.contiguous(memory_format=torch.channels_last)  # the fast uint8 path is channels-last
        return F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True).contiguous()
    x = F.interpolate(images.float(), size=size, mode="bilinear", align_corners=False, antialias=True)
    return x.round_().clamp_(0, 255).to(torch.uint8)


def normalize(images: torch.Tensor) -> torch.Tensor:
    """uint8 (B, 3, H, W) -> float32 ``(x / 255 - mean) / std`` with the ImageNet statistics."""
    dev = images.device
    scale = (1.0 / (255.0 * torch.tensor(IMAGENET_STD, dtype=torch.float64))).float().view(1, 3, 1, 1).to(dev)
    bias = (-torch.tensor(IMAGENET_MEAN, dtype=torch.float64) / torch.tensor(IMAGENET_STD, dtype=torch.float64))
    bias = bias.float().view(1, 3, 1, 1).to(dev)
    # empty + copy_ is ~3x faster than .to(float32) on the CPU; then two in-place passes
    out = torch.empty(images.shape, dtype=torch.float32, device=dev)
    out.copy_(images)
    return out.mul_(scale).add_(bias)


def eval_transform(images: torch.Tensor, size: tuple[int, int] = (256, 128)) -> torch.Tensor:
    """What evaluation and the val curves see: resize + normalise, no randomness.

    Example::

        >>> x = eval_transform(cache[:64], (256, 128))   # float32 (64, 3, 256, 128)
    """
    return normalize(resize_images(images, size))


@dataclass
class AugmentParams:
    """The random choices for one batch (CPU tensors of length B)."""

    flip: torch.Tensor      # bool
    offset_y: torch.Tensor  # crop offset in the padded image, 0..2*pad
    offset_x: torch.Tensor
    erase: torch.Tensor     # bool
    erase_y: torch.Tensor   # top-left corner and size of the erased box
    erase_x: torch.Tensor
    erase_h: torch.Tensor
    erase_w: torch.Tensor


class BatchAugment:
    """Resize, horizontal flip, zero pad + random crop, random erasing and ImageNet normalisation of a batch.

    ``aug(images, generator)`` takes uint8 images (B, 3, h, w) on any device and
    returns float32 (B, 3, H, W) on the same device, where (H, W) = ``size``. The
    order is the classic one: resize, flip (probability ``flip_p``), pad ``pad``
    zero pixels on each side and crop back to (H, W) at a random offset, normalise,
    then random erasing. Padded pixels are black before normalisation, as with
    torchvision's ``Pad``.

    Random erasing (probability ``erasing_p``): area fraction uniform in
    ``erasing_area``, aspect ratio log-uniform in ``erasing_ratio``, one draw per
    sample, the box clipped to the image (torchvision retries up to 10 times instead).
    The box is filled with 0 after normalisation, i.e. the ImageNet mean colour;
    this is torchvision's ``RandomErasing`` default (BoT fills the already
    normalised tensor with the mean, a colour close to black, instead).

    Example::

        >>> aug = BatchAugment((256, 128), flip_p=0.5, pad=10, erasing_p=0.5)
        >>> x = aug(cache[idx].cuda(), batch_generator(seed, epoch, step))
    """

    def __init__(self, size: tuple[int, int] = (256, 128), flip_p: float = 0.5, pad: int = 10,
                 erasing_p: float = 0.0, erasing_area: tuple[float, float] = (0.02, 0.4),
                 erasing_ratio: tuple[float, float] = (0.3, 3.3)) -> None:
        if not (0 <= flip_p <= 1 and 0 <= erasing_p <= 1):
            raise ValueError(f"flip_p={flip_p} and erasing_p={erasing_p} must be probabilities in [0, 1]")
        if pad < 0:
            raise ValueError(f"pad={pad} must be 0 or more")
        if not (0 < erasing_area[0] <= erasing_area[1] <= 1 and 0 < erasing_ratio[0] <= erasing_ratio[1]):
            raise ValueError(f"erasing_area={erasing_area} must be within (0, 1] and erasing_ratio={erasing_ratio} "
                             "positive, each as (low, high)")
        self.size = (int(size[0]), int(size[1]))
        self.flip_p = float(flip_p)
        self.pad = int(pad)
        self.erasing_p = float(erasing_p)
        self.erasing_area = (float(erasing_area[0]), float(erasing_area[1]))
        self.erasing_ratio = (float(erasing_ratio[0]), float(erasing_ratio[1]))

    def __repr__(self) -> str:
        return (f"BatchAugment(size={self.size}, flip_p={self.flip_p}, pad={self.pad}, erasing_p={self.erasing_p}, "
                f"erasing_area={self.erasing_area}, erasing_ratio={self.erasing_ratio})")

    def sample_params(self, batch_size: int, generator: torch.Generator) -> AugmentParams:
        """Draw every random choice for a batch, in a fixed order, on the CPU."""
        B, (H, W), g = batch_size, self.size, generator
        u_flip = torch.rand(B, generator=g, dtype=torch.float64)
        oy = torch.randint(0, 2 * self.pad + 1, (B,), generator=g)
        ox = torch.randint(0, 2 * self.pad + 1, (B,), generator=g)
        u_erase = torch.rand(B, generator=g, dtype=torch.float64)
        u_area, u_ratio, u_y, u_x = torch.rand(4, B, generator=g, dtype=torch.float64)
        area = (self.erasing_area[0] + u_area * (self.erasing_area[1] - self.erasing_area[0])) * (H * W)
        lo, hi = math.log(self.erasing_ratio[0]), math.log(self.erasing_ratio[1])
        ratio = torch.exp(lo + u_ratio * (hi - lo))  # height / width
        eh = torch.sqrt(area * ratio).round().clamp(1, H).long()
        ew = torch.sqrt(area / ratio).round().clamp(1, W).long()
        ey = (u_y * (H - eh + 1)).floor().long().clamp(max=H - 1)
        ex = (u_x * (W - ew + 1)).floor().long().clamp(max=W - 1)
        return AugmentParams(u_flip < self.flip_p, oy, ox, u_erase < self.erasing_p, ey, ex, eh, ew)

    def __call__(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        if images.dtype != torch.uint8 or images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"BatchAugment expects uint8 images (B, 3, h, w), got {images.dtype} {tuple(images.shape)}")
        p = self.sample_params(images.shape[0], generator)
        x = resize_images(images, self.size)
        if images.device.type == "cpu":  # a slice copy per sample beats any gather on the CPU
            x = _flip_pad_crop_loop(x, p, self.pad)
            out = normalize(x)
            _erase_loop(out, p)
        else:  # one batched gather / masked fill: few kernel launches
            x = _flip_pad_crop_gather(x, p, self.pad)
            out = normalize(x)
            _erase_mask(out, p)
        return out


def _flip_pad_crop_loop(x: torch.Tensor, p: AugmentParams, pad: int) -> torch.Tensor:
    """crop(pad(flip(x))) per sample by copying the overlapping slice into a zero batch."""
    B, _, H, W = x.shape
    flipped = x.flip(-1) if bool(p.flip.any()) else x
    out = torch.zeros_like(x)
    for i, (f, oy, ox) in enumerate(zip(p.flip.tolist(), p.offset_y.tolist(), p.offset_x.tolist())):
        sy, sx = oy - pad, ox - pad  # output pixel (r, c) shows source pixel (r + sy, c + sx)
        if abs(sy) >= H or abs(sx) >= W:
            continue  # the crop shows only padding
        src = flipped if f else x
        out[i, :, max(0, -sy):H - max(0, sy), max(0, -sx):W - max(0, sx)] = \
            src[i, :, max(0, sy):H - max(0, -sy), max(0, sx):W - max(0, -sx)]
    return out


def _flip_pad_crop_gather(x: torch.Tensor, p: AugmentParams, pad: int) -> torch.Tensor:
    """The same as :func:`_flip_pad_crop_loop` as one batched gather (for accelerators)."""
    B, C, H, W = x.shape
    dev = x.device
    rows = (p.offset_y - pad)[:, None] + torch.arange(H)  # (B, H) source rows
    cols = (p.offset_x - pad)[:, None] + torch.arange(W)  # (B, W) columns of the flipped image
    cols = torch.where(p.flip[:, None], W - 1 - cols, cols)
    valid = ((rows >= 0) & (rows < H))[:, :, None] & ((cols >= 0) & (cols < W))[:, None, :]  # (B, H, W)
    rows, cols, valid = rows.clamp(0, H - 1).to(dev), cols.clamp(0, W - 1).to(dev), valid.to(dev)
    b = torch.arange(B, device=dev)[:, None, None]
    out = x[b, :, rows[:, :, None], cols[:, None, :]]  # (B, H, W, C)
    out = out * valid[..., None].to(out.dtype)
    return out.permute(0, 3, 1, 2).contiguous()


def _erase_loop(out: torch.Tensor, p: AugmentParams) -> None:
    for i in p.erase.nonzero().flatten().tolist():
        y, x, h, w = int(p.erase_y[i]), int(p.erase_x[i]), int(p.erase_h[i]), int(p.erase_w[i])
        out[i, :, y:y + h, x:x + w] = 0.0


def _erase_mask(out: torch.Tensor, p: AugmentParams) -> None:
    B, _, H, W = out.shape
    dev = out.device
    ey, ex, eh, ew, on = (t.to(dev) for t in (p.erase_y, p.erase_x, p.erase_h, p.erase_w, p.erase))
    r, c = torch.arange(H, device=dev)[None, :], torch.arange(W, device=dev)[None, :]
    in_rows = (r >= ey[:, None]) & (r < (ey + eh)[:, None]) & on[:, None]
    in_cols = (c >= ex[:, None]) & (c < (ex + ew)[:, None])
    out.masked_fill_((in_rows[:, :, None] & in_cols[:, None, :])[:, None], 0.0)


def classic_transform(size: tuple[int, int] = (256, 128), pad: int = 10, flip_p: float = 0.5):
    """The classic per-image torchvision pipeline (the benchmark's baseline): PIL image -> float tensor.

    Resize -> RandomHorizontalFlip -> Pad -> RandomCrop -> ToTensor -> Normalize.

    Example::

        >>> t = classic_transform((256, 128))
        >>> t(Image.open("0002_c1s1_000451_03.jpg").convert("RGB")).shape
        torch.Size([3, 256, 128])
    """
    import torchvision.transforms as T

    return T.Compose([
        T.Resize(tuple(size), interpolation=T.InterpolationMode.BILINEAR),
        T.RandomHorizontalFlip(p=flip_p),
        T.Pad(pad),
        T.RandomCrop(tuple(size)),
        T.ToTensor(),
        T.Normalize(IMAGENET_MEAN, IMAGENET_STD),
    ])
