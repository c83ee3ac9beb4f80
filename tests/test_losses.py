"""reid.losses: every criterion against an oracle outside the code under test.

Oracles: torch.nn.functional (cross_entropy with weight / ignore_index /
label_smoothing, log_softmax + nll_loss), explicit target-distribution formulas in
float64 numpy, hand-computed triplet and center-loss cases, autograd.gradcheck.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from reid.errors import ConfigError, ReidError
from reid.losses import CRITERIA, build_criterion, register_criterion

K = 5


def _data(n: int = 6, k: int = K, seed: int = 0, scale: float = 3.0):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, k, generator=g) * scale
    targets = torch.randint(0, k, (n,), generator=g)
    return logits, targets


def _np_log_softmax(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64)
    m = x.max(axis=1, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(axis=1, keepdims=True))


def _np_ce_with_target_dist(logits: torch.Tensor, q: np.ndarray) -> float:
    return float(-(q * _np_log_softmax(logits.double().numpy())).sum(axis=1).mean())


# ---------------------------------------------------------------- cross entropy
def test_cross_entropy_matches_torch():
    logits, y = _data()
    crit = build_criterion({"name": "cross_entropy"}, K)
    assert torch.allclose(crit(logits, y), F.cross_entropy(logits, y), atol=1e-6)


def test_cross_entropy_class_weight_list_is_weighted_mean():
    logits, y = _data(n=8)
    w = [0.5, 1.0, 2.0, 0.1, 3.0]
    loss = build_criterion({"name": "cross_entropy", "class_weight": w}, K)(logits, y)
    assert torch.allclose(loss, F.cross_entropy(logits, y, weight=torch.tensor(w)), atol=1e-6)
    # by hand: sum_i w_yi nll_i / sum_i w_yi (not / batch size)
    lp = _np_log_softmax(logits.numpy())
    yn = y.numpy()
    wy = np.array(w)[yn]
    expected = (wy * -lp[np.arange(len(yn)), yn]).sum() / wy.sum()
    assert math.isclose(loss.item(), expected, rel_tol=1e-6)


def test_cross_entropy_balanced_weights_and_ignore_index():
    logits, y = _data(n=8)
    counts = [10, 2, 5, 1, 4]
    crit = build_criterion({"name": "cross_entropy", "class_weight": "balanced", "ignore_index": 2},
                           K, class_counts=counts)
    inv = 1.0 / np.array(counts, dtype=np.float64)  # inverse class frequency (scale cancels)
    expected = F.cross_entropy(logits.double(), y, weight=torch.tensor(inv), ignore_index=2)
    assert math.isclose(crit(logits, y).item(), expected.item(), rel_tol=1e-6)
    assert np.allclose(crit.terms[0][2].weight.numpy(), sum(counts) / (K * np.array(counts)))


def test_log_softmax_nll_equals_cross_entropy_on_model_logits():
    from reid.models import build_model

    torch.manual_seed(0)
    model = build_model("resnet18", K, neck="fc512")
    logits, _ = model(torch.randn(4, 3, 64, 32))
    y = torch.tensor([0, 3, 1, 4])
    ours = build_criterion("cross_entropy", K)(logits, y)
    assert torch.allclose(F.nll_loss(F.log_softmax(logits, dim=1), y), F.cross_entropy(logits, y), atol=1e-6)
    assert torch.allclose(ours, F.nll_loss(F.log_softmax(logits, dim=1), y), atol=1e-6)


# ---------------------------------------------------------------- soft CE / smoothing
def test_soft_cross_entropy_formula():
    logits, y = _data()
    for u in (1.0, 0.3):
        loss = build_criterion({"name": "soft_cross_entropy", "uniform_weight": u}, K)(logits, y)
        lp = _np_log_softmax(logits.numpy())
        ce = -lp[np.arange(len(y)), y.numpy()].mean()
        uniform = (-lp).sum(axis=1).mean() / K  # mean_i (1/C) sum_c -log p_ic
        assert math.isclose(loss.item(), ce + u * uniform, rel_tol=1e-6)


@pytest.mark.parametrize("eps", [0.1, 0.3])
def test_label_smoothing_uniform_matches_torch_and_formula(eps):
    logits, y = _data()
    loss = build_criterion({"name": "label_smoothing", "epsilon": eps}, K)(logits, y)
    assert torch.allclose(loss, F.cross_entropy(logits, y, label_smoothing=eps), atol=1e-6)
    q = np.full((len(y), K), eps / K)
    q[np.arange(len(y)), y.numpy()] += 1 - eps
    assert math.isclose(loss.item(), _np_ce_with_target_dist(logits, q), rel_tol=1e-6)


def test_label_smoothing_others_formula():
    logits, y = _data()
    eps = 0.2
    loss = build_criterion({"name": "label_smoothing", "epsilon": eps, "variant": "others"}, K)(logits, y)
    q = np.full((len(y), K), eps / (K - 1))
    q[np.arange(len(y)), y.numpy()] = 1 - eps
    assert np.allclose(q.sum(1), 1.0)
    assert math.isclose(loss.item(), _np_ce_with_target_dist(logits, q), rel_tol=1e-6)


# ---------------------------------------------------------------- triplet
POINTS = torch.tensor([[0.0, 0.0], [3.0, 4.0], [1.0, 0.0], [0.0, 2.0]])
IDS = torch.tensor([0, 0, 1, 1])
# distances: ab=5, ac=1, ad=2, bc=sqrt20, bd=sqrt13, cd=sqrt5
# hardest (positive, negative) per anchor: a (5, 1), b (5, sqrt13), c (sqrt5, 1), d (sqrt5, 2)
AP_AN = [(5.0, 1.0), (5.0, math.sqrt(13)), (math.sqrt(5), 1.0), (math.sqrt(5), 2.0)]


def test_triplet_hand_computed():
    logits = torch.zeros(4, 2)
    loss = build_criterion({"name": "triplet"}, 2)(logits, IDS, POINTS)
    expected = np.mean([max(0.0, ap - an + 0.3) for ap, an in AP_AN])
    assert math.isclose(loss.item(), expected, rel_tol=1e-5)
    assert math.isclose(expected, (7.2 - math.sqrt(13) + 2 * math.sqrt(5)) / 4)
    # on a line: a=0, b=1 (id 0), c=5, d=7 (id 1); (d_ap, d_an) = (1, 5), (1, 4), (2, 4), (2, 6)
    line = torch.tensor([[0.0, 0.0], [1.0, 0.0], [5.0, 0.0], [7.0, 0.0]])
    assert build_criterion({"name": "triplet"}, 2)(logits, IDS, line).item() == 0.0
    hinge = build_criterion({"name": "triplet", "margin": 3.5}, 2)(logits, IDS, line)
    assert math.isclose(hinge.item(), (0 + 0.5 + 1.5 + 0) / 4, rel_tol=1e-5)


def test_triplet_soft_margin_and_anchor_without_positive():
    logits = torch.zeros(4, 2)
    soft = build_criterion({"name": "triplet", "margin": None}, 2)(logits, IDS, POINTS)
    expected = np.mean([math.log1p(math.exp(ap - an)) for ap, an in AP_AN])
    assert math.isclose(soft.item(), expected, rel_tol=1e-5)
    # a fifth point of a third id has no positive: it is left out of the mean,
    # but it is the hardest negative of anchor a (distance 0.5 < 1).
    pts = torch.cat([POINTS, torch.tensor([[0.5, 0.0]])])
    ids = torch.cat([IDS, torch.tensor([2])])
    loss = build_criterion({"name": "triplet"}, 3)(torch.zeros(5, 3), ids, pts)
    ap_an = [(5.0, 0.5), (5.0, math.sqrt(13)), (math.sqrt(5), 0.5), (math.sqrt(5), 2.0)]  # d: e at sqrt(4.25) > 2
    assert math.isclose(loss.item(), np.mean([ap - an + 0.3 for ap, an in ap_an]), rel_tol=1e-5)


def test_triplet_errors():
    crit = build_criterion({"name": "triplet"}, K)
    logits = torch.zeros(4, K)
    with pytest.raises(ReidError, match="needs the model's features"):
        crit(logits, IDS)
    with pytest.raises(ReidError, match="no two images of the same identity.*P x K"):
        crit(logits, torch.tensor([0, 1, 2, 3]), POINTS)
    with pytest.raises(ReidError, match="single identity"):
        crit(logits, torch.tensor([1, 1, 1, 1]), POINTS)


# ---------------------------------------------------------------- center
def test_center_loss_value_and_optimizer_step():
    w = 5e-4
    crit = build_criterion([{"name": "cross_entropy"}, {"name": "center", "weight": w}], 3, feat_dim=2)
    center = crit.terms[1][2]
    c0 = np.array([[0.0, 0.0], [1.0, 1.0], [-1.0, 2.0]])
    with torch.no_grad():
        center.centers.copy_(torch.tensor(c0))
    f_np = np.array([[1.0, 0.0], [0.0, 3.0], [2.0, 2.0], [-1.0, 0.0]])
    y_np = np.array([0, 2, 1, 0])
    feats = torch.tensor(f_np, dtype=torch.float32, requires_grad=True)
    logits = torch.zeros(4, 3)
    y = torch.tensor(y_np)
    # by hand: ||f - c_y||^2 = 1, 2, 2, 1 -> mean 1.5
    assert math.isclose(center(logits, y, feats).item(), 1.5, rel_tol=1e-6)
    total = crit(logits, y, feats)
    assert math.isclose(total.item(), math.log(3) + w * 1.5, rel_tol=1e-6)
    total.backward()
    # features: gradient of w * mean ||f - c||^2 = w * 2/B (f - c_y)
    assert np.allclose(feats.grad.numpy(), w * 2 / 4 * (f_np - c0[y_np]), atol=1e-9)
    # centres: BoT divides by the weight -> gradient of the unweighted loss, 2/B sum (c - f)
    raw = np.zeros_like(c0)
    for f_i, y_i in zip(f_np, y_np):
        raw[y_i] += 2 / 4 * (c0[y_i] - f_i)
    assert np.allclose(center.centers.grad.numpy(), raw, atol=1e-6)
    opt = crit.extra_optimizer()
    assert opt is crit.extra_optimizer() and opt.param_groups[0]["lr"] == 0.5
    opt.step()
    assert np.allclose(center.centers.detach().numpy(), c0 - 0.5 * raw, atol=1e-6)
    assert crit.needs_features and "terms.1" not in crit.state_dict()
    assert any(k.endswith("centers") for k in crit.state_dict())


def test_center_errors():
    crit = build_criterion({"name": "center"}, 3, feat_dim=2)
    with pytest.raises(ReidError, match="needs the model's features"):
        crit(torch.zeros(2, 3), torch.tensor([0, 1]))
    with pytest.raises(ReidError, match="feat_dim"):
        build_criterion({"name": "center"}, 3)


# ---------------------------------------------------------------- combined, gradients, precision
SPECS = [
    {"name": "cross_entropy"},
    {"name": "cross_entropy", "class_weight": [1.0, 2.0, 0.5, 1.5, 3.0], "ignore_index": 1},
    {"name": "soft_cross_entropy", "uniform_weight": 0.7},
    {"name": "label_smoothing", "epsilon": 0.1},
    {"name": "label_smoothing", "epsilon": 0.2, "variant": "others"},
    {"name": "triplet", "margin": 0.3},
    {"name": "triplet", "margin": None},
    {"name": "center", "weight": 0.5},
]


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: "-".join(str(v) for v in s.values()))
def test_gradcheck_float64(spec):
    crit = build_criterion(spec, K, feat_dim=3).double()
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(6, K, generator=g, dtype=torch.float64, requires_grad=True)
    feats = torch.randn(6, 3, generator=g, dtype=torch.float64, requires_grad=True)
    y = torch.tensor([0, 0, 2, 2, 4, 4])
    assert crit(logits, y, feats).dtype == torch.float64
    assert torch.autograd.gradcheck(lambda lo, fe: crit(lo, y, fe), (logits, feats), eps=1e-6, atol=1e-5)


def test_finite_at_large_logits_751_classes():
    g = torch.Generator().manual_seed(0)
    logits = (torch.rand(8, 751, generator=g) * 2 - 1) * 1e4
    logits.requires_grad_(True)
    y = torch.tensor([0, 0, 5, 5, 750, 750, 3, 3])
    feats = (torch.randn(8, 16, generator=g) * 1e3).requires_grad_(True)
    for spec in SPECS[:1] + SPECS[2:]:
        spec = {**spec, "class_weight": None} if "class_weight" in spec else spec
        crit = build_criterion(spec, 751, feat_dim=16)
        loss = crit(logits, y, feats)
        loss.backward()
        assert torch.isfinite(loss), spec
        for t in (logits, feats):
            assert t.grad is None or torch.isfinite(t.grad).all(), spec
            t.grad = None
    # and equal to a float64 reference
    ce = build_criterion("cross_entropy", 751)(logits, y)
    assert math.isclose(ce.item(), F.cross_entropy(logits.double(), y).item(), rel_tol=1e-5)


def test_bf16_autocast_gives_float32_loss():
    crit = build_criterion([{"name": "label_smoothing"}, {"name": "triplet"}, {"name": "center", "weight": 5e-4}],
                           K, feat_dim=8)
    lin = nn.Linear(8, K)
    feats = torch.randn(6, 8)
    y = torch.tensor([0, 0, 1, 1, 2, 2])
    logits = lin(feats).bfloat16()  # bf16 inputs made without a CPU bf16 matmul (wrong by chance on some CPUs)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        half_feats = feats.bfloat16()
        loss = crit(logits, y, half_feats)
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    for _, _, module in crit.terms:
        assert module(logits, y, half_feats).dtype == torch.float32


def test_weighted_sum_and_terms():
    logits, y = _data()
    feats = torch.randn(6, 4)
    y = torch.tensor([0, 0, 1, 1, 3, 3])
    crit = build_criterion([{"name": "label_smoothing", "weight": 2.0}, {"name": "triplet", "weight": 0.5}], K)
    assert [(n, w) for n, w, _ in crit.terms] == [("label_smoothing", 2.0), ("triplet", 0.5)]
    expected = 2.0 * F.cross_entropy(logits, y, label_smoothing=0.1) + 0.5 * crit.terms[1][2](logits, y, feats)
    assert torch.allclose(crit(logits, y, feats), expected, atol=1e-6)
    assert len(crit.last_terms) == 2 and crit.needs_features
    plain = build_criterion({"name": "cross_entropy"}, K)
    assert plain.extra_optimizer() is None and not plain.needs_features


# ---------------------------------------------------------------- config errors, registry
def test_unknown_name_lists_valid_names():
    with pytest.raises(ConfigError) as info:
        build_criterion({"name": "label_smoothin"}, K)
    msg = str(info.value)
    for name in ("cross_entropy", "soft_cross_entropy", "label_smoothing", "triplet", "center"):
        assert name in msg
    assert "did you mean 'label_smoothing'" in msg


def test_unknown_param_names_param_criterion_and_valid_params():
    with pytest.raises(ConfigError) as info:
        build_criterion({"name": "label_smoothing", "epsilion": 0.1}, K)
    msg = str(info.value)
    assert "'epsilion'" in msg and "'label_smoothing'" in msg and "epsilon, variant" in msg
    with pytest.raises(ConfigError, match="num_classes"):
        build_criterion({"name": "center", "num_classes": 3}, K, feat_dim=2)


@pytest.mark.parametrize("spec,pattern", [
    ({"name": "label_smoothing", "epsilon": 1.5}, "epsilon"),
    ({"name": "label_smoothing", "variant": "all"}, "uniform, others"),
    ({"name": "cross_entropy", "class_weight": [1.0, 2.0]}, "2 values but there are 5 classes"),
    ({"name": "cross_entropy", "class_weight": "balanced"}, "class counts"),
    ({"name": "triplet", "margin": -1}, "margin"),
    ({"name": "cross_entropy", "weight": "x"}, "weight"),
    ([], "non-empty list"),
    ([{"epsilon": 0.1}], "'name'"),
])
def test_bad_values(spec, pattern):
    with pytest.raises(ConfigError, match=pattern):
        build_criterion(spec, K)


@register_criterion("test_scaled_ce")
class ScaledCE(nn.Module):
    """A user criterion registered from outside reid/ (the README example's shape)."""

    def __init__(self, scale: float = 1.0):
        super().__init__()
        self.scale = scale

    def forward(self, logits, targets, features=None):
        return self.scale * F.cross_entropy(logits.float(), targets)


def test_register_custom_criterion():
    assert "test_scaled_ce" in CRITERIA
    logits, y = _data()
    crit = build_criterion([{"name": "test_scaled_ce", "scale": 3.0}, {"name": "cross_entropy"}], K)
    assert torch.allclose(crit(logits, y), 4 * F.cross_entropy(logits, y), atol=1e-5)
    with pytest.raises(ConfigError, match="'test_scaled_ce' has no parameter 'gamma'.*scale"):
        build_criterion({"name": "test_scaled_ce", "gamma": 2}, K)


@pytest.mark.parametrize("spec", [{"name": "soft_cross_entropy", "uniform_weight": 0.5},
                                  {"name": "label_smoothing", "epsilon": 0.1, "variant": "others"},
                                  {"name": "center", "weight": 0.5}])
def test_parts_of_a_sample_mean_computed_from_each_share_alone_sum_to_the_whole_batch(spec):
    """Shares of 3 and 2 rows, each seen without the other's logits or features: the parts and their
    gradients add up to the criterion of the whole batch (what a 2-process run relies on)."""
    from reid.data import Share
    from reid.losses import BatchShare

    torch.manual_seed(0)
    crit = build_criterion(spec, num_classes=4, feat_dim=6)
    logits, feats = torch.randn(5, 4, requires_grad=True), torch.randn(5, 6, requires_grad=True)
    targets = torch.tensor([0, 3, 2, 1, 3])
    grads = dict(allow_unused=True, materialize_grads=True)
    whole = torch.autograd.grad(crit(logits, targets, feats), [logits, feats], **grads)
    parts = [crit.batch_part(BatchShare.of(Share(5, rank, 2), logits[lo:hi], feats[lo:hi], targets))
             for rank, (lo, hi) in enumerate([(0, 3), (3, 5)])]
    summed = torch.autograd.grad(sum(parts), [logits, feats], **grads)
    assert torch.allclose(sum(parts), crit(logits, targets, feats), atol=1e-6)
    for a, b in zip(summed, whole):
        assert torch.allclose(a, b, atol=1e-6)


def test_cross_entropy_parts_of_a_split_batch_sum_to_the_weighted_mean_with_ignored_targets():
    """One process's view of each share (sizes 3 and 2): the parts add up to PyTorch's weighted mean."""
    from reid.data import Share
    from reid.losses import BatchShare

    torch.manual_seed(0)
    logits, targets = torch.randn(5, 4), torch.tensor([0, 3, -100, 1, 3])
    weight = [0.5, 2.0, 1.0, 3.0]
    crit = build_criterion({"name": "cross_entropy", "class_weight": weight}, num_classes=4)
    parts = [crit.criteria[0].batch_part(BatchShare.of(Share(5, rank, 2), logits[lo:hi], None, targets))
             for rank, (lo, hi) in enumerate([(0, 3), (3, 5)])]
    expected = F.cross_entropy(logits, targets, weight=torch.tensor(weight), ignore_index=-100)
    assert torch.allclose(sum(parts), expected, atol=1e-6)


@pytest.mark.parametrize("spec, message", [
    ({"name": "soft_cross_entropy", "uniform_weight": "abc"}, "uniform_weight must be a number >= 0, got 'abc'"),
    ({"name": "soft_cross_entropy", "uniform_weight": -1}, "uniform_weight must be a number >= 0, got -1"),
    ({"name": "label_smoothing", "epsilon": 1.5}, "epsilon must be a number in [0, 1), got 1.5"),
    ([{"name": "cross_entropy"}, {"name": "center", "lr": 0}], "criterion 'center': lr must be a number > 0"),
])
def test_criterion_values_are_checked_before_any_data_is_read(spec, message):
    """What a study checks before anything trains: each criterion's own checks of its values."""
    from reid.errors import ConfigError
    from reid.losses import check_criterion_spec

    with pytest.raises(ConfigError) as info:
        check_criterion_spec(spec)
    assert message in str(info.value)


def test_criterion_check_accepts_what_only_the_dataset_can_judge():
    """A per-class list is checked against the real number of identities when the run builds it."""
    from reid.losses import check_criterion_spec

    check_criterion_spec({"name": "cross_entropy", "class_weight": [1.0] * 8})
    check_criterion_spec({"name": "cross_entropy", "class_weight": "balanced"})
    check_criterion_spec([{"name": "center", "lr": 0.5}, {"name": "triplet", "margin": 0.3}])
