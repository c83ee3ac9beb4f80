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
import threading
from dataclasses import dataclass, fields

import numpy as np
import torch
import torch.nn.functional as F

from . import cpu_kernel

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


def _norm_constants() -> tuple[list[float], list[float]]:
    """float32 per-channel ``1 / (255 std)`` and ``-mean / std`` (as Python floats holding float32 values)."""
    std, mean = torch.tensor(IMAGENET_STD, dtype=torch.float64), torch.tensor(IMAGENET_MEAN, dtype=torch.float64)
    return (1.0 / (255.0 * std)).float().tolist(), (-mean / std).float().tolist()


_SCALE, _BIAS = _norm_constants()


def normalize(images: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """uint8 (B, 3, H, W) -> float32 ``(x / 255 - mean) / std`` with the ImageNet statistics.

    Computed as ``float32(x) * scale + bias`` in float32 (two roundings), into ``out`` when given.
    """
    if out is None:
        out = torch.empty(images.shape, dtype=torch.float32, device=images.device)
    # copy_ (u8 -> f32) then two in-place passes: the fastest exact form on the CPU (a mixed-dtype
    # multiply, addcmul or per-channel scalar ops were all slower when measured)
    scale, bias = _norm_tensors(images.device)
    return out.copy_(images).mul_(scale).add_(bias)


_NORM_TENSORS: dict = {}


def _norm_tensors(device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    key = str(device)
    if key not in _NORM_TENSORS:
        _NORM_TENSORS[key] = (torch.tensor(_SCALE).view(1, 3, 1, 1).to(device),
                              torch.tensor(_BIAS).view(1, 3, 1, 1).to(device))
    return _NORM_TENSORS[key]


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
    torchvision's ``Pad``.

    Random erasing (probability ``erasing_p``): area fraction uniform in
    ``erasing_area``, aspect ratio log-uniform in ``erasing_ratio``, one draw per
    sample, the box clipped to the image (torchvision retries up to 10 times instead).
    The box is filled with 0 after normalisation, i.e. the ImageNet mean colour;
    this is torchvision's ``RandomErasing`` default (BoT fills the already
    normalised tensor with the mean, a colour close to black, instead).

    Sharding (torchrun): ``aug(images, g)`` is ``aug.apply(images, aug.sample_params(len(images), g))``;
    each rank draws the params of the *global* batch and applies ``params.slice(lo, hi)`` to its
    rows ``lo..hi-1``, which gives exactly those rows of the whole-batch result.

    CPU (``fused``): a C kernel (:mod:`reid.data.cpu_kernel`, built on first use) does all of it in
    one pass, bit for bit what the PyTorch ops give; those ops run instead with ``fused=False`` or
    where no C compiler is found.

    Output buffers (``ring``, CPU only): with ``ring=0`` (the default) every call returns a new
    tensor. With ``ring=n > 0`` the CPU path writes into ``n`` preallocated outputs per batch shape,
    used in turn (per thread), which saves allocating and page-faulting 25 MB per batch of 64 at
    256x128: **a result stays valid until ``n`` more calls of the same shape** (``ring=2``: the
    trainer can hold the previous batch while the next is built); ``.clone()`` what you keep
    longer. On accelerators a new tensor is always returned (the caching allocator already reuses
    memory, and stream ordering stays safe). The results are the same either way.

    Example::

        >>> aug = BatchAugment((256, 128), flip_p=0.5, pad=10, erasing_p=0.5)
        >>> x = aug(cache[idx].cuda(), batch_generator(seed, epoch, step))
        >>> cpu_aug = BatchAugment((256, 128), erasing_p=0.5, ring=2)
        >>> x = cpu_aug.apply(cache, cpu_aug.sample_params(len(idx), g), index=idx)  # no gathered copy
    """

    def __init__(self, size: tuple[int, int] = (256, 128), flip_p: float = 0.5, pad: int = 10,
                 erasing_p: float = 0.0, erasing_area: tuple[float, float] = (0.02, 0.4),
                 erasing_ratio: tuple[float, float] = (0.3, 3.3), ring: int = 0, fused: bool = True) -> None:
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
        if ring < 0:
            raise ValueError(f"ring={ring} must be 0 (a new tensor per call) or more")
        self.ring = int(ring)
        self.fused = bool(fused)

    def __getstate__(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k != "_tls"}  # buffers are per process and thread

    def __repr__(self) -> str:
        return (f"BatchAugment(size={self.size}, flip_p={self.flip_p}, pad={self.pad}, erasing_p={self.erasing_p}, "
                f"erasing_area={self.erasing_area}, erasing_ratio={self.erasing_ratio}, ring={self.ring}, "
                f"fused={self.fused})")

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
        """``self.apply(images, self.sample_params(len(images), generator))``."""
        _check_images(images)
        return self.apply(images, self.sample_params(images.shape[0], generator))

    def apply(self, images: torch.Tensor, params: AugmentParams, *, index: torch.Tensor | None = None) -> torch.Tensor:
        """Augment ``images`` (uint8, B x 3 x h x w) with given ``params`` (of length B); float32 result.

        With ``index`` (a 1-D integer tensor of length B), ``images`` is the whole cache and
        sample ``i`` is ``images[index[i]]``: the same result as ``apply(images[index], params)``
        without the gathered copy on the CPU.

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
        if images.device.type == "cpu":
            return self._apply_cpu(images, params, index)
        return self._apply_batched(images, params, index)

    def _apply_batched(self, images: torch.Tensor, p: AugmentParams, index: torch.Tensor | None) -> torch.Tensor:
        """The accelerator path: one batched gather and one masked fill, few kernel launches, no host sync."""
        if index is not None:
            images = images[async_to(index, images.device)]
        p = p.to(images.device)
        out = normalize(_flip_pad_crop_gather(resize_images(images, self.size), p, self.pad))
        _erase_mask(out, p)
        return out

    # --- CPU: reused buffers, per-sample slice copies on uint8, one float write ---------------------------

    def _buffers(self) -> dict:
        tls = self.__dict__.get("_tls")
        if tls is None:
            tls = self.__dict__["_tls"] = threading.local()
        if not hasattr(tls, "d"):
            tls.d = {}
        return tls.d

    def _cached(self, key: tuple, make) -> object:
        """A per-thread buffer for ``key`` (a few shapes kept, e.g. full and last partial batches)."""
        d = self._buffers()
        buf = d.get(key)
        if buf is None:
            same_kind = [k for k in d if k[0] == key[0]]
            for k in same_kind[:max(0, len(same_kind) - 3)]:
                del d[k]  # dicts keep insertion order: drop the oldest shapes
            buf = d[key] = make()
        return buf

    def _scratch(self, name: str, shape: tuple[int, ...], dtype: torch.dtype,
                 memory_format: torch.memory_format = torch.contiguous_format) -> torch.Tensor:
        """An internal per-thread buffer, reused while the shape stays the same (never returned)."""
        return self._cached((name, shape, dtype, memory_format),
                            lambda: torch.empty(shape, dtype=dtype, memory_format=memory_format))

    def _output(self, shape: tuple[int, ...]) -> torch.Tensor:
        """The next of ``ring`` preallocated outputs of this shape (a new tensor when ``ring`` is 0)."""
        if self.ring <= 0:
            return torch.empty(shape, dtype=torch.float32)
        slots = self._cached(("ring", shape), lambda: [[torch.empty(shape, dtype=torch.float32)
                                                        for _ in range(self.ring)], 0])
        bufs, k = slots
        slots[1] = (k + 1) % len(bufs)
        return bufs[k]

    def _apply_cpu(self, images: torch.Tensor, p: AugmentParams, index: torch.Tensor | None) -> torch.Tensor:
        """The fused C kernel when it is built (:mod:`reid.data.cpu_kernel`), else PyTorch ops: same bits."""
        if self.fused and len(p) and cpu_kernel.load() is not None:
            return self._apply_cpu_fused(images, p, index)
        return self._apply_cpu_ops(images, p, index)

    def _apply_cpu_fused(self, images: torch.Tensor, p: AugmentParams, index: torch.Tensor | None) -> torch.Tensor:
        """One pass of the C kernel: every output value is written once, from the cached uint8 pixels.

        The shifts are :func:`_shifts`, as in :meth:`_apply_cpu_ops`; a cache at ``size`` is read
        in place, without a gathered copy.
        """
        B, (H, W) = len(p), self.size
        src, rows = self._source_cpu(images, index, B)
        sy, sx = _shifts(p, self.pad)
        box = torch.stack([p.erase_y, p.erase_x, p.erase_h * p.erase, p.erase_w], dim=1)  # h = 0: not erased
        scale, bias = (t.flatten() for t in _norm_tensors(torch.device("cpu")))
        return cpu_kernel.augment_into(self._output((B, 3, H, W)), src, rows, sy, sx, p.flip, box, scale, bias)

    def _apply_cpu_ops(self, images: torch.Tensor, p: AugmentParams, index: torch.Tensor | None) -> torch.Tensor:
        """Flip, pad + crop on uint8 in a few batched ops, then a per-sample float32 pass set.

        The algorithm (one thread):

        1. **Source**: a uint8 tensor at ``size`` (contiguous or channels-last) and each sample's row in
           it: the cache itself when it is already at ``size`` (no gathered copy), else the gathered
           rows, resized (:meth:`_source_cpu`).
        2. **Shift** (:func:`_shifts`): output pixel (y, x) of sample i shows source pixel
           (y + sy, x + sx) of the unflipped image; a flipped sample is mirrored in step 5.
        3. **Crop** (one ``index_select``): window ``k`` of an overlapping strided view of the source is
           the (3, H, W) block starting at flat element ``k``; sample i's crop is the window at
           ``row * 3HW + sy * W + sx`` (contiguous source). Inside the image it reads exactly the crop; pixels that fall in
           the padding read neighbouring memory instead (:func:`_crop_shifted`).
        4. **Pad** (one multiply): a 0/1 uint8 mask of the rows x columns in view zeroes the padding,
           which ``Pad`` makes black (:func:`_view_mask`).
        5. **Per sample**, while its data is in the L2 cache: mirror it if flipped (``flip``), convert
           to float32 into the output, ``mul_(scale).add_(bias)`` (:func:`normalize`, bit for bit), and
           fill its erased box with 0.
        """
        B, (H, W), pad = len(p), self.size, self.pad
        if B == 0:
            return torch.empty((0, 3, H, W), dtype=torch.float32)
        src, rows = self._source_cpu(images, index, B)
        sy, sx = _shifts(p, pad)
        crops = _crop_shifted(src, rows, sy, sx, out=self._scratch("crops", (B, 3, H, W), torch.uint8))
        if pad > 0:
            crops.mul_(_view_mask(sy, sx, H, W, out=self._scratch("mask", (B, 1, H, W), torch.uint8)))
        out = self._output((B, 3, H, W))
        scale, bias = (t[0] for t in _norm_tensors(out.device))
        boxes = {i: (y, x, h, w) for i, on, y, x, h, w in zip(range(B), *(t.tolist() for t in (
            p.erase, p.erase_y, p.erase_x, p.erase_h, p.erase_w))) if on}
        for i, (o, c, flip) in enumerate(zip(out.unbind(0), crops.unbind(0), p.flip.tolist())):
            o.copy_(c.flip(-1) if flip else c).mul_(scale).add_(bias)  # == normalize()
            if i in boxes:
                y, x, h, w = boxes[i]
                o[:, y:y + h, x:x + w].fill_(0.0)
        return out

    def _source_cpu(self, images: torch.Tensor, index: torch.Tensor | None, B: int) -> tuple[torch.Tensor, torch.Tensor]:
        """A uint8 tensor at ``size`` laid out as :func:`_crop_shifted` needs, and the row of each sample in it."""
        H, W = self.size
        if tuple(images.shape[-2:]) != (H, W):
            if index is not None:
                images = torch.index_select(images, 0, index, out=self._scratch(
                    "gather", (B, *images.shape[1:]), torch.uint8))
            images = _resize_cpu_into(images, (H, W), self._scratch(
                "resized", (B, 3, H, W), torch.uint8, torch.channels_last))
            index = None
        if not _dense(images):
            rows = torch.arange(images.shape[0]) if index is None else index
            images = torch.index_select(images, 0, rows, out=self._scratch("rows", (B, 3, H, W), torch.uint8))
            index = None
        return images, (torch.arange(B) if index is None else index)


def _shifts(p: AugmentParams, pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(sy, sx): output pixel (y, x) shows source pixel (y + sy, x + sx) of the *unflipped* image.

    A flipped sample's crop is the mirror image of the unflipped image's crop at column offset
    ``2 * pad - offset_x``, so its column shift is ``pad - offset_x`` (the mirroring comes after).
    """
    return p.offset_y - pad, torch.where(p.flip, pad - p.offset_x, p.offset_x - pad)


def _resize_cpu_into(images: torch.Tensor, size: tuple[int, int], out: torch.Tensor) -> torch.Tensor:
    """:func:`resize_images` on the CPU, written into ``out`` (uint8, channels-last)."""
    x = images.contiguous(memory_format=torch.channels_last)  # the fast uint8 path is channels-last
    torch.ops.aten._upsample_bilinear2d_aa.out(x, list(size), False, None, None, out=out)
    return out


def _crop_shifted(src: torch.Tensor, rows: torch.Tensor, sy: torch.Tensor, sx: torch.Tensor,
                  out: torch.Tensor) -> torch.Tensor:
    """``out[k, :, y, x] = src[rows[k], :, y + sy[k], x + sx[k]]`` wherever that pixel exists.

    ``src`` is (N, 3, H, W) uint8, contiguous or channels-last (:func:`_dense`). Pixels outside the source image hold whatever
    lies there in memory (zero them with :func:`_view_mask`). One ``index_select`` over the
    overlapping windows of ``src`` (window ``k``: the (3, H, W) block starting at flat element
    ``k``); a window starting before the first image or ending after the last is clamped and its
    part in view copied by hand.
    """
    N, C, H, W = src.shape
    n, (_, sc, sh, sw) = C * H * W, src.stride()
    starts = rows.long() * n + sy * sh + sx * sw  # int64: a large cache has more than 2**31 elements
    last = (N - 1) * n  # the last window that ends inside src
    outside = ((starts < 0) | (starts > last)).nonzero().flatten().tolist()
    windows = src.as_strided((last + 1, C, H, W), (1, sc, sh, sw))
    torch.index_select(windows, 0, starts.clamp(0, last), out=out)
    for k in outside:  # a shift past the first or last image: copy the part in view by hand
        _copy_shifted(out[k], src[int(rows[k])], int(sy[k]), int(sx[k]))
    return out


def _dense(x: torch.Tensor) -> bool:
    """Contiguous or channels-last: every image is one block of ``x[0].numel()`` elements."""
    return x.is_contiguous() or x.is_contiguous(memory_format=torch.channels_last)


def _copy_shifted(dst: torch.Tensor, img: torch.Tensor, sy: int, sx: int) -> None:
    """``dst[:, y, x] = img[:, y + sy, x + sx]`` for the pixels in view (the others are left as they are)."""
    H, W = img.shape[-2:]
    if abs(sy) < H and abs(sx) < W:
        dst[:, max(0, -sy):H - max(0, sy), max(0, -sx):W - max(0, sx)] = \
            img[:, max(0, sy):H - max(0, -sy), max(0, sx):W - max(0, -sx)]


def _view_mask(sy: torch.Tensor, sx: torch.Tensor, H: int, W: int, out: torch.Tensor) -> torch.Tensor:
    """uint8 (B, 1, H, W): 1 where output pixel (y, x) shifted by (sy, sx) is inside an H x W image."""
    r, c = torch.arange(H), torch.arange(W)
    in_rows = ((r >= -sy[:, None]) & (r < H - sy[:, None])).to(torch.uint8)
    in_cols = ((c >= -sx[:, None]) & (c < W - sx[:, None])).to(torch.uint8)
    return torch.mul(in_rows[:, None, :, None], in_cols[:, None, None, :], out=out)


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


def _flip_pad_crop_gather(x: torch.Tensor, p: AugmentParams, pad: int) -> torch.Tensor:
    """crop(pad(flip(x))) of every sample as one batched gather (for accelerators); ``p`` on x's device."""
    B, C, H, W = x.shape
    dev = x.device
    rows = (p.offset_y - pad)[:, None] + torch.arange(H, device=dev)  # (B, H) source rows
    cols = (p.offset_x - pad)[:, None] + torch.arange(W, device=dev)  # (B, W) columns of the flipped image
    cols = torch.where(p.flip[:, None], W - 1 - cols, cols)
    valid = ((rows >= 0) & (rows < H))[:, :, None] & ((cols >= 0) & (cols < W))[:, None, :]  # (B, H, W)
    rows, cols = rows.clamp(0, H - 1), cols.clamp(0, W - 1)
    b = torch.arange(B, device=dev)[:, None, None]
    out = x[b, :, rows[:, :, None], cols[:, None, :]]  # (B, H, W, C)
    out = out * valid[..., None].to(out.dtype)
    return out.permute(0, 3, 1, 2).contiguous()


def _erase_mask(out: torch.Tensor, p: AugmentParams) -> None:
    B, _, H, W = out.shape
    dev = out.device
    ey, ex, eh, ew, on = p.erase_y, p.erase_x, p.erase_h, p.erase_w, p.erase  # on out's device
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
