"""Batched augmentation against independent oracles (torch.flip, manual pad + slicing, torchvision)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
import torchvision.transforms as T
from PIL import Image

from reid.data import IMAGENET_MEAN, IMAGENET_STD, BatchAugment, batch_generator, eval_transform
from reid.data import augment as A

MEAN = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
STD = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
tv_normalize = T.Normalize(IMAGENET_MEAN, IMAGENET_STD)


def _images(b=6, h=16, w=8, seed=0):
    return torch.randint(0, 256, (b, 3, h, w), generator=torch.Generator().manual_seed(seed), dtype=torch.uint8)


def _norm(x_uint8):
    return tv_normalize(x_uint8.float() / 255)


def test_batch_generator_is_a_function_of_the_triple():
    def draw(*t):
        return torch.rand(4, generator=batch_generator(*t))

    assert torch.equal(draw(0, 1, 2), draw(0, 1, 2))
    triples = [(0, 1, 2), (0, 1, 3), (0, 2, 2), (1, 1, 2), (0, 2, 1)]
    assert len({tuple(draw(*t).tolist()) for t in triples}) == len(triples)


def test_identity_settings_give_torchvision_normalize():
    x = _images()
    out = BatchAugment((16, 8), flip_p=0, pad=0, erasing_p=0)(x, batch_generator(0, 0, 0))
    assert out.dtype == torch.float32 and out.shape == (6, 3, 16, 8)
    torch.testing.assert_close(out, _norm(x), rtol=0, atol=1e-5)


def test_flip_matches_torch_flip():
    x = _images()
    out = BatchAugment((16, 8), flip_p=1.0, pad=0)(x, batch_generator(0, 0, 0))
    torch.testing.assert_close(out, _norm(torch.flip(x, dims=[3])), rtol=0, atol=1e-5)


def _all_crops(img_norm, pad):
    """Every (2 pad + 1)^2 crop of the zero-padded (black before normalisation) image."""
    h, w = img_norm.shape[-2:]
    black = ((0 - MEAN) / STD)[0]
    padded = black.expand(3, h + 2 * pad, w + 2 * pad).clone()
    padded[:, pad:pad + h, pad:pad + w] = img_norm
    return [padded[:, i:i + h, j:j + w] for i in range(2 * pad + 1) for j in range(2 * pad + 1)]


def test_pad_crop_is_a_slice_of_the_padded_image_and_offsets_vary():
    x = _images(b=12)
    aug = BatchAugment((16, 8), flip_p=0, pad=3)
    out = aug(x, batch_generator(1, 0, 0))
    ref = _norm(x)
    params = aug.sample_params(12, batch_generator(1, 0, 0))
    for i in range(12):
        # against the crop the drawn offsets name, sliced by hand out of F.pad
        padded = F.pad(x[i:i + 1].float(), (3, 3, 3, 3))
        oy, ox = int(params.offset_y[i]), int(params.offset_x[i])
        torch.testing.assert_close(out[i], _norm(padded[:, :, oy:oy + 16, ox:ox + 8].to(torch.uint8))[0], rtol=0, atol=1e-5)
        # and without trusting the offsets: it is one of the possible crops
        assert any(torch.allclose(out[i], c, atol=1e-5) for c in _all_crops(ref[i], 3))
    assert len({(int(a), int(b)) for a, b in zip(params.offset_y, params.offset_x)}) > 3


def test_flip_then_crop_is_a_crop_of_the_image_or_its_mirror():
    x = _images(b=16)
    out = BatchAugment((16, 8), flip_p=0.5, pad=2)(x, batch_generator(2, 3, 4))
    ref, ref_flip = _norm(x), _norm(torch.flip(x, dims=[3]))
    flipped = 0
    for i in range(16):
        plain = any(torch.allclose(out[i], c, atol=1e-5) for c in _all_crops(ref[i], 2))
        mirror = any(torch.allclose(out[i], c, atol=1e-5) for c in _all_crops(ref_flip[i], 2))
        assert plain or mirror
        flipped += mirror and not plain
    assert 0 < flipped < 16


def test_random_erasing_blanks_one_rectangle_to_the_mean_colour():
    x = torch.randint(1, 256, (20, 3, 32, 16), generator=torch.Generator().manual_seed(3), dtype=torch.uint8)
    aug = BatchAugment((32, 16), flip_p=0, pad=0, erasing_p=1.0, erasing_area=(0.1, 0.3), erasing_ratio=(0.5, 2.0))
    out = aug(x, batch_generator(0, 0, 7))
    ref = _norm(x)
    for i in range(20):
        changed = (out[i] - ref[i]).abs().amax(0) > 1e-5
        rows, cols = changed.any(1).nonzero().flatten(), changed.any(0).nonzero().flatten()
        box = torch.zeros_like(changed)
        box[rows.min():rows.max() + 1, cols.min():cols.max() + 1] = True
        assert torch.equal(changed, box)  # one axis-aligned rectangle
        assert (out[i][:, box] == 0).all()  # 0 after normalisation = the ImageNet mean colour
        h, w = len(rows), len(cols)
        assert 0.1 * 512 * 0.7 <= h * w <= 0.3 * 512 * 1.3  # area (rounding of the sides tolerated)
    no_erase = BatchAugment((32, 16), flip_p=0, pad=0, erasing_p=0.0)(x, batch_generator(0, 0, 7))
    torch.testing.assert_close(no_erase, ref, rtol=0, atol=1e-5)


def test_choices_do_not_depend_on_other_options():
    x = _images(b=8)
    a = BatchAugment((16, 8), flip_p=0.5, pad=2, erasing_p=0.0)(x, batch_generator(0, 0, 1))
    b = BatchAugment((16, 8), flip_p=0.5, pad=2, erasing_p=1.0, erasing_area=(0.01, 0.02))(x, batch_generator(0, 0, 1))
    assert ((a - b).abs() > 1e-6).float().mean() < 0.05  # same flips and crops, only small boxes differ


def test_determinism_per_seed_epoch_step():
    x = _images(b=8)
    aug = BatchAugment((32, 16), flip_p=0.5, pad=4, erasing_p=0.5)
    assert torch.equal(aug(x, batch_generator(5, 2, 9)), aug(x, batch_generator(5, 2, 9)))
    assert not torch.equal(aug(x, batch_generator(5, 2, 9)), aug(x, batch_generator(5, 2, 10)))
    assert not torch.equal(aug(x, batch_generator(5, 2, 9)), aug(x, batch_generator(5, 3, 9)))


def test_value_range_shape_and_resize():
    x = _images(b=4, h=16, w=8)
    out = BatchAugment((32, 16), flip_p=0.5, pad=4, erasing_p=0.5)(x, batch_generator(0, 0, 0))
    assert out.shape == (4, 3, 32, 16) and out.dtype == torch.float32 and out.device == x.device
    lo, hi = (0 - MEAN) / STD, (1 - MEAN) / STD
    assert ((out >= lo - 1e-5) & (out <= hi + 1e-5)).all()
    # resize: bilinear like F.interpolate on floats, up to one grey level (the uint8 intermediate)
    plain = BatchAugment((32, 16), flip_p=0, pad=0)(x, batch_generator(0, 0, 0))
    oracle = F.interpolate(x.float(), size=(32, 16), mode="bilinear", align_corners=False)
    torch.testing.assert_close(plain, tv_normalize(oracle / 255), rtol=0, atol=1.01 / 255 / 0.224)
    torch.testing.assert_close(eval_transform(x, (32, 16)), plain, rtol=0, atol=1e-6)


def test_batched_path_matches_the_classic_torchvision_pipeline_without_randomness():
    x = _images(b=3, h=32, w=16)
    classic = T.Compose([T.Resize((64, 32), interpolation=T.InterpolationMode.BILINEAR), T.ToTensor(), tv_normalize])
    ref = torch.stack([classic(Image.fromarray(img.permute(1, 2, 0).numpy())) for img in x])
    ours = BatchAugment((64, 32), flip_p=0, pad=0)(x, batch_generator(0, 0, 0))
    torch.testing.assert_close(ours, ref, rtol=0, atol=1.01 / 255 / 0.224)  # PIL vs torch uint8 rounding


def test_params_travel_to_a_device_in_one_packed_tensor_unchanged():
    p = BatchAugment((32, 16), pad=5, erasing_p=0.5).sample_params(7, batch_generator(0, 1, 2))
    q = A.AugmentParams.unpack(p.pack())
    for name in ("flip", "offset_y", "offset_x", "erase", "erase_y", "erase_x", "erase_h", "erase_w"):
        a, b = getattr(p, name), getattr(q, name)
        assert a.dtype == b.dtype and torch.equal(a, b), name
    assert p.to(torch.device("cpu")) is p


def test_rejects_non_uint8():
    with pytest.raises(ValueError, match="uint8"):
        BatchAugment((16, 8))(torch.zeros(2, 3, 16, 8), batch_generator(0, 0, 0))


def test_call_equals_apply_of_sampled_params():
    x = _images(b=9, h=16, w=8)
    aug = BatchAugment((32, 16), flip_p=0.5, pad=4, erasing_p=0.5)
    whole = aug(x, batch_generator(3, 1, 4))
    assert torch.equal(whole, aug.apply(x, aug.sample_params(9, batch_generator(3, 1, 4))))


@pytest.mark.parametrize("cuts", [(0, 4, 8, 12), (0, 5, 12), (0, 1, 2, 12)])
def test_shards_with_param_slices_give_the_rows_of_the_whole_batch(cuts):
    x = _images(b=12, h=16, w=8, seed=5)
    aug = BatchAugment((32, 16), flip_p=0.5, pad=4, erasing_p=0.7)
    whole = aug(x, batch_generator(7, 2, 3))
    params = aug.sample_params(12, batch_generator(7, 2, 3))
    assert params.erase.any() and params.flip.any() and not params.flip.all()
    for lo, hi in zip(cuts[:-1], cuts[1:]):
        p = params.slice(lo, hi)
        assert len(p) == hi - lo and torch.equal(p.offset_x, params.offset_x[lo:hi])
        assert torch.equal(aug.apply(x[lo:hi].clone(), p), whole[lo:hi])
    with pytest.raises(ValueError, match="slice"):
        aug.apply(x[:4], params)


@pytest.mark.parametrize("cache_hw", [(32, 16), (16, 8)])  # presized cache / resized per batch
def test_index_gives_the_same_values_as_the_plain_call(cache_hw):
    cache = _images(b=30, h=cache_hw[0], w=cache_hw[1], seed=9)
    plain = BatchAugment((32, 16), flip_p=0.5, pad=3, erasing_p=0.5)
    idx = torch.tensor([4, 0, 29, 4, 17, 8, 3])
    for step in range(3):
        p = plain.sample_params(7, batch_generator(1, 2, step))
        want = plain(cache[idx], batch_generator(1, 2, step))
        assert torch.equal(plain.apply(cache, p, index=idx), want)
    if cache_hw != (32, 16):
        return
    # presized: against the oracle (torch.flip, zero pad by F.pad, crop by slicing, torchvision Normalize)
    out, x = plain.apply(cache, p, index=idx), cache[idx]
    for i in range(7):
        img = torch.flip(x[i], dims=[2]) if p.flip[i] else x[i]
        oy, ox = int(p.offset_y[i]), int(p.offset_x[i])
        ref = tv_normalize(F.pad(img, (3, 3, 3, 3))[:, oy:oy + 32, ox:ox + 16].float() / 255)
        if p.erase[i]:
            y0, x0, h, w = (int(t[i]) for t in (p.erase_y, p.erase_x, p.erase_h, p.erase_w))
            ref[:, y0:y0 + h, x0:x0 + w] = 0
        torch.testing.assert_close(out[i], ref, rtol=0, atol=1e-5)
    assert p.flip.any() and p.erase.any()


def test_empty_batch():
    aug = BatchAugment((16, 8), pad=2, erasing_p=0.5)
    out = aug.apply(_images(b=3), aug.sample_params(0, batch_generator(0, 0, 0)), index=torch.tensor([], dtype=torch.long))
    assert out.shape == (0, 3, 16, 8)


def _oracle(x, p, pad, size):
    """flip (torch.flip), zero pad (F.pad), crop (slicing) of uint8 images, then the erased boxes as a bool mask."""
    H, W = size
    crops, boxes = [], torch.zeros(len(x), 1, H, W, dtype=torch.bool)
    for i in range(len(x)):
        img = torch.flip(x[i], dims=[2]) if p.flip[i] else x[i]
        oy, ox = int(p.offset_y[i]), int(p.offset_x[i])
        crops.append(F.pad(img, (pad, pad, pad, pad))[:, oy:oy + H, ox:ox + W])
        if p.erase[i]:
            y0, x0, h, w = (int(t[i]) for t in (p.erase_y, p.erase_x, p.erase_h, p.erase_w))
            boxes[i, :, y0:y0 + h, x0:x0 + w] = True
    return torch.stack(crops), boxes


@pytest.mark.parametrize("pad", [0, 3, 10, 40])
@pytest.mark.parametrize("layout", ["presized", "channels_last", "resized"])
@pytest.mark.parametrize("erasing_p", [0.0, 0.5])
def test_batch_path_equals_the_oracle_bit_for_bit(pad, layout, erasing_p):
    """The batched gather + masks == flip, pad, crop, normalise, erase done by hand, one image at a time.

    Bit for bit against normalize() (the definition: float32(x) * scale + bias, two roundings) of the
    oracle's crops, and to float rounding against torchvision's Normalize. The batch uses the first
    and last cache rows (pad 40 > H: crops of padding only).
    """
    size = (32, 16)
    hw = {"presized": size, "channels_last": size, "resized": (16, 8)}[layout]
    cache = _images(b=9, h=hw[0], w=hw[1], seed=pad)
    if layout == "channels_last":
        cache = cache.contiguous(memory_format=torch.channels_last)
    idx = torch.tensor([0, 8, 3, 0, 8, 5, 1, 7, 8, 0, 2, 4])
    aug = BatchAugment(size, flip_p=0.5, pad=pad, erasing_p=erasing_p)
    for step in range(3):
        p = aug.sample_params(len(idx), batch_generator(pad, 0, step))
        x = A.resize_images(cache[idx], size)
        crops, boxes = _oracle(x, p, pad, size)
        want = A.normalize(crops).masked_fill_(boxes, 0.0)
        assert torch.equal(aug.apply(cache, p, index=idx), want)
        assert torch.equal(aug.apply(cache[idx].clone(), p), want)
        tv = tv_normalize(crops.float() / 255).masked_fill_(boxes, 0.0)
        torch.testing.assert_close(want, tv, rtol=0, atol=1e-5)
    assert p.flip.any() and not p.flip.all() and (p.erase.any() or erasing_p == 0)
