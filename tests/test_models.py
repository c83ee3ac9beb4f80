"""reid.models: shapes per neck/stride, param groups, weight loading and its errors.

ResNet-18 at 64x32 keeps these fast; one ResNet-50 shape check.
"""

from __future__ import annotations

import urllib.error

import pytest
import torch
import torchvision

from reid.errors import ConfigError, ReidError
from reid.models import MODELS, build_model

H, W = 64, 32
K = 7


def _images(n: int = 4) -> torch.Tensor:
    return torch.randn(n, 3, H, W, generator=torch.Generator().manual_seed(0))


def _layer4_hw(model, x):
    seen = {}
    handle = model.backbone.layer4.register_forward_hook(lambda m, i, o: seen.update(hw=tuple(o.shape[-2:])))
    model(x)
    handle.remove()
    return tuple(seen["hw"])


@pytest.mark.parametrize("neck,dim", [("fc512", 512), ("bnneck", 512), ("none", 512)])
@pytest.mark.parametrize("last_stride", [1, 2])
def test_shapes_per_neck_and_stride(neck, dim, last_stride):
    torch.manual_seed(0)
    model = build_model("resnet18", K, neck=neck, last_stride=last_stride)
    x = _images()
    model.train()
    logits, feats = model(x)
    assert logits.shape == (4, K) and feats.shape == (4, dim)
    assert model.feature_dim == dim
    # stride 2: 64x32 / 32 = 2x1; stride 1 doubles the last map.
    assert _layer4_hw(model, x) == ((4, 2) if last_stride == 1 else (2, 1))
    model.eval()
    with torch.no_grad():
        emb = model(x)
    assert emb.shape == (4, dim)


def test_bnneck_train_features_before_bn_eval_after():
    torch.manual_seed(0)
    model = build_model("resnet18", K, neck="bnneck")
    assert not model.neck.bias.requires_grad and model.classifier.bias is None
    seen = {}
    model.neck.register_forward_hook(lambda m, i, o: seen.update(before=i[0], after=o))
    x = _images()
    with torch.no_grad():
        logits, feats = model(x)  # train mode
        assert torch.equal(feats, seen["before"])  # metric-loss features: before the BN
        assert torch.allclose(logits, seen["after"] @ model.classifier.weight.t(), atol=1e-6)
        model.eval()
        emb = model(x)
        assert torch.equal(emb, seen["after"])  # retrieval feature: after the BN
        assert not torch.allclose(emb, seen["before"])


def test_init_classifier_and_fc512_head():
    torch.manual_seed(0)
    model = build_model("resnet18", 751, neck="fc512", dropout=0.5)
    w = model.classifier.weight
    assert abs(w.std().item() - 0.001) < 2e-4 and torch.all(model.classifier.bias == 0)
    assert model.neck[0].out_features == 512 and isinstance(model.neck[1], torch.nn.BatchNorm1d)
    assert model.dropout.p == 0.5


def test_resnet50_shape():
    torch.manual_seed(0)
    model = build_model("resnet50", K, neck="bnneck", last_stride=1)
    logits, feats = model(_images(2))
    assert logits.shape == (2, K) and feats.shape == (2, 2048) and model.feature_dim == 2048


def test_param_groups_partition_trainable_params():
    for neck in ("fc512", "bnneck", "none"):
        model = build_model("resnet18", K, neck=neck)
        groups = model.param_groups()
        assert set(groups) == {"backbone", "head"}
        ids_b = {id(p) for p in groups["backbone"]}
        ids_h = {id(p) for p in groups["head"]}
        trainable = {id(p) for p in model.parameters() if p.requires_grad}
        assert not ids_b & ids_h
        assert ids_b | ids_h == trainable
        assert ids_b == {id(p) for p in model.backbone.parameters()}
        assert id(model.classifier.weight) in ids_h


def test_channels_last_and_bf16_autocast():
    torch.manual_seed(0)
    model = build_model("resnet18", K, neck="bnneck").to(memory_format=torch.channels_last)
    x = _images().to(memory_format=torch.channels_last)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits, feats = model(x)
    # the layers ran in bf16; their values are not checked: CPU bf16 kernels are wrong by chance on some CPUs
    assert logits.shape == (4, K) and logits.dtype == torch.bfloat16
    model.eval()
    with torch.no_grad():
        ref = model(_images())
        cl = model(x)
    assert torch.allclose(ref, cl, atol=1e-4)


def test_unknown_model_neck_stride():
    with pytest.raises(ConfigError, match="resnet50"):
        build_model("resnet5", K)
    with pytest.raises(ConfigError, match="bnneck"):
        build_model("resnet18", K, neck="bn")
    with pytest.raises(ConfigError, match="last_stride"):
        build_model("resnet18", K, last_stride=3)
    assert {"resnet18", "resnet34", "resnet50"} <= set(MODELS.names())


def _tv_resnet18_state(seed: int = 1) -> dict:
    torch.manual_seed(seed)
    return torchvision.models.resnet18(weights=None).state_dict()


@pytest.mark.parametrize("wrap", ["plain", "nested_module"])
def test_load_local_pth(tmp_path, wrap):
    state = _tv_resnet18_state()
    obj = state if wrap == "plain" else {"state_dict": {f"module.{k}": v for k, v in state.items()}}
    path = tmp_path / "r18.pth"
    torch.save(obj, path)
    model = build_model("resnet18", K, pretrained=str(path), neck="bnneck")
    loaded = model.backbone.state_dict()
    for key, value in state.items():
        if key.startswith("fc."):
            assert key not in loaded
            continue
        assert torch.equal(loaded[key], value), key


def test_load_mismatched_pth_names_file_and_keys(tmp_path):
    state = _tv_resnet18_state()
    del state["layer1.0.conv1.weight"]
    path = tmp_path / "bad.pth"
    torch.save(state, path)
    with pytest.raises(ReidError, match=r"bad\.pth.*missing keys layer1\.0\.conv1\.weight"):
        build_model("resnet18", K, pretrained=str(path))
    torch.save(torchvision.models.resnet34(weights=None).state_dict(), path)  # deeper net
    with pytest.raises(ReidError, match=r"bad\.pth.*unexpected keys layer1\.2\."):
        build_model("resnet18", K, pretrained=str(path))


def test_missing_weights_file(tmp_path):
    missing = tmp_path / "nope.pth"
    with pytest.raises(ConfigError, match="nope.pth"):
        build_model("resnet18", K, pretrained=str(missing))


def test_imagenet_unavailable_error(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))  # empty cache

    def no_network(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", no_network)
    url = torchvision.models.ResNet18_Weights.IMAGENET1K_V1.url
    with pytest.raises(ReidError) as info:
        build_model("resnet18", K, pretrained="imagenet")
    msg = str(info.value)
    assert url in msg and "model.pretrained" in msg and str(tmp_path / "checkpoints") in msg


def test_imagenet_from_cache(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url",
                        lambda *a, **k: pytest.fail("must not download when cached"))
    url = torchvision.models.ResNet18_Weights.IMAGENET1K_V1.url
    (tmp_path / "checkpoints").mkdir()
    state = _tv_resnet18_state(seed=3)
    torch.save(state, tmp_path / "checkpoints" / url.rsplit("/", 1)[1])
    model = build_model("resnet18", K, pretrained="imagenet")
    assert torch.equal(model.backbone.conv1.weight, state["conv1.weight"])
