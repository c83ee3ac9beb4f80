"""When a study has seeds enough: the stopping rule, its decisions, the seeds a difference needs, and a
simulation of the rule that trains nothing.

The rule (``bonferroni``, the default) plans its looks: a study trains ``first`` seeds of every config,
then one more seed per round, up to ``max_seeds``, and looks after each round: ``L = max_seeds - first
+ 1`` looks. At each look, each of the ``k`` comparisons with the baseline (the first config) gets a
two-sided Student t interval of its paired differences at level ``1 - alpha / (L * k)``:

* **better** / **worse**: the interval excludes 0 (above / below);
* **equivalent**: the interval lies within ``±margin`` (only with a margin);
* otherwise the comparison goes on to the next look, and at ``max_seeds`` it is **undecided**.

What it guarantees: each interval misses the true mean difference with probability at most
``alpha / (L * k)``, so by the union bound over the ``L`` looks and ``k`` comparisons, the chance that
any comparison of the study is decided better or worse against its true sign (or at all, when the
true difference is 0) is at most ``alpha`` (5%), however many looks decide early. The ``naive`` rule,
a plain 95% interval at every look, has no such bound: :func:`simulate` shows what it costs.

Example::

    d = decide([1.2, 0.4, 0.9, 1.5], look=2, looks=4, comparisons=1, margin=0.5)
    d.outcome, d.mean, d.interval          # "better", 1.0, (0.1..., 1.8...)
    seeds_needed(sd=1.5, difference=1.0)   # 20: seeds that resolve 1 point at that spread

Or from the shell: ``python -m reid.analysis.decide --simulate 10000 --effect 0 --sd 1 --max-seeds 10``.
"""

from __future__ import annotations

import argparse
import math
import sys
from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np

ALPHA = 0.05
FIRST_SEEDS = 3
RULES = ("bonferroni", "naive")


@dataclass
class Decision:
    """One comparison at one look: ``outcome`` (better, worse, equivalent, undecided, or continue: not
    yet), the mean paired difference and its interval, the seeds it rests on and the look (1-based)."""

    outcome: str
    mean: float
    interval: tuple[float, float]
    seeds: int
    look: int

    def line(self, name: str, baseline: str, metric: str = "mAP") -> str:
        """``label_smoothing vs standard: worse, mAP -1.90 [-3.10, -0.70], 6 seeds (decided at look 3)``."""
        lo, hi = self.interval
        numbers = f"{metric} {self.mean:+.2f} [{lo:+.2f}, {hi:+.2f}]"
        if self.outcome == "undecided":
            return f"{name} vs {baseline}: undecided at {self.seeds} seeds, {numbers}"
        if self.outcome == "continue":
            return f"{name} vs {baseline}: not decided yet, {numbers}, {self.seeds} seeds"
        return f"{name} vs {baseline}: {self.outcome}, {numbers}, {self.seeds} seeds (decided at look {self.look})"


def look_level(looks: int, comparisons: int, rule: str = "bonferroni", alpha: float = ALPHA) -> float:
    """The two-sided confidence level of each look's intervals under ``rule``."""
    if rule not in RULES:
        raise ValueError(f"unknown rule {rule!r}; valid rules: {', '.join(RULES)}")
    return 1 - alpha / (looks * comparisons) if rule == "bonferroni" else 1 - alpha


