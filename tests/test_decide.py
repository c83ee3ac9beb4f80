"""The study's stopping rule (reid/analysis/decide.py): its intervals against scipy's one-sample t test, its
decisions on hand-made differences, the seeds a difference needs, and its simulation: valid under repeated
looks where a plain 95% interval at every look is not."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from reid.analysis.decide import decide, look_level, main, seeds_needed, simulate


def scipy_interval(diffs, level):
    return tuple(stats.ttest_1samp(diffs, 0.0).confidence_interval(confidence_level=level))


@pytest.mark.parametrize("looks, comparisons", [(1, 1), (8, 1), (4, 3)])
def test_each_look_is_a_t_interval_at_the_bonferroni_level(looks, comparisons):
    diffs = [0.3, -1.2, 2.5, 0.9, 1.1]
    d = decide(diffs, look=1, looks=looks, comparisons=comparisons)
    level = 1 - 0.05 / (looks * comparisons)
    assert look_level(looks, comparisons) == pytest.approx(level)
    assert d.interval == pytest.approx(scipy_interval(diffs, level), abs=1e-12)
    assert d.mean == pytest.approx(np.mean(diffs)) and d.seeds == 5


def test_decisions_on_hand_made_differences():
    assert decide([2.0, 2.2, 1.9, 2.1], look=2, looks=5).outcome == "better"
    assert decide([-2.0, -2.2, -1.9, -2.1], look=2, looks=5).outcome == "worse"
    assert decide([0.1, -0.1, 0.05, -0.05, 0.0], look=3, looks=5, margin=0.5).outcome == "equivalent"
    assert decide([0.1, -0.1, 0.05, -0.05, 0.0], look=3, looks=5).outcome == "continue"  # no margin: not equivalence
    assert decide([1.0, -1.0, 2.0], look=5, looks=5, margin=0.5).outcome == "undecided"  # the last look
    # [1, 2, 3]: mean 2, sd 1; at one look the 95% half-width is t(0.975, 2) / sqrt(3) = 2.484: 0 is inside
    d = decide([1.0, 2.0, 3.0], look=1, looks=1)
    assert d.outcome == "undecided" and d.interval == pytest.approx((2 - 2.4842, 2 + 2.4842), abs=1e-4)
    line = decide([-2.0, -2.2, -1.9, -2.1], look=2, looks=5).line("label_smoothing", "standard")
    assert line.startswith("label_smoothing vs standard: worse, mAP -2.05 [") and line.endswith(
        "], 4 seeds (decided at look 2)")


def test_seeds_needed_is_the_fewest_with_the_power_asked():
    def enough(n, sd, diff):
        return (stats.t.ppf(0.975, n - 1) + stats.t.ppf(0.8, n - 1)) * sd / math.sqrt(n) <= diff

    assert seeds_needed(1.0, 1.0) == 10  # hand: n=9 gives 1.065 > 1, n=10 gives 0.995
    for sd, diff in [(2.0, 0.5), (1.5, 1.0), (0.8, 2.0)]:
        n = seeds_needed(sd, diff)
        assert enough(n, sd, diff) and (n == 2 or not enough(n - 1, sd, diff))
    assert seeds_needed(50.0, 0.01) is None  # beyond 1000 seeds


def test_one_look_is_wrong_at_the_nominal_rate():
    """With first == max seeds there is one look at 95%: wrong decisions at effect 0 happen 5% of the time
    (within 4 standard errors of 10,000 draws), the t interval's own guarantee."""
    r = simulate(10000, effect=0.0, sd=1.0, max_seeds=6, first=6)
    assert abs(r["wrong"] - 0.05) < 4 * math.sqrt(0.05 * 0.95 / 10000)


@pytest.mark.parametrize("tails", ["normal", "t3"])
def test_repeated_looks_keep_wrong_decisions_under_5_percent_where_naive_looks_do_not(tails):
    valid = simulate(10000, effect=0.0, sd=1.0, max_seeds=10, tails=tails)
    naive = simulate(10000, effect=0.0, sd=1.0, max_seeds=10, tails=tails, rule="naive")
    assert valid["wrong"] <= 0.05 and naive["wrong"] > 0.10, (valid, naive)


def test_an_effect_of_twice_the_noise_is_mostly_decided_early():
    r = simulate(10000, effect=2.0, sd=1.0, max_seeds=10)
    assert r["decided"] > 0.95 and r["wrong"] == 0.0 and r["mean_seeds"] < 7, r


def test_the_command_prints_the_three_figures(capsys):
    assert main(["--simulate", "2000", "--effect", "0", "--sd", "1", "--max-seeds", "8"]) == 0
    out = capsys.readouterr().out
    assert "wrong better/worse decisions:" in out and "decided:" in out and "mean seeds used:" in out
