"""Studies over seeds: runs grouped by config, mean ± std over seeds, paired differences.

Example::

    from reid.analysis import load_run, study_groups, study_table
    runs = [load_run(d) for d in ["outputs/standard_s0", "outputs/standard_s1", "outputs/soft_s0", "outputs/soft_s1"]]
    groups = study_groups(runs)          # [Group("standard", {0: ..., 1: ...}), Group("soft", {...})]
    print(study_table(groups))

Conventions (relied on by the tests):

* **Groups**: a run belongs to the group named after its directory with a trailing
  ``_s<digits>`` removed (``soft_s3`` -> ``soft``; ``seed3/soft`` -> ``soft``), groups in the
  order their first run was given. Its **seed** is ``seed`` of the run's resolved config
  (the ``.mat``'s ``config``), else the ``_s<digits>`` of its name. The runs form a study
  when some group holds runs of two or more seeds; two runs of one group with the same
  seed are then an error.
* **Numbers** per run are :func:`reid.analysis.summarize`'s ``val_acc_final``, ``rank1``
  and ``mAP``, in %, and beside them the criterion-free ``val_nll_final`` (plain cross entropy
  of the logits, whatever the criterion) and ``val_ece_final`` (in %), which compare configs of
  different criteria. Per group: the mean and the sample standard deviation (n - 1) over its
  seeds. Paired differences and decisions are on the first three (decisions on mAP, or rank-1).
* **Paired differences**: for groups A before B, ``d_s = B_s - A_s`` over the seeds both
  have (same seed = same images in the same order), in percentage points; the mean, a
  95% confidence interval ``mean ± t(0.975, n-1) * sd(d) / sqrt(n)`` (Student t, n - 1
  degrees of freedom; none for one seed) and the count of seeds where B > A.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import yaml

from ..errors import ReidError
from .run_data import Run, run_machine
from .summary import as_percent, eval_label, summarize

SEED_SUFFIX = re.compile(r"^(?P<name>.+)_s(?P<seed>\d+)$")
# (summarize key, column title) of the numbers compared over seeds.
STUDY_METRICS: tuple[tuple[str, str], ...] = (("val_acc_final", "final val acc"), ("rank1", "rank-1"),
                                              ("mAP", "mAP"))
# (summarize key, column title, in %) of the criterion-free numbers shown as mean ± sd per config
# (no paired differences: the decisions stay on retrieval).
STUDY_MEASURES: tuple[tuple[str, str, bool], ...] = (("val_nll_final", "final val NLL", False),
                                                    ("val_ece_final", "final val ECE", True))
CONFIDENCE = 0.95


@dataclass
class Group:
    """The runs of one config, by seed (ascending)."""

    name: str
    runs: dict[int, Run]


@dataclass
class PairedDifference:
    """``b - a`` per common seed (percentage points), its mean, 95% t interval and win count."""

    seeds: list[int]
    diffs: list[float]
    mean: float | None
    ci: tuple[float, float] | None
    wins: int    # seeds where b > a
    losses: int  # seeds where b < a


def group_name(run: Run) -> str:
    """The run directory's name without a trailing ``_s<seed>``."""
    m = SEED_SUFFIX.match(run.name)
    return m.group("name") if m else run.name


def run_seed(run: Run) -> int | None:
    """``seed`` of the run's resolved config, else the ``_s<seed>`` of its name, else None."""
    try:
        config = yaml.safe_load(run.config_text) if run.config_text else None
    except yaml.YAMLError:
        config = None
    if isinstance(config, dict) and isinstance(config.get("seed"), int):
        return config["seed"]
    m = SEED_SUFFIX.match(run.name)
    return int(m.group("seed")) if m else None


def study_groups(runs: Sequence[Run]) -> list[Group] | None:
    """The runs grouped by config when they form a study (see the module docstring), else None.

    Example::

        groups = study_groups([load_run(d) for d in dirs])
        [(g.name, sorted(g.runs)) for g in groups]   # [("standard", [0, 1, 2]), ("soft", [0, 1, 2])]
    """
    members: dict[str, list[tuple[int | None, Run]]] = {}
    for run in runs:
        members.setdefault(group_name(run), []).append((run_seed(run), run))
    if not any(len({s for s, _ in m if s is not None}) > 1 for m in members.values()):
        return None
    groups = []
    for name, m in members.items():
        by_seed: dict[int, Run] = {}
        for seed, run in m:
            if seed is None:
                raise ReidError(f"{run.mat_path}: cannot tell the seed of this run (no seed in its config, no _s<seed> "
                                "in its name); pass runs written by train.py")
            if seed in by_seed:
                raise ReidError(f"runs {by_seed[seed].path} and {run.path} of {name} both have seed {seed}; a study "
                                "needs one run per config and seed, so pass only one of them")
            by_seed[seed] = run
        groups.append(Group(name, dict(sorted(by_seed.items()))))
    return groups


