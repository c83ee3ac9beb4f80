"""Criterion registry: losses chosen by name in the config, summed with weights.

A criterion is a small ``nn.Module`` registered with :func:`register_criterion`,
constructed with explicit keyword arguments (its config parameters) and called as
``criterion(logits, targets, features=None) -> scalar``. Its constructor may also
accept the context arguments ``num_classes``, ``feat_dim`` and ``class_counts``;
:func:`build_criterion` fills those in, they are not config parameters.

Built-in names: ``cross_entropy``, ``soft_cross_entropy``, ``label_smoothing``
(reid/losses/cross_entropy.py), ``triplet``, ``center`` (reid/losses/metric.py).

Losses are computed in float32 even when the model runs under bf16/fp16 autocast
(float64 inputs stay float64, for gradcheck).

Optional hooks a criterion can define (used by ``center``):

- ``needs_features = True`` (class attribute): it reads the model's features;
- ``extra_param_groups() -> list[dict]``: parameter groups for an optimiser of its own
  (``CombinedCriterion.extra_optimizer()`` builds one SGD over all of them);
- ``set_loss_weight(weight)``: told its weight in the sum;
- ``batch_part(share) -> Tensor``: its part of a global batch split over torchrun processes
  (reid/losses/shares.py); without it the criterion runs on the gathered batch.

Example::

    from reid.losses import build_criterion

    crit = build_criterion([{"name": "label_smoothing", "epsilon": 0.1},
                            {"name": "triplet", "margin": 0.3},
                            {"name": "center", "weight": 5e-4}],
                           num_classes=751, feat_dim=model.feature_dim)
    loss = crit(logits, targets, features)
    center_opt = crit.extra_optimizer()      # SGD(lr=0.5) over the centres, or None
"""

from __future__ import annotations

import difflib
import inspect
import math
from typing import Any, Callable, Mapping, Sequence

import torch
from torch import nn

from ..errors import ConfigError, ReidError
from ..registry import Registry
from .shares import BatchShare, batch_part

CRITERIA = Registry("criterion")

# Filled in by build_criterion from the dataset/model, never given in a config.
CONTEXT_ARGS = ("num_classes", "feat_dim", "class_counts")


def register_criterion(name: str) -> Callable:
    """Decorator adding a criterion class (or factory) under ``name``.

    Its constructor's keyword arguments are the criterion's config parameters
    (plus any of ``num_classes``, ``feat_dim``, ``class_counts`` it wants); its
    ``forward(logits, targets, features=None)`` returns a scalar.
    """
    return CRITERIA.register(name)


class CombinedCriterion(nn.Module):
    """The weighted sum of a list of criteria: ``sum_t weight_t * term_t(logits, targets, features)``.

    Attributes:
        terms: list of ``(name, weight, module)`` in config order, for logging.
        needs_features: True when some term reads the model's features.
        last_terms: the unweighted value of each term at the last call (detached
            tensors, no host sync), in the order of ``terms``.

    The criterion owns parameters when a term does (center loss): save
    ``criterion.state_dict()`` and ``criterion.extra_optimizer().state_dict()``
    with the model's for an exact resume.
    """

    def __init__(self, terms: Sequence[tuple[str, float, nn.Module]]) -> None:
        super().__init__()
        if not terms:
            raise ConfigError("criterion: the list of criteria is empty; give at least one")
        self.criteria = nn.ModuleList([m for _, _, m in terms])  # registered: .to(), state_dict
        self.terms: list[tuple[str, float, nn.Module]] = [(n, float(w), m) for n, w, m in terms]
        for _, w, m in self.terms:
            if hasattr(m, "set_loss_weight"):
                m.set_loss_weight(w)
        self.needs_features = any(getattr(m, "needs_features", False) for _, _, m in self.terms)
        self.last_terms: list[torch.Tensor] = []
        self._extra_optimizer: torch.optim.Optimizer | None = None

    @property
    def names(self) -> list[str]:
        return [n for n, _, _ in self.terms]

    def forward(
        self, logits: torch.Tensor, targets: torch.Tensor, features: torch.Tensor | None = None
    ) -> torch.Tensor:
        return self._weighted_sum([module(logits, targets, features) for _, _, module in self.terms])

    def batch_part(self, share: BatchShare) -> torch.Tensor:
        """This process's part of the weighted sum on a global batch split over torchrun processes:
        the parts of all processes sum to ``forward`` on the whole batch (reid/losses/shares.py).
        ``last_terms`` then holds each term's part."""
        return self._weighted_sum([batch_part(module, share) for _, _, module in self.terms])

    def _weighted_sum(self, values: list[torch.Tensor]) -> torch.Tensor:
        total = None
        for (_, weight, _), value in zip(self.terms, values):
            total = weight * value if total is None else total + weight * value
        self.last_terms = [v.detach() for v in values]
        return total

    def extra_optimizer(self) -> torch.optim.Optimizer | None:
        """One SGD over the parameters the terms own (center loss), or None when none do.

        The same object is returned on every call, so its state can be checkpointed.
        Step it after ``loss.backward()`` (with a GradScaler: ``scaler.step(opt)``).
        """
        if self._extra_optimizer is None:
            groups = [g for _, _, m in self.terms if hasattr(m, "extra_param_groups")
                      for g in m.extra_param_groups()]
            if groups:
                self._extra_optimizer = torch.optim.SGD(groups, lr=groups[0]["lr"])
        return self._extra_optimizer

    def extra_repr(self) -> str:
        return " + ".join(f"{w:g}*{n}" for n, w, _ in self.terms)