def t_intervals(diffs: np.ndarray, level: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(mean, low, high) of the two-sided Student t interval at ``level`` of each row of paired differences
    ``diffs`` (rows x seeds, at least 2 seeds)."""
    from scipy.stats import t

    n = diffs.shape[-1]
    mean = diffs.mean(-1)
    half = t.ppf(0.5 + level / 2, n - 1) * diffs.std(-1, ddof=1) / math.sqrt(n)
    return mean, mean - half, mean + half


def verdicts(lo: np.ndarray, hi: np.ndarray, margin: Optional[float], last: bool) -> np.ndarray:
    """The rule's outcome for each interval ``[lo, hi]``: better, worse, equivalent (within ``±margin``), else
    undecided at the ``last`` look and continue before it."""
    out = np.full(np.shape(lo), "undecided" if last else "continue", dtype=object)
    if margin is not None:
        out[(-margin < lo) & (hi < margin)] = "equivalent"
    out[lo > 0], out[hi < 0] = "better", "worse"
    return out


def decide(diffs: Sequence[float], look: int, looks: int, comparisons: int = 1, margin: Optional[float] = None,
           rule: str = "bonferroni", alpha: float = ALPHA) -> Decision:
    """The decision on paired differences ``diffs`` at look ``look`` of ``looks`` (see the module docstring);
    at the last look a comparison not decided is ``undecided``."""
    if len(diffs) < 2:
        raise ValueError("a decision needs the differences of at least 2 seeds")
    mean, lo, hi = t_intervals(np.asarray(diffs, dtype=np.float64), look_level(looks, comparisons, rule, alpha))
    outcome = verdicts(lo, hi, margin, last=look >= looks)
    return Decision(str(outcome), float(mean), (float(lo), float(hi)), len(diffs), look)


def seeds_needed(sd: float, difference: float, power: float = 0.8, alpha: float = ALPHA,
                 most: int = 1000) -> Optional[int]:
    """The fewest seeds whose 95% t interval of paired differences with spread ``sd`` excludes 0 with
    probability ``power`` when the true difference is ``difference``: the smallest n (at least 2) with
    ``(t(1 - alpha/2, n-1) + t(power, n-1)) * sd / sqrt(n) <= difference``; None beyond ``most``.

    Example::

        seeds_needed(sd=1.0, difference=1.0)   # 10
    """
    from scipy.stats import t

    if sd <= 0:
        return 2
    for n in range(2, most + 1):
        if (t.ppf(1 - alpha / 2, n - 1) + t.ppf(power, n - 1)) * sd / math.sqrt(n) <= difference:
            return n
    return None


def simulate(reps: int, effect: float, sd: float, max_seeds: int, first: int = FIRST_SEEDS,
             margin: Optional[float] = None, rule: str = "bonferroni", tails: str = "normal",
             alpha: float = ALPHA, seed: int = 0) -> dict[str, float]:
    """Run the stopping rule ``reps`` times on simulated paired differences ``effect + noise`` (noise of
    standard deviation ``sd``: ``normal``, or ``t3``, Student t with 3 degrees of freedom scaled to ``sd``,
    for heavier tails) with one comparison. Returns the fraction of wrong decisions (better or worse
    against the sign of ``effect``; any when it is 0), the fraction decided, and the mean seeds used.
    """
    if not 2 <= first <= max_seeds:
        raise ValueError(f"first = {first} and max_seeds = {max_seeds}: need 2 <= first <= max_seeds")
    rng = np.random.default_rng(seed)
    if tails == "normal":
        noise = rng.standard_normal((reps, max_seeds))
    elif tails == "t3":
        noise = rng.standard_t(3, (reps, max_seeds)) / math.sqrt(3.0)  # t3 has variance 3
    else:
        raise ValueError(f"unknown tails {tails!r}; valid: normal, t3")
    diffs = effect + sd * noise
    looks = max_seeds - first + 1
    level = look_level(looks, 1, rule, alpha)
    outcome = np.full(reps, "", dtype=object)
    used = np.full(reps, max_seeds)
    for n in range(first, max_seeds + 1):
        _, lo, hi = t_intervals(diffs[:, :n], level)
        now = verdicts(lo, hi, margin, last=False)
        decided = (outcome == "") & (now != "continue")
        outcome[decided], used[decided] = now[decided], n
    signed = (outcome == "better") | (outcome == "worse")
    wrong = signed if effect == 0 else (outcome == ("worse" if effect > 0 else "better"))
    return {"wrong": float(wrong.mean()), "decided": float((outcome != "").mean()), "mean_seeds": float(used.mean())}


def main(argv: Optional[list[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m reid.analysis.decide",
                                description="Simulate the study's stopping rule on paired differences (no training).")
    p.add_argument("--simulate", type=int, required=True, metavar="R", help="repetitions, e.g. 10000")
    p.add_argument("--effect", type=float, required=True, metavar="D", help="true mean difference, in points")
    p.add_argument("--sd", type=float, required=True, metavar="S", help="spread of the paired differences, in points")
    p.add_argument("--max-seeds", type=int, required=True, metavar="N")
    p.add_argument("--first-seeds", type=int, default=FIRST_SEEDS, metavar="N0",
                   help=f"seeds of the first round (default {FIRST_SEEDS}); then one more per round")
    p.add_argument("--margin", type=float, default=None, metavar="M", help="equivalence margin, in points")
    p.add_argument("--rule", choices=RULES, default="bonferroni",
                   help="bonferroni (default: valid under repeated looks) or naive (a 95%% interval at each look)")
    p.add_argument("--tails", choices=("normal", "t3"), default="normal", help="noise: normal, or heavier (t3)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    if args.simulate < 1 or args.sd < 0 or not 2 <= args.first_seeds <= args.max_seeds:
        p.error("give --simulate >= 1, --sd >= 0 and 2 <= --first-seeds <= --max-seeds")
    r = simulate(args.simulate, args.effect, args.sd, args.max_seeds, args.first_seeds, args.margin, args.rule,
                 args.tails, seed=args.seed)
    print(f"rule {args.rule}, effect {args.effect:g}, sd {args.sd:g} ({args.tails}), seeds {args.first_seeds}.."
          f"{args.max_seeds}, margin {args.margin if args.margin is not None else 'none'}, {args.simulate} studies:")
    print(f"wrong better/worse decisions: {r['wrong']:.2%}; decided: {r['decided']:.2%}; "
          f"mean seeds used: {r['mean_seeds']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