def seed_values(group: Group, key: str, percent: bool = True) -> dict[int, float]:
    """``summarize(run)[key]`` (in % unless ``percent`` is False) for each seed of ``group`` that has it."""
    out = {}
    for seed, run in group.runs.items():
        v = summarize(run)[key]
        if v is not None and math.isfinite(v):
            out[seed] = as_percent(v) if percent else v
    return out


def mean_std(values: Sequence[float]) -> tuple[float | None, float | None]:
    """(mean, sample standard deviation with n - 1); None where undefined (no value / one value)."""
    v = np.asarray(values, dtype=np.float64)
    if v.size == 0:
        return None, None
    return float(v.mean()), (float(v.std(ddof=1)) if v.size > 1 else None)


def t_quantile(n: int) -> float:
    """The two-sided ``CONFIDENCE`` quantile of Student's t with n - 1 degrees of freedom."""
    from scipy.stats import t

    return float(t.ppf(0.5 + CONFIDENCE / 2, n - 1))


def paired_difference(a: dict[int, float], b: dict[int, float]) -> PairedDifference:
    """``b[s] - a[s]`` over the seeds both have, with mean, 95% t interval and win count.

    Example::

        d = paired_difference({0: 50.0, 1: 52.0}, {0: 51.0, 1: 52.5})
        d.diffs, d.mean, d.wins    # [1.0, 0.5], 0.75, 2
    """
    seeds = sorted(set(a) & set(b))
    diffs = [b[s] - a[s] for s in seeds]
    mean, sd = mean_std(diffs)
    ci = None
    if sd is not None:
        half = t_quantile(len(diffs)) * sd / math.sqrt(len(diffs))
        ci = (mean - half, mean + half)
    return PairedDifference(seeds, diffs, mean, ci, sum(d > 0 for d in diffs), sum(d < 0 for d in diffs))


def _fmt(v: float | None, signed: bool = False) -> str:
    return "-" if v is None else (f"{v:+.2f}" if signed else f"{v:.2f}")


def _mean_std_cell(values: dict[int, float], seeds: int, unit: str = "%", digits: int = 2) -> str:
    mean, std = mean_std(list(values.values()))
    if mean is None:
        return "-"
    cell = f"{mean:.{digits}f} ± {'-' if std is None else f'{std:.{digits}f}'}{unit}"
    return cell if len(values) == seeds else f"{cell} (n={len(values)})"


def study_table(groups: Sequence[Group], decisions: Sequence[str] | None = None) -> str:
    """Markdown: mean ± std per config, then each pair's per-seed differences, interval and wins, each
    comparison's decision (``decisions``: the lines of a study that looked round by round) and the seeds
    a difference needs.

    Example::

        print(study_table(study_groups(runs)))
    """
    metrics = present_metrics(groups)
    header = ["config", "seeds"] + [title for _, title in metrics] + [t for _, t, _ in STUDY_MEASURES] + ["evaluated with"]
    lines = ["| " + " | ".join(header) + " |", "|---|---|" + "---:|" * (len(metrics) + len(STUDY_MEASURES)) + "---|"]
    for g in groups:
        cells = [_mean_std_cell(seed_values(g, key), len(g.runs)) for key, _ in metrics]
        cells += [_mean_std_cell(seed_values(g, key, percent), len(g.runs), "%" if percent else "", 2 if percent else 4)
                  for key, _, percent in STUDY_MEASURES]
        evaluated = eval_label(list(g.runs.values())) if any(seed_values(g, k) for k in ("rank1", "mAP")) else "-"
        lines.append(f"| {g.name} | {', '.join(map(str, g.runs))} | " + " | ".join(cells) + f" | {evaluated} |")
    if len(groups) > 1 and metrics:
        lines += ["", f"Paired differences (same seed = same data order), in percentage points; "
                      f"{CONFIDENCE:.0%} CI = mean ± t(0.975, n-1) · sd / √n (Student t):", "",
                  "| pair | metric | per seed | mean | 95% CI (t) | wins |", "|---|---|---|---:|---|---|"]
        for i, a in enumerate(groups):
            for b in groups[i + 1:]:
                for key, title in metrics:
                    lines.append(_difference_row(a, b, key, title))
        against_base = baseline_differences(groups)
        lines += ["", *decision_lines(groups, against_base, decisions), "", *power_lines(groups, against_base)]
    return "\n".join(lines) + "\n"


