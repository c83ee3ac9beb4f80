"""Short text table of evaluation results (what the trainer and ``reid.evaluate`` print).

Example::

    >>> print(format_results(evaluate_features(qf, gf, q_pids, q_cams, g_pids, g_cams)))
    rank-1  rank-5  rank-10  mAP(standard)  mAP(trapezoid)   mINP  valid queries
     88.2%   95.1%    96.9%          72.4%           71.9%  38.0%      3368/3368
    >>> print(format_results(json.load(open("outputs/soft/results.json"))))   # eval.datasets: [dukemtmc]
    rank-1  rank-5  rank-10  mAP(standard)  mAP(trapezoid)   mINP  valid queries
     88.2%   95.1%    96.9%          72.4%           71.9%  38.0%      3368/3368
    dukemtmc (cross-domain):
    rank-1  rank-5  rank-10  mAP(standard)  mAP(trapezoid)   mINP  valid queries
     41.3%   57.0%    63.2%          23.1%           22.8%   4.1%      2228/2228
"""

from __future__ import annotations

from typing import Any, Mapping


def format_results(results: Mapping[str, Any]) -> str:
    """Two-line table: rank-1/5/10, mAP under both AP rules (headline rule first), mINP, valid queries;
    then, for each cross-domain dataset in ``results["datasets"]``, its name and its own table."""
    tables = [_table(results)]
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
