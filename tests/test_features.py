"""Feature extraction (flip averaging, normalisation), distances, evaluate_features,
features.mat round trip and the results table."""

import numpy as np
import pytest
import scipy.io
import torch
import torch.nn.functional as F

import reid.evaluation.features as features
from reid.errors import ReidError
from reid.evaluation import (
    compute_distance,
    evaluate_features,
    extract_features,
    format_results,
    write_features_mat,
)

MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)


def simple_transform(images_uint8, size, channels_last=False):
    x = F.interpolate(images_uint8.float() / 255, size=tuple(size), mode="bilinear", align_corners=False)
    x = (x - MEAN.to(x.device)) / STD.to(x.device)
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


class TinyNet(torch.nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = torch.nn.Conv2d(3, 6, 3, padding=1)
        self.feature_dim = 6

    def forward(self, x):
        return self.conv(x).relu().mean((2, 3))


@pytest.fixture
def patched_transform(monkeypatch):
    monkeypatch.setattr(features, "_eval_transform", simple_transform)


@pytest.mark.parametrize("flip", [False, True])
def test_extract_features_matches_manual(patched_transform, flip):
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (7, 3, 16, 8), dtype=torch.uint8, generator=g)
    model = TinyNet().eval()
    got = extract_features(model, images, size=(32, 16), batch_size=3, flip=flip)
    x = simple_transform(images, (32, 16))
    with torch.no_grad():
        f = model(x)
        if flip:
            f = f + model(torch.flip(x, dims=[3]))
    expected = f / f.norm(dim=1, keepdim=True)
    assert got.shape == (7, 6) and got.dtype == torch.float32 and got.device.type == "cpu"
    torch.testing.assert_close(got, expected, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(got.norm(dim=1), torch.ones(7))


def test_extract_features_options_and_empty(patched_transform):
    images = torch.randint(0, 256, (5, 3, 16, 8), dtype=torch.uint8)
    model = TinyNet().eval()
    base = extract_features(model, images, size=(32, 16))
    cl = extract_features(model, images, size=(32, 16), channels_last=True, batch_size=2)
    torch.testing.assert_close(cl, base, atol=1e-5, rtol=1e-4)
    seen = []
    model.register_forward_pre_hook(lambda m, args: seen.append(torch.get_autocast_dtype("cpu")
                                                                if torch.is_autocast_enabled("cpu") else None))
    extract_features(model, images, size=(32, 16), amp_dtype=torch.bfloat16, batch_size=5)
    extract_features(model, images, size=(32, 16), batch_size=5)
    assert seen == [torch.bfloat16, None]  # the model runs under the autocast asked for (values: not checked on
    #                                        the CPU, whose bf16 kernels are wrong by chance on some CPUs)
    empty = extract_features(model, images[:0], size=(32, 16))
    assert empty.shape == (0, 6)


def test_extract_features_with_real_eval_transform():
    pytest.importorskip("reid.data.augment")
    from reid.data import eval_transform

    images = torch.randint(0, 256, (4, 3, 16, 8), dtype=torch.uint8)
    model = TinyNet().eval()
    got = extract_features(model, images, size=(32, 16), flip=True)
    with torch.no_grad():
        x = eval_transform(images, (32, 16))
        f = model(x) + model(x.flip(3))
    torch.testing.assert_close(got, F.normalize(f, dim=1), atol=1e-6, rtol=1e-5)


def test_compute_distance_against_cdist():
    g = torch.Generator().manual_seed(1)
    q, x = torch.randn(5, 16, generator=g), torch.randn(9, 16, generator=g)
    torch.testing.assert_close(compute_distance(q, x, "euclidean"), torch.cdist(q, x), atol=1e-4, rtol=1e-4)
    cos = 1 - F.normalize(q, dim=1) @ F.normalize(x, dim=1).t()
    torch.testing.assert_close(compute_distance(q, x, "cosine"), cos, atol=1e-6, rtol=1e-6)
    # clamped at 0 before sqrt: no NaN; the self-distance is sqrt(float32 rounding) ~ 1e-3
    self_d = compute_distance(q, q, "euclidean").diagonal()
    assert torch.isfinite(self_d).all() and self_d.abs().max() < 5e-3
    with pytest.raises(ValueError, match="metric"):
        compute_distance(q, x, "manhattan")


def test_evaluate_features_json_ready_and_drops_junk():
    import json

    from reid.evaluation import rank_metrics

    rng = np.random.default_rng(0)
    q_p, q_c = np.array([1, 2, 3]), np.array([1, 1, 1])
    g_p = np.array([1, -1, 2, 0, 3, -1, 1, 2])
    g_c = np.array([2, 2, 3, 4, 2, 5, 1, 2])
    qf = F.normalize(torch.from_numpy(rng.normal(size=(3, 8))).float(), dim=1)
    gf = F.normalize(torch.from_numpy(rng.normal(size=(8, 8))).float(), dim=1)
    r = evaluate_features(qf, gf, q_p, q_c, g_p, g_c, max_rank=5)
    json.dumps(r)
    full = rank_metrics(1 - qf @ gf.t(), q_p, q_c, g_p, g_c, max_rank=10)
    assert r["mAP"] == pytest.approx(full["mAP"], abs=1e-12)
    assert r["rank1"] == full["cmc"][0] and r["rank10"] == full["cmc"][9] and len(r["cmc"]) == 5
    assert set(r) >= {"rank1", "rank5", "rank10", "mAP", "mAP_standard", "mAP_trapezoid", "mINP",
                      "num_valid_queries", "cmc"}
    t = evaluate_features(qf, gf, q_p, q_c, g_p, g_c, ap="trapezoid")
    assert t["mAP"] == t["mAP_trapezoid"] == pytest.approx(full["mAP_trapezoid"])
    rr = evaluate_features(qf, gf, q_p, q_c, g_p, g_c, rerank=True)
    assert 0 <= rr["mAP"] <= 1 and rr["rerank"] is True
    with pytest.raises(ReidError, match="NaN or inf"):
        evaluate_features(qf * float("nan"), gf, q_p, q_c, g_p, g_c)
    text = format_results(r)
    assert "rank-1" in text and "mINP" in text and f"{r['num_valid_queries']}/3" in text


def test_write_features_mat_round_trip(tmp_path):
    qf, gf = torch.randn(3, 4), torch.randn(5, 4)
    path = tmp_path / "run" / "features.mat"
    write_features_mat(path, qf, [1, 2, 3], np.array([1, 1, 2]), gf, torch.tensor([-1, 0, 1, 2, 3]), [1, 2, 3, 4, 5])
    m = scipy.io.loadmat(path)
    assert m["query_f"].shape == (3, 4) and m["query_f"].dtype == np.float32
    assert m["gallery_f"].shape == (5, 4)
    np.testing.assert_array_equal(m["query_f"], qf.numpy())
    assert m["query_label"].shape == (1, 3) and m["query_cam"].shape == (1, 3)
    np.testing.assert_array_equal(m["gallery_label"][0], [-1, 0, 1, 2, 3])
    np.testing.assert_array_equal(m["gallery_cam"][0], [1, 2, 3, 4, 5])
    assert [p.name for p in path.parent.iterdir()] == ["features.mat"]  # no temp file left
