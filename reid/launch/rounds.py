"""``study.sh ... --until-decided``: a study that adds seeds round by round until it can decide.

The first round trains seeds 0, 1 and 2 of every config; each later round adds the next seed,
up to ``--max-seeds``. After each round, every comparison with the first config (the baseline)
not decided yet is decided on the paired differences of ``--metric`` with the planned rule of
:mod:`reid.analysis.decide` (better, worse, equivalent within ``--margin``; undecided at the last
seed). A decided comparison keeps its decision (it is not looked at again); the study stops when
every comparison is decided. The runs are those of a study with ``--seeds 0,...,n-1``
(``<name>_s<seed>``, ``--resume auto``), so the same command again after a crash retrains
nothing that finished and reaches the same decisions.

Example::

    scripts/study.sh configs/standard.yaml configs/soft.yaml --until-decided --max-seeds 8 --margin 0.5
    # soft vs standard: better, mAP +1.20 [+0.31, +2.09], 5 seeds (decided at look 3)
"""

from __future__ import annotations

from typing import Optional, Sequence

from ..analysis.decide import FIRST_SEEDS, Decision, decide
from .cli import EXIT_RUN_FAILED, write_comparison
from .runs import Job, LaunchError, TrainerCommand
from .study import Variant, check_loadable, plan, resolve, run_name, study_out, train_all, unfinished


def until_decided(variants: Sequence[Variant], sets: list[str], slots: list[Optional[str]], trainer: TrainerCommand,
                  max_seeds: int, margin: Optional[float], metric: str = "mAP") -> int:
    """Train round by round until every comparison with ``variants[0]`` is decided; the exit status."""
    if len(variants) < 2:
        raise LaunchError("--until-decided compares each config with the first: give at least two (or a --grid)")
    if max_seeds < FIRST_SEEDS:
        raise LaunchError(f"--max-seeds {max_seeds}: the first round alone trains {FIRST_SEEDS} seeds; give at "
                          f"least {FIRST_SEEDS}")
    if margin is not None and margin <= 0:
        raise LaunchError(f"--margin {margin}: give a positive number of points, e.g. --margin 0.5")
    looks, base, others = max_seeds - FIRST_SEEDS + 1, variants[0], variants[1:]
    decisions: dict[str, Decision] = {}
    seeds: list[int] = list(range(FIRST_SEEDS))
    trained: dict[str, Job] = {}  # every run of the study so far, by name
    for look in range(1, looks + 1):
        open_ = [v for v in others if v.name not in decisions]  # a decided comparison needs no more seeds
        jobs = plan([base, *open_], seeds, sets)
        resolve(jobs)
        check_loadable(jobs)
        todo = [jobs[i] for i in unfinished(jobs)]
        print(f"study: look {look} of {looks}: seeds {seeds[0]}..{seeds[-1]} of {', '.join(v.name for v in [base, *open_])}"
              f", {len(todo)} run(s) to train")
        if todo and not train_all(todo, slots, trainer):
            return EXIT_RUN_FAILED
        trained.update((job.label, job) for job in jobs)
        values = {v.name: metric_by_seed(jobs, v, seeds, metric) for v in [base, *open_]}
        for v in open_:
            d = decide([values[v.name][s] - values[base.name][s] for s in seeds], look, looks,
                       comparisons=len(others), margin=margin)
            print(d.line(v.name, base.name, metric))
            if d.outcome != "continue":
                decisions[v.name] = d
        if len(decisions) == len(others):
            break
        seeds.append(seeds[-1] + 1)
    lines = [decisions[v.name].line(v.name, base.name, metric) for v in others]
    print("study: " + ("every comparison is decided" if all(d.outcome != "undecided" for d in decisions.values())
                       else f"done at {max_seeds} seeds"))
    for line in lines:
        print(line)
    out = study_out(jobs, variants)
    if not write_comparison([job.run_dir for job in trained.values()], out, decisions=lines):
        return EXIT_RUN_FAILED
    print(f"comparison: {out} and {out.with_suffix('.md')}")
    return 0


def metric_by_seed(jobs: Sequence[Job], variant: Variant, seeds: Sequence[int], metric: str) -> dict[int, float]:
    """``metric`` (``mAP`` or ``rank1``, in %) of ``variant``'s run of each seed, from its last evaluation."""
    from ..analysis import load_run, summarize
    from ..analysis.summary import as_percent

    by_name = {job.label: job for job in jobs}
    out = {}
    for seed in seeds:
        job = by_name[run_name(variant, seed)]
        value = summarize(load_run(job.run_dir))[metric]
        if value is None:
            raise LaunchError(f"run {job.label} ({job.run_dir}) has no {metric}: it was never evaluated; its config "
                              "must evaluate at its end (it does unless train.epochs is 0)")
        out[seed] = as_percent(value)
    return out