def _user_params(factory: Callable) -> tuple[dict[str, inspect.Parameter], bool]:
    """The constructor's config parameters (context args excluded) and whether it takes **kwargs."""
    sig = inspect.signature(factory)
    params, var_kw = {}, False
    for p in sig.parameters.values():
        if p.kind is p.VAR_KEYWORD:
            var_kw = True
        elif p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and p.name not in CONTEXT_ARGS:
            params[p.name] = p
    return params, var_kw


def _as_spec_list(spec: Any) -> list[dict]:
    if isinstance(spec, str):
        spec = {"name": spec}
    if isinstance(spec, Mapping):
        spec = [spec]
    if not isinstance(spec, (list, tuple)) or not spec:
        raise ConfigError(
            f"criterion must be a mapping like {{name: cross_entropy}} or a non-empty list of them, got {spec!r}"
        )
    out = []
    for i, item in enumerate(spec):
        if isinstance(item, str):
            item = {"name": item}
        if not isinstance(item, Mapping) or "name" not in item:
            raise ConfigError(
                f"criterion[{i}] must be a mapping with a 'name' key (one of {', '.join(CRITERIA.names())}), "
                f"got {item!r}"
            )
        out.append(dict(item))
    return out


def build_criterion(
    spec: Any,
    num_classes: int,
    feat_dim: int | None = None,
    class_counts: Sequence[int] | None = None,
) -> CombinedCriterion:
    """Build the weighted sum described by ``spec``.

    Args:
        spec: a dict ``{"name": ..., "weight": 1.0, <parameters>}``, a list of them,
            or a bare name. Unknown names and unknown parameters raise ConfigError.
        num_classes: number of training identities.
        feat_dim: width of the model's features (``model.feature_dim``), for ``center``.
        class_counts: images per class in the training split, for ``class_weight: balanced``.

    Example::

        crit = build_criterion({"name": "label_smoothing", "epsilon": 0.1}, num_classes=751)
        loss = crit(logits, targets)
    """
    context = {"num_classes": num_classes, "feat_dim": feat_dim, "class_counts": class_counts}
    terms = []
    for item in _as_spec_list(spec):
        name, factory, weight, kwargs = _checked_term(item)
        sig = inspect.signature(factory).parameters
        for key, value in context.items():
            if key not in sig:
                continue
            if value is None:
                if sig[key].default is sig[key].empty:
                    raise ReidError(f"criterion '{name}' needs {key}; pass {key}=... to build_criterion")
                continue
            kwargs[key] = value
        terms.append((name, float(weight), factory(**kwargs)))
    return CombinedCriterion(terms)


def check_criterion_spec(spec: Any) -> None:
    """What :func:`build_criterion` refuses, before any data is read: unknown names, bad weights, unknown or
    missing parameters and parameter values out of range raise ConfigError. Each term is built for a stand-in
    dataset, so that each criterion's own checks of its values run: as many identities as a per-class list
    of the term has values (``class_weight``), else 2, one image each, 2-d features; what depends on the real
    dataset (a per-class list's length) is checked when the run builds it. A launcher checks a study's configs
    with it before anything trains.

    Example::

        check_criterion_spec({"name": "soft_cross_entropy", "uniform_weight": "abc"})
        # ConfigError: criterion 'soft_cross_entropy': uniform_weight must be a number >= 0, got 'abc'
    """
    for item in _as_spec_list(spec):
        per_class = [len(v) for v in item.values() if isinstance(v, (list, tuple)) and v]
        n = per_class[0] if per_class else 2
        build_criterion(item, num_classes=n, feat_dim=2, class_counts=[1] * n)


def _checked_term(item: dict) -> tuple[str, Any, float, dict]:
    """(name, factory, weight, the user's parameters) of one spec entry, each checked."""
    item = dict(item)
    name = item.pop("name")
    factory = CRITERIA.get(name)
    weight = item.pop("weight", 1.0)
    if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not math.isfinite(weight) or weight < 0:
        raise ConfigError(f"criterion '{name}': weight must be a finite number >= 0, got {weight!r}")
    params, var_kw = _user_params(factory)
    for key in item:
        if key in CONTEXT_ARGS:
            raise ConfigError(f"criterion '{name}': '{key}' is set from the dataset/model, remove it from the config")
        if key not in params and not var_kw:
            close = difflib.get_close_matches(key, params, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            valid = ", ".join(["weight", *params])
            raise ConfigError(f"criterion '{name}' has no parameter '{key}'{hint}; valid parameters: {valid}")
    missing = [k for k, p in params.items() if p.default is p.empty and k not in item]
    if missing:
        raise ConfigError(f"criterion '{name}' needs parameter(s) {', '.join(missing)}")
    return name, factory, weight, item


# Imported last: these modules register their classes with the decorator above.
from .cross_entropy import CrossEntropy, LabelSmoothing, SoftCrossEntropy  # noqa: E402
from .metric import CenterLoss, TripletLoss  # noqa: E402

__all__ = [
    "BatchShare", "CRITERIA", "CenterLoss", "CombinedCriterion", "CrossEntropy", "LabelSmoothing",
    "SoftCrossEntropy", "TripletLoss", "build_criterion", "check_criterion_spec", "register_criterion",
]
