"""Short text table of evaluation results (what the trainer and ``reid.evaluate`` print).

Every table says which settings produced it (:func:`settings_label`): the distance, re-ranking,
flip (when known) and the AP rule, recorded with the results as ``results["settings"]``.

Example::

    >>> print(format_results(evaluate_features(qf, gf, q_pids, q_cams, g_pids, g_cams)))
    evaluated with: cosine distance, no re-ranking, AP standard
    rank-1  rank-5  rank-10  mAP(standard)  mAP(trapezoid)   mINP  valid queries
     88.2%   95.1%    96.9%          72.4%           71.9%  38.0%      3368/3368
    >>> print(format_results(json.load(open("outputs/soft/results.json"))))   # eval.datasets: [dukemtmc]
    evaluated with: cosine distance, no re-ranking, flip, AP standard
    rank-1  rank-5  rank-10  mAP(standard)  mAP(trapezoid)   mINP  valid queries
     88.2%   95.1%    96.9%          72.4%           71.9%  38.0%      3368/3368
    dukemtmc (cross-domain):
    rank-1  rank-5  rank-10  mAP(standard)  mAP(trapezoid)   mINP  valid queries
     41.3%   57.0%    63.2%          23.1%           22.8%   4.1%      2228/2228
"""

from __future__ import annotations

from typing import Any, Mapping


# The evaluation settings that change rank-1/mAP, in the order labels and file names give them.
SETTING_KEYS = ("distance", "rerank", "flip", "ap")


def eval_settings(ev: Any) -> dict[str, Any]:
    """The settings of an ``eval`` config section that change rank-1/mAP, as recorded in results.

    Example::

        eval_settings(cfg.eval)   # {"distance": "cosine", "rerank": False, "flip": True, "ap": "standard"}
    """
    return {key: getattr(ev, key) for key in SETTING_KEYS}


def results_settings(results: Mapping[str, Any]) -> dict[str, Any]:
    """The settings that produced ``results``: ``results["settings"]``, else what older results hold
    (``distance``, ``rerank``, ``ap_rule``; flip unknown)."""
    if isinstance(results.get("settings"), Mapping):
        return dict(results["settings"])
    out: dict[str, Any] = {}
    if results.get("rerank") is not None:
        out["rerank"] = bool(results["rerank"])
    if results.get("distance") not in (None, "rerank"):
        out["distance"] = results["distance"]
    if results.get("ap_rule") is not None:
        out["ap"] = results["ap_rule"]
    return out


def settings_label(settings: Mapping[str, Any]) -> str:
    """``"cosine distance, no re-ranking, flip, AP standard"``; a setting that is not known is left out."""
    parts = []
    if settings.get("distance") is not None:
        parts.append(f"{settings['distance']} distance")
    if settings.get("rerank") is not None:
        parts.append("re-ranking" if settings["rerank"] else "no re-ranking")
    if settings.get("flip") is not None:
        parts.append("flip" if settings["flip"] else "no flip")
    if settings.get("ap") is not None:
        parts.append(f"AP {settings['ap']}")
    return ", ".join(parts) or "settings not recorded"


def settings_tag(settings: Mapping[str, Any], reference: Mapping[str, Any]) -> str:
    """The file-name tag of ``settings`` where they differ from ``reference`` (a run's own), "" where
    they do not: ``{"rerank": True}`` vs ``{"rerank": False}`` -> ``"rerank"``; ``"euclidean_noflip"``.

    Example::

        settings_tag({**own, "rerank": True, "ap": "trapezoid"}, own)   # "rerank_trapezoid"
    """
    names = {"rerank": ("norerank", "rerank"), "flip": ("noflip", "flip")}
    parts = []
    for key in SETTING_KEYS:
        value = settings.get(key)
        if value != reference.get(key):
            parts.append(names[key][bool(value)] if key in names else str(value))
    return "_".join(parts)


def format_results(results: Mapping[str, Any]) -> str:
    """The settings that produced them, then a two-line table: rank-1/5/10, mAP under both AP rules
    (headline rule first), mINP, valid queries; then, for each cross-domain dataset in
    ``results["datasets"]``, its name and its own table."""
    tables = [f"evaluated with: {settings_label(results_settings(results))}", _table(results)]
    for name, r in results.get("datasets", {}).items():
        tables.append(f"{name} (cross-domain):\n{_table(r)}")
    return "\n".join(tables)


def _table(results: Mapping[str, Any]) -> str:
    rule = results.get("ap_rule", "standard")
    other = "trapezoid" if rule == "standard" else "standard"
    cols = [
        ("rank-1", results["rank1"]),
        ("rank-5", results["rank5"]),
        ("rank-10", results["rank10"]),
        (f"mAP({rule})", results[f"mAP_{rule}"] if f"mAP_{rule}" in results else results["mAP"]),
        (f"mAP({other})", results.get(f"mAP_{other}", float("nan"))),
        ("mINP", results.get("mINP", float("nan"))),
    ]
    head = [name for name, _ in cols] + ["valid queries"]
    vals = [f"{100 * v:.1f}%" for _, v in cols]
    nq = results.get("num_query")
    valid = f"{results['num_valid_queries']}" + (f"/{nq}" if nq is not None else "")
    vals.append(valid)
    widths = [max(len(h), len(v)) for h, v in zip(head, vals)]
    line1 = "  ".join(h.rjust(w) for h, w in zip(head, widths))
    line2 = "  ".join(v.rjust(w) for v, w in zip(vals, widths))
    return f"{line1}\n{line2}"