DECISION_METRIC = ("mAP", "mAP")  # (summarize key, name): what a study decides on


def baseline_differences(groups: Sequence[Group]) -> list[tuple[Group, PairedDifference]]:
    """Each group after the first with its paired :data:`DECISION_METRIC` differences from the first."""
    key, _ = DECISION_METRIC
    return [(g, paired_groups(groups[0], g, key)) for g in groups[1:]]


def paired_groups(a: Group, b: Group, key: str) -> PairedDifference:
    """:func:`paired_difference` of ``key`` between the groups' runs, seed by seed, leaving out a seed whose
    two runs were trained on different kinds of machine (their difference would include the machines')."""
    kinds = {s: (run_machine(a.runs[s]), run_machine(b.runs[s])) for s in set(a.runs) & set(b.runs)}
    apart = {s for s, (ka, kb) in kinds.items() if None not in (ka, kb) and ka != kb}  # unrecorded: kept
    va, vb = seed_values(a, key), seed_values(b, key)
    return paired_difference({s: v for s, v in va.items() if s not in apart}, vb)


def decision_lines(groups: Sequence[Group], against_base: Sequence[tuple[Group, PairedDifference]],
                   decisions: Sequence[str] | None = None) -> list[str]:
    """One line per comparison with the baseline (the first group): ``decisions`` when the study looked
    round by round (``--until-decided``), else the decision of one look at the seeds there are (Bonferroni
    over the comparisons: reid/analysis/decide.py)."""
    from .decide import decide

    if decisions is not None:
        return [f"Decisions (vs {groups[0].name}):", "", *(f"- {line}" for line in decisions)]
    name, base, out = DECISION_METRIC[1], groups[0], []
    for g, d in against_base:
        if len(d.diffs) < 2:
            out.append(f"- {g.name} vs {base.name}: not decided, {len(d.diffs)} common seed(s) with {name}")
        else:
            out.append("- " + decide(d.diffs, look=1, looks=1, comparisons=len(groups) - 1).line(g.name, base.name))
    return [f"Decisions ({name}, vs {base.name}; 95% over the {len(groups) - 1} comparison(s)):", "", *out]


def power_lines(groups: Sequence[Group], against_base: Sequence[tuple[Group, PairedDifference]]) -> list[str]:
    """Per comparison with the baseline: about how many seeds resolve a mAP difference of 0.5, 1 and 2 points
    at the observed spread of its paired differences (80% power, 95% t interval)."""
    from .decide import seeds_needed

    name, base, out = DECISION_METRIC[1], groups[0], []
    for g, d in against_base:
        if len(d.diffs) < 2:
            continue
        sd = float(np.std(d.diffs, ddof=1))
        need = ", ".join(f"{diff:g} point{'s' * (diff != 1)}: {_seeds(seeds_needed(sd, diff))}" for diff in (0.5, 1, 2))
        out.append(f"- {g.name} vs {base.name} (sd of the paired {name} differences {sd:.2f}): {need}")
    return [f"Seeds that resolve a {name} difference (80% power, 95% t interval, at the observed spread):", "", *out] \
        if out else []


def _seeds(n: int | None) -> str:
    return "over 1000 seeds" if n is None else f"{n} seeds"


def present_metrics(groups: Sequence[Group]) -> list[tuple[str, str]]:
    """The ``STUDY_METRICS`` some run of ``groups`` has (a study with ``data.val_per_id: 0`` has no val accuracy)."""
    return [(key, title) for key, title in STUDY_METRICS if any(seed_values(g, key) for g in groups)]


def _difference_row(a: Group, b: Group, key: str, title: str) -> str:
    d = paired_groups(a, b, key)
    per_seed = ", ".join(f"s{s} {v:+.2f}" for s, v in zip(d.seeds, d.diffs)) or "-"
    ci = "-" if d.ci is None else f"[{d.ci[0]:+.2f}, {d.ci[1]:+.2f}]"
    ties = len(d.diffs) - d.wins - d.losses
    wins = "-" if not d.diffs else f"{b.name} > {a.name} in {d.wins} of {len(d.diffs)} seeds" + (
        f" ({ties} tied)" if ties else "")
    return f"| {b.name} − {a.name} | {title} | {per_seed} | {_fmt(d.mean, signed=True)} | {ci} | {wins} |"
