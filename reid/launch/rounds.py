"""``study.sh ... --until-decided``: a study that adds seeds round by round until it can decide.

The first round trains seeds 0, 1 and 2 of every config; each later round adds the next seed to
the first config (the baseline) and to the configs whose comparison with it is not decided yet,
up to ``--max-seeds``. After each round, every open comparison is decided on the paired
differences of ``--metric`` with the planned rule of :mod:`reid.analysis.decide` (better, worse,
equivalent within ``--margin``; undecided at the last seed); a decided comparison keeps its
decision. Where the study stands is read from the run directories (:func:`standing`): the runs are
those of a study with ``--seeds 0,...,n-1`` (``<name>_s<seed>``, ``--resume auto``), so the same
command again, after a crash or on another day, retrains nothing that finished and reaches the
same decisions.

Here the rounds train one after the other. With ``--slurm`` each round is a job array followed by
a job that runs the same command (``--follow-up``): it decides, then submits the next round, or
writes the study's table and figure when every comparison is decided.

Example::

    scripts/study.sh configs/standard.yaml configs/soft.yaml --until-decided --max-seeds 8 --margin 0.5
    # soft vs standard: better, mAP +1.20 [+0.31, +2.09], 5 seeds (decided at look 3)
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Optional, Sequence

from ..analysis.decide import FIRST_SEEDS, Decision, decide
from .cli import EXIT_RUN_FAILED, write_comparison
from .runs import Job, LaunchError, TrainerCommand
from .study import (Variant, check_reruns, plan, resolve, run_name, study_out, submit_to_slurm, train_all,
                    unfinished, unfinished_note)


@dataclass
class Standing:
    """Where a study that adds seeds stands: the round at ``look`` (of ``looks``) on ``seeds``, its runs
    (``jobs``, of which ``todo`` have not finished), each comparison's latest look (``looked``) and every run
    of the study."""

    look: int
    looks: int
    seeds: list[int]
    jobs: list[Job]
    todo: list[int]
    looked: dict[str, Decision]
    runs: dict[str, Job]

    @property
    def done(self) -> bool:
        return not self.todo


def standing(variants: Sequence[Variant], sets: list[str], max_seeds: int, margin: Optional[float],
             metric: str = "mAP") -> Standing:
    """Replay the study's looks on the runs that have finished: the first round with unfinished runs, or the
    end (``done``) once every comparison with ``variants[0]`` is decided."""
    looks, base, others = max_seeds - FIRST_SEEDS + 1, variants[0], variants[1:]
    looked: dict[str, Decision] = {}
    seeds, runs = list(range(FIRST_SEEDS)), {}
    for look in range(1, looks + 1):
        # a decided comparison is not looked at again, and its config gets no more seeds
        open_ = [v for v in others if v.name not in looked or looked[v.name].outcome == "continue"]
        jobs = plan([base, *open_], seeds, sets)
        resolve(jobs)
        runs.update((job.label, job) for job in jobs)
        todo = unfinished(jobs)
        if todo:
            return Standing(look, looks, list(seeds), jobs, todo, looked, runs)
        values = {v.name: metric_by_seed(jobs, v, seeds, metric) for v in [base, *open_]}
        for v in open_:
            looked[v.name] = decide([values[v.name][s] - values[base.name][s] for s in seeds], look, looks,
                                    comparisons=len(others), margin=margin)
        if all(d.outcome != "continue" for d in looked.values()):
            break
        seeds.append(seeds[-1] + 1)
    return Standing(look, looks, list(seeds), jobs, [], looked, runs)


def until_decided(variants: Sequence[Variant], sets: list[str], max_seeds: int, margin: Optional[float],
                  metric: str, slots: list[Optional[str]], trainer: TrainerCommand, extend: bool = False) -> int:
    """Train round by round here until every comparison with ``variants[0]`` is decided; the exit status.
    Before each round, where each comparison stands after the looks so far, one line each."""
    check_study(variants, max_seeds, margin)
    while True:
        now = standing(variants, sets, max_seeds, margin, metric)
        if now.done:
            return finish(variants, now, metric)
        check_reruns(now.jobs, extend)
        print_standing(variants, now, metric)
        todo = [now.jobs[i] for i in now.todo]
        print(f"{round_line(variants, now)}, {len(todo)} run(s) to train")
        if not train_all(todo, slots, trainer):
            return EXIT_RUN_FAILED


def print_standing(variants: Sequence[Variant], now: Standing, metric: str) -> None:
    """One line per comparison looked at so far, as the final decisions:
    ``soft vs standard: not decided yet, mAP +0.41 [-2.70, +3.52], 3 seeds``."""
    for v in variants[1:]:
        if v.name in now.looked:
            print(now.looked[v.name].line(v.name, variants[0].name, metric))


def round_line(variants: Sequence[Variant], now: Standing) -> str:
    """``study: look 2 of 8: seeds 0..3 of standard (the baseline), soft_uw0.5``: the configs this round
    trains, the baseline first."""
    training = {j.label.rsplit("_s", 1)[0] for j in now.jobs}
    others = [v.name for v in variants[1:] if v.name in training]
    return (f"study: look {now.look} of {now.looks}: seeds {now.seeds[0]}..{now.seeds[-1]} of {variants[0].name} "
            f"(the baseline), {', '.join(others)}")


def until_decided_on_slurm(variants: Sequence[Variant], sets: list[str], max_seeds: int, margin: Optional[float],
                           metric: str, trainer: TrainerCommand, follow_up: list[str], sbatch_options: str,
                           after_look: Optional[int], max_requeues: int, nproc_per_node: int,
                           extend: bool = False) -> int:
    """Submit the study's next round and, after it, ``follow_up`` (this command with ``--after-look``), which
    decides and goes on; or write the table when every comparison is decided."""
    check_study(variants, max_seeds, margin)
    now = standing(variants, sets, max_seeds, margin, metric)
    if now.done:
        return finish(variants, now, metric)
    if after_look == now.look:  # the round this job waited for did not finish: do not submit it forever
        print(f"error: round {now.look} of the study has {len(now.todo)} unfinished run(s): "
              f"{', '.join(unfinished_note(now.jobs[i]) for i in now.todo)}; run the same study command again to "
              "resubmit them", file=sys.stderr)
        return EXIT_RUN_FAILED
    check_reruns(now.jobs, extend)
    if after_look is not None:  # a round ended: its table so far, with the decisions so far
        write_table(variants, now, metric)
    else:
        print_standing(variants, now, metric)
    print(round_line(variants, now))
    return submit_to_slurm(now.jobs, list(variants), trainer, [*follow_up, "--after-look", str(now.look)],
                           sbatch_options, max_requeues, nproc_per_node)


def check_study(variants: Sequence[Variant], max_seeds: int, margin: Optional[float]) -> None:
    if len(variants) < 2:
        raise LaunchError("--until-decided compares each config with the first: give at least two (or a --grid)")
    if max_seeds < FIRST_SEEDS:
        raise LaunchError(f"--max-seeds {max_seeds}: the first round alone trains {FIRST_SEEDS} seeds; give at "
                          f"least {FIRST_SEEDS}")
    if margin is not None and margin <= 0:
        raise LaunchError(f"--margin {margin}: give a positive number of points, e.g. --margin 0.5")


def finish(variants: Sequence[Variant], now: Standing, metric: str) -> int:
    """Print each comparison's decision and write the study's table and figure with them."""
    undecided = sum(d.outcome == "undecided" for d in now.looked.values())
    print(f"study: {len(now.looked) - undecided} of {len(now.looked)} comparison(s) decided"
          + (f", {undecided} undecided at {now.seeds[-1] + 1} seeds" if undecided else ""))
    return 0 if write_table(variants, now, metric) else EXIT_RUN_FAILED


def write_table(variants: Sequence[Variant], now: Standing, metric: str) -> bool:
    """Print each comparison's latest look and write the study's table and figure over the finished runs."""
    base = variants[0]
    lines = [now.looked[v.name].line(v.name, base.name, metric) for v in variants[1:] if v.name in now.looked]
    for line in lines:
        print(line)
    out = study_out(now.jobs, variants)
    pending = {now.jobs[i].label for i in now.todo}
    finished = [job.run_dir for name, job in now.runs.items() if name not in pending]
    if not write_comparison(finished, out, decisions=lines):
        return False
    print(f"comparison: {out} and {out.with_suffix('.md')}")
    return True


def metric_by_seed(jobs: Sequence[Job], variant: Variant, seeds: Sequence[int], metric: str) -> dict[int, float]:
    """``metric`` (``mAP`` or ``rank1``, in %) of ``variant``'s run of each seed, from its last evaluation."""
    from ..analysis import Group, load_run
    from ..analysis.over_seeds import seed_values

    by_name = {job.label: job for job in jobs}
    runs = {seed: by_name[run_name(variant, seed)] for seed in seeds}
    values = seed_values(Group(variant.name, {seed: load_run(job.run_dir) for seed, job in runs.items()}), metric)
    for seed, job in runs.items():
        if seed not in values:
            raise LaunchError(f"run {job.label} ({job.run_dir}) has no {metric}: it finished without an evaluation")
    return values
