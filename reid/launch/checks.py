"""What a study checks before its first run trains, each problem said once.

Every config with the study's ``--set`` values, every ``--grid`` value and every variant the grid
makes is loaded and checked as ``train.py`` checks it before it touches a run directory (keys, types,
names, a criterion's parameters and their values), and so is whether its pretrained weights can be
loaded without a download (:func:`reid.models.pretrained_problem`). Then the runs the study would
continue are compared with what they were trained with (:func:`rerun_problems`). A problem shared by
several configs is one line naming them all; :class:`Problems` carries the lines (exit status 2,
nothing trained).

Example::

    problems = config_problems(configs, grid, variants, sets)
    if problems:
        raise Problems(problems)
    # error: configs/standard.yaml, configs/soft.yaml: --set train.epoch=3: unknown key 'train.epoch'; ...
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Optional, Sequence

from ..errors import ReidError
from .runs import Job, LaunchError

if TYPE_CHECKING:
    from .study import Variant


class Problems(LaunchError):
    """Several one-line problems: shown as one ``error:`` line each (:func:`reid.cli.run_main` prefixes the
    first; the others carry their own prefix)."""

    def __init__(self, lines: Sequence[str]) -> None:
        super().__init__("\nerror: ".join(lines))
        self.lines = list(lines)


def config_problem(config: Path, overrides: Sequence[str]) -> Optional[str]:
    """Why ``train.py --config config --set overrides...`` would stop before training, or None: what it checks
    before it touches the run directory, and whether the pretrained weights are there without a download."""
    from ..config import import_plugins, load_config
    from ..engine.builder import check_names
    from ..models import pretrained_problem

    try:
        cfg = load_config(config, list(overrides))
        import_plugins(cfg)
        check_names(cfg)
    except ReidError as e:
        return str(e)
    return pretrained_problem(cfg.model.name, cfg.model.pretrained)


def grouped(problems: dict[str, list[str]]) -> list[str]:
    """``{problem: [where, ...]}`` -> one line each, ``where, where: problem``, in the order first met."""
    return [f"{', '.join(where)}: {problem}" for problem, where in problems.items()]


def config_problems(configs: Sequence[Path], grid: Sequence[tuple[str, list[str]]], variants: Sequence["Variant"],
                    sets: Sequence[str]) -> list[str]:
    """The problems of a study's configs (each with ``sets``), then of each ``--grid`` axis ``(key, values)``
    of the last config, then of each variant the grid makes: one line per problem, naming where it is.

    A grid axis whose every value fails is one line; otherwise each failing value is one.
    """
    by_problem: dict[str, list[str]] = {}
    for config in configs:
        problem = config_problem(config, sets)
        if problem:
            by_problem.setdefault(problem, []).append(str(config))
    if by_problem or not grid:
        return grouped(by_problem)
    lines = []
    for key, values in grid:
        failed = {v: config_problem(configs[-1], [*sets, f"{key}={v}"]) for v in values}
        failed = {v: without_set_prefix(p, f"{key}={v}") for v, p in failed.items() if p}
        if failed and len(failed) == len(values):
            lines.append(f"--grid {key}={','.join(values)} ({configs[-1]}): {next(iter(failed.values()))}")
        else:
            lines += [f"--grid {key}={v} ({configs[-1]}): {p}" for v, p in failed.items()]
    if lines or len(grid) == 1:  # one axis: its values are the variants
        return lines
    for v in variants:
        problem = config_problem(v.config, [*sets, *v.overrides]) if v.overrides else None
        if problem:
            by_problem.setdefault(problem, []).append(f"--grid {' '.join(v.overrides)} ({v.config})")
    return grouped(by_problem)


def without_set_prefix(problem: str, override: str) -> str:
    """A config error about ``--set key=value`` without that prefix (the line names the --grid value)."""
    return problem.removeprefix(f"--set {override}: ")


def rerun_problems(jobs: Sequence[Job], extend: bool) -> list[str]:
    """What the study would do to runs it trained before, said before anything trains:

    * a run trained with other settings cannot be continued (``train.py`` would refuse each);
    * a finished run with fewer epochs than ``train.epochs`` now asks for is extended in place only with
      ``extend`` (``--extend``): the study's table written before would no longer match it.
    """
    from ..config import experiment_differences, load_config, to_dict
    from ..engine.checkpoint import peek_last

    other: dict[tuple[str, ...], list[Job]] = {}
    shorter: dict[tuple[int, int], list[Job]] = {}
    for job in jobs:
        state = peek_last(job.run_dir)
        if state is None:
            continue
        if "config" in state:
            differing = experiment_differences(state["config"], to_dict(load_config(job.config, job.overrides)))
            if differing:
                other.setdefault(tuple(differing), []).append(job)
                continue
        if state.get("finished") and state.get("epoch", 0) < job.epochs and not extend:
            shorter.setdefault((state["epoch"], job.epochs), []).append(job)
    lines = []
    for differing, hit in other.items():
        they, them, were = ("they", "them", "were") if len(hit) > 1 else ("it", "it", "was")
        lines.append(f"{run_list(hit)} {were} trained with other settings (differs in {', '.join(differing)}), so "
                     f"this study cannot continue {them}; for a new study set output.root to another folder (e.g. "
                     f"--set output.root={hit[0].run_dir.parent}_2), or give the settings {they} {were} trained with")
    for (done, epochs), hit in shorter.items():
        them = "them" if len(hit) > 1 else "it"
        lines.append(f"{run_list(hit)} finished {done} epochs, and train.epochs={epochs} would extend {them} in place "
                     f"(the study's table written before would no longer match {them}); add --extend to train {them} "
                     "on, or set output.root to another folder for a new study")
    return lines


def run_list(jobs: Sequence[Job]) -> str:
    """``runs a_s0, b_s0 in outputs/``."""
    folders = sorted({str(job.run_dir.parent) for job in jobs})
    return f"run{'s' * (len(jobs) > 1)} {', '.join(job.label for job in jobs)} in {', '.join(folders)}/"
