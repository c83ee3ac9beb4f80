"""Batched augmentation of uint8 image tensors on the training device.

The classic re-ID pipeline (BoT, torchreid) transforms one PIL image at a time: Resize ->
RandomHorizontalFlip -> Pad -> RandomCrop -> ToTensor -> Normalize -> RandomErasing.
:class:`BatchAugment` does the same to a whole batch of cached uint8 images on their device.

Randomness: every random parameter of a batch is drawn from the CPU generator that
is passed in, normally ``batch_generator(seed, epoch, step)``, in a fixed order and
always for every sample (also when a probability is 0), so a batch's choices depend
only on (seed, epoch, step) and the batch size, never on the device or on which
options are on. A resumed run therefore replays exactly the same augmentation.

Example::

    >>> aug = BatchAugment(size=(256, 128), flip_p=0.5, pad=10, erasing_p=0.5)
    >>> x = aug(cache[batch_indices].cuda(), batch_generator(seed, epoch, step))  # float32 (B, 3, 256, 128)
    >>> q = eval_transform(query_images, (256, 128))                               # resize + normalise only
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, fields

import numpy as np
import torch
import torch.nn.functional as F


IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
ERASING_TRIES = 100  # BoT's RandomErasing redraws a box that does not fit up to 100 times


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


def normalize(images: torch.Tensor, channels_last: bool = False) -> torch.Tensor:
    """uint8 (B, 3, H, W) -> float32 ``(x / 255 - mean) / std`` with the ImageNet statistics.

    Computed as ``float32(x) * scale + bias`` in float32: two roundings, the same bits on every
    device. The result is laid out channels-last when asked (any input layout; the layout
    change happens in the same pass as the conversion).
    """
    scale, bias = _norm_tensors(images.device)
    layout = torch.channels_last if channels_last else torch.contiguous_format
    out = torch.empty(images.shape, dtype=torch.float32, device=images.device, memory_format=layout)
    return out.copy_(images).mul_(scale).add_(bias)


@functools.lru_cache(maxsize=None)
def _norm_tensors(device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """float32 per-channel ``1 / (255 std)`` and ``-mean / std`` (computed in float64), kept on ``device``."""
    std = torch.tensor(IMAGENET_STD, dtype=torch.float64).view(1, 3, 1, 1)
    mean = torch.tensor(IMAGENET_MEAN, dtype=torch.float64).view(1, 3, 1, 1)
    return (1 / (255 * std)).float().to(device), (-mean / std).float().to(device)


def eval_transform(images: torch.Tensor, size: tuple[int, int] = (256, 128),
                   channels_last: bool = False) -> torch.Tensor:
    """What evaluation and the val curves see: resize + normalise, no randomness.

    Example::

        >>> x = eval_transform(cache[:64], (256, 128))   # float32 (64, 3, 256, 128)
    """
    return normalize(resize_images(images, size), channels_last)


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

    def __len__(self) -> int:
        return int(self.flip.shape[0])

    def slice(self, lo: int, hi: int) -> "AugmentParams":
        """The params of samples ``lo .. hi-1`` (e.g. one torchrun rank's shard of a global batch).

        Example::

            >>> p = aug.sample_params(global_batch, batch_generator(seed, epoch, step))  # same on every rank
            >>> x = aug.apply(local_images, p.slice(rank * local_batch, (rank + 1) * local_batch))
        """
        lo, hi, _ = slice(lo, hi).indices(len(self))
        return AugmentParams(*(getattr(self, f.name)[lo:hi] for f in fields(self)))

    def to(self, device: torch.device) -> "AugmentParams":
        """The same params on ``device``, in one host-to-device copy that does not wait for the device."""
        if self.flip.device == torch.device(device):
            return self
        return AugmentParams.unpack(async_to(self.pack(), torch.device(device)))

    def pack(self) -> torch.Tensor:
        """All fields as the rows of one int64 tensor (8, B)."""
        return torch.stack([getattr(self, f.name).long() for f in fields(self)])

    @staticmethod
    def unpack(packed: torch.Tensor) -> "AugmentParams":
        return AugmentParams(*(row.bool() if f.name in ("flip", "erase") else row
                               for f, row in zip(fields(AugmentParams), packed)))


class BatchAugment:
    """Resize, horizontal flip, zero pad + random crop, random erasing and ImageNet normalisation of a batch.

    ``aug(images, generator)`` takes uint8 images (B, 3, h, w) on any device and
    returns float32 (B, 3, H, W) on the same device, where (H, W) = ``size``. The
    order is the classic one: resize, flip (probability ``flip_p``), pad ``pad``
    zero pixels on each side and crop back to (H, W) at a random offset, normalise,
    then random erasing. Padded pixels are black before normalisation, as with
    torchvision's ``Pad``. One implementation serves every device: a batched gather
    of the flipped, shifted pixels, one normalising pass, and the erased boxes as one
    masked write; no host synchronisation, so it runs ahead of the GPU.

    Random erasing (probability ``erasing_p``), sampled as BoT's ``RandomErasing``: area
    fraction uniform in ``erasing_area``, aspect ratio (height / width) uniform in
    ``erasing_ratio``, sides rounded, redrawn up to 100 times until the box fits strictly
    inside the image (else nothing is erased), then a uniform position. The box is filled
    with 0 after normalisation, i.e. the ImageNet mean colour; this is torchvision's
    ``RandomErasing`` default (BoT fills the already normalised tensor with the mean, a
    colour close to black, instead).

    Layout: the result is channels-last in memory with ``channels_last=True`` (what a
    channels-last model reads, produced in the normalising pass), else contiguous.

    Sharding (torchrun): ``aug(images, g)`` is ``aug.apply(images, aug.sample_params(len(images), g))``;
    each rank draws the params of the *global* batch and applies ``params.slice(lo, hi)`` to its
    rows ``lo..hi-1``, which gives exactly those rows of the whole-batch result.

    Example::

        >>> aug = BatchAugment((256, 128), flip_p=0.5, pad=10, erasing_p=0.5)
        >>> x = aug(cache[idx].cuda(), batch_generator(seed, epoch, step))
        >>> x = aug.apply(cache, aug.sample_params(len(idx), g), index=idx)  # gathered inside, same result
    """

    def __init__(self, size: tuple[int, int] = (256, 128), flip_p: float = 0.5, pad: int = 10,
                 erasing_p: float = 0.0, erasing_area: tuple[float, float] = (0.02, 0.4),
                 erasing_ratio: tuple[float, float] = (0.3, 3.33), channels_last: bool = False) -> None:
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
        self.channels_last = bool(channels_last)

    def __repr__(self) -> str:
        return (f"BatchAugment(size={self.size}, flip_p={self.flip_p}, pad={self.pad}, erasing_p={self.erasing_p}, "
                f"erasing_area={self.erasing_area}, erasing_ratio={self.erasing_ratio}, channels_last={self.channels_last})")

    def sample_params(self, batch_size: int, generator: torch.Generator) -> AugmentParams:
        """Draw every random choice for a batch, in a fixed order, on the CPU."""
        B, (H, W), g = batch_size, self.size, generator
        u_flip = torch.rand(B, generator=g, dtype=torch.float64)
        oy = torch.randint(0, 2 * self.pad + 1, (B,), generator=g)
        ox = torch.randint(0, 2 * self.pad + 1, (B,), generator=g)
        u_erase = torch.rand(B, generator=g, dtype=torch.float64)
        u_area, u_ratio = torch.rand(2, B, ERASING_TRIES, generator=g, dtype=torch.float64)
        u_y, u_x = torch.rand(2, B, generator=g, dtype=torch.float64)
        (a0, a1), (r0, r1) = self.erasing_area, self.erasing_ratio
        area = (a0 + (a1 - a0) * u_area) * (H * W)
        ratio = r0 + (r1 - r0) * u_ratio
        h, w = torch.sqrt(area * ratio).round().long(), torch.sqrt(area / ratio).round().long()  # half to even
        fits = (h < H) & (w < W)
        first = fits.long().argmax(1, keepdim=True)  # the first try that fits
        eh, ew = h.gather(1, first).squeeze(1), w.gather(1, first).squeeze(1)
        ey = (u_y * (H - eh + 1)).floor().long()
        ex = (u_x * (W - ew + 1)).floor().long()
        erase = (u_erase < self.erasing_p) & fits.any(1)
        return AugmentParams(u_flip < self.flip_p, oy, ox, erase, ey, ex, eh, ew)

    def __call__(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """``self.apply(images, self.sample_params(len(images), generator))``."""
        _check_images(images)
        return self.apply(images, self.sample_params(images.shape[0], generator))

    def apply(self, images: torch.Tensor, params: AugmentParams, *, index: torch.Tensor | None = None) -> torch.Tensor:
        """Augment ``images`` (uint8, B x 3 x h x w) with given ``params`` (of length B); float32 result.

        With ``index`` (a 1-D integer tensor of length B), ``images`` is the whole cache and
        sample ``i`` is ``images[index[i]]``: the same result as ``apply(images[index], params)``,
        gathered straight from the cache when it is already at ``size``.

        For a global batch cut into contiguous shards (torchrun), every rank draws the
        global batch's params from the same generator and applies its slice: the rows are
        exactly those of the whole-batch result.

        Example::

            >>> p = aug.sample_params(256, batch_generator(seed, epoch, step))
            >>> x = aug.apply(images[64:128], p.slice(64, 128))   # == aug(images, g)[64:128]
        """
        _check_images(images)
        n = images.shape[0] if index is None else int(index.shape[0])
        if len(params) != n:
            raise ValueError(f"params are for {len(params)} samples but the batch has {n}; "
                             "pass params.slice(lo, hi) for a shard")
        if index is not None:
            index = async_to(index, images.device)
        if tuple(images.shape[-2:]) != self.size:
            images = resize_images(images if index is None else images[index], self.size)
            index = None
        p = params.to(images.device)
        out = normalize(_flip_pad_crop(images, p, self.pad, index).permute(0, 3, 1, 2), self.channels_last)
        _erase(out, p)
        return out


def _flip_pad_crop(images: torch.Tensor, p: AugmentParams, pad: int, index: torch.Tensor | None) -> torch.Tensor:
    """uint8 (B, H, W, 3): crop(pad(flip(images[index]))) of every sample as one batched gather.

    Output pixel (y, x) of sample i is pixel (y + offset_y - pad, x + offset_x - pad) of the
    (flipped) padded image; pixels that fall in the padding read a clamped neighbour and are
    then set to 0, the black of ``Pad``. ``p`` lives on the images' device.
    """
    _, _, H, W = images.shape
    dev = images.device
    rows = (p.offset_y - pad)[:, None] + torch.arange(H, device=dev)  # (B, H) source rows
    cols = (p.offset_x - pad)[:, None] + torch.arange(W, device=dev)  # (B, W) columns of the flipped image
    cols = torch.where(p.flip[:, None], W - 1 - cols, cols)
    outside = ((rows < 0) | (rows >= H))[:, :, None] | ((cols < 0) | (cols >= W))[:, None, :]  # (B, H, W)
    samples = torch.arange(len(p), device=dev) if index is None else index
    out = images[samples[:, None, None], :, rows.clamp(0, H - 1)[:, :, None], cols.clamp(0, W - 1)[:, None, :]]
    return out.masked_fill_(outside[..., None], 0)


def _erase(out: torch.Tensor, p: AugmentParams) -> None:
    """Fill each erased sample's box with 0 (the ImageNet mean after normalisation), in place."""
    _, _, H, W = out.shape
    dev = out.device
    r, c = torch.arange(H, device=dev)[None, :], torch.arange(W, device=dev)[None, :]
    in_rows = (r >= p.erase_y[:, None]) & (r < (p.erase_y + p.erase_h)[:, None]) & p.erase[:, None]
    in_cols = (c >= p.erase_x[:, None]) & (c < (p.erase_x + p.erase_w)[:, None])
    out.masked_fill_((in_rows[:, :, None] & in_cols[:, None, :])[:, None], 0.0)


def _check_images(images: torch.Tensor) -> None:
    if images.dtype != torch.uint8 or images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"BatchAugment expects uint8 images (B, 3, h, w), got {images.dtype} {tuple(images.shape)}")


def async_to(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    """``t.to(device)`` without a host synchronisation: CPU -> CUDA goes through pinned memory.

    A plain ``.to("cuda")`` of a pageable tensor waits for the copy, and so for every kernel
    queued before it; per training step that would stall the GPU.
    """
    if device.type == "cuda" and t.device.type == "cpu":
        return t.pin_memory().to(device, non_blocking=True)
    return t.to(device)
