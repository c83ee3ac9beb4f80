"""``scripts/study.sh``: train every config with every seed, then compare the configs over the seeds.

    scripts/study.sh configs/standard.yaml configs/soft.yaml --seeds 0,1,2,3,4
    scripts/study.sh configs/bot_standard.yaml configs/bot_soft.yaml --seeds 0,1,2 --gpus 0,1 --per-gpu 3

Run ``<stem>_s<seed>`` of each config and seed trains into ``output.root/<stem>_s<seed>``
(``--set seed=<seed> --set output.name=<stem>_s<seed>``), the seeds in turn, every config of
one seed before the next seed, so that complete pairs come first. Runs of the same seed see
the same images in the same order with the same augmentation; only the config differs.

Before anything trains, every config, ``--set`` and ``--grid`` value is checked
(:mod:`reid.launch.checks`): each problem is one line, exit status 2. So is a rerun that would
continue runs trained with other settings, or extend finished runs without ``--extend``.
Every run uses ``--resume auto``: the same command again after a crash or Ctrl-C leaves finished
runs as they are and continues the interrupted ones. A run that fails is reported at the end with
its error line (:class:`reid.cli.ErrorLine`; runs that failed alike share one line); the others
go on. When every run finished, ``output.root/study_<stem>_vs_<stem>....png`` and ``.md``
hold the mean curves with bands and the table over seeds (``scripts/compare.py`` on the run
directories).

``--until-decided`` picks the seeds itself, round by round, until each comparison with the first
config is decided (:mod:`reid.launch.rounds`); ``--grid key=v1,v2`` turns the last config into
variants (:func:`grid_variants`).

``--slurm`` submits the unfinished runs as a SLURM job array instead, then a comparison job
that depends on it (see :mod:`reid.launch.slurm`); ``--print-commands`` prints one ``train.py``
command per unfinished run, for any other scheduler. Both decide "finished" from each run's
``checkpoints/last.pt``, so the same command again schedules only what is left.

Exit status: 0 every run and the comparison succeeded (``--slurm``: submitted); 1 a run or the
comparison failed; 2 usage error or a problem found before training; 130 interrupted.
"""

from __future__ import annotations

import argparse
import itertools
import re
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from ..cli import ErrorLine, parse_int_list
from .cli import EXIT_RUN_FAILED, Parser, add_run_arguments, check_configs, check_sets, run_launch, write_comparison
from .jobs import report, run_jobs
from .checks import Problems, config_problems, rerun_problems
from .runs import Job, LaunchError, TrainerCommand, check_distinct_run_dirs, device_slots, parse_gpus
from . import slurm

# Keys the study sets itself for each run, and what to use instead.
RESERVED = {"seed": "the study sets each run's seed; list them with --seeds",
            "output.name": "the study names each run <config stem>_s<seed>; set output.root to choose the folder"}


def build_parser() -> Parser:
    p = Parser(prog="study.sh", description="Train every config with every seed into output.root/<config "
               "stem>_s<seed> (resumable), then write the comparison over seeds (study_*.png/.md).")
    add_run_arguments(p, "the configs to compare")
    p.add_argument("--seeds", default=None, help="seeds, comma-separated, e.g. 0,1,2,3,4 (required)")
    p.add_argument("--per-gpu", default="1", metavar="N|auto",
                   help="with --gpus: runs trained at once on each GPU (default 1); auto: as many as fit in the GPU's "
                   "free memory at one run's peak, measured by a short probe run of the first run")
    p.add_argument("--jobs", type=int, default=1, metavar="N",
                   help="without --gpus: runs trained at once (default 1; each CPU run uses every core)")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--slurm", action="store_true", help="submit the unfinished runs as a SLURM job array, "
                       "then a comparison job after it (output.root/study_*.sbatch)")
    where.add_argument("--print-commands", action="store_true",
                       help="print one train.py command per unfinished run, one per line, and exit")
    where.add_argument("--compare-only", action="store_true",
                       help="train nothing: write the comparison when every run has finished (the SLURM "
                       "comparison job runs this)")
    p.add_argument("--sbatch", default="", metavar="OPTIONS",
                   help='with --slurm: sbatch options passed through unchanged, e.g. "--partition=gpu '
                   '--gres=gpu:1 --time=4:00:00" (or --sbatch=--time=60)')
    p.add_argument("--max-requeues", type=int, default=slurm.MAX_REQUEUES, metavar="N",
                   help=f"with --slurm: a task warned of its time limit requeues itself at most N times (default "
                   f"{slurm.MAX_REQUEUES})")
    p.add_argument("--grid", action="append", default=[], metavar="KEY=V1,V2",
                   help="variants of the last config, one per value (repeatable: their product), each named after its "
                   "values: --grid criterion.uniform_weight=0.25,0.5,1 -> soft_uw0.25, soft_uw0.5, soft_uw1; values "
                   "are YAML: data.size=[64,32],[128,64] has two")
    p.add_argument("--extend", action="store_true",
                   help="train finished runs on to a raised train.epochs (without it such a rerun trains nothing "
                   "and says what would change)")
    p.add_argument("--until-decided", action="store_true",
                   help="train seeds 0, 1, 2, then one more per round, until each comparison with the first config is "
                   "decided (better, worse, equivalent) or --max-seeds; 5%% error over all looks (README)")
    p.add_argument("--max-seeds", type=int, default=10, metavar="N", help="with --until-decided: the most seeds "
                   "(default 10)")
    p.add_argument("--margin", type=float, default=None, metavar="M",
                   help="with --until-decided: a difference within ±M points is decided equivalent (default: none)")
    p.add_argument("--metric", choices=("mAP", "rank1"), default="mAP", help="with --until-decided: what is "
                   "compared (default mAP)")
    # the round a --until-decided --slurm follow-up job waited for (it submits the next one, or stops)
    p.add_argument("--after-look", type=int, default=None, help=argparse.SUPPRESS)
    p.add_argument("--nproc-per-node", type=int, default=1, metavar="N",
                   help="with --slurm: train each run with torchrun, N processes on each node of its task (ask for "
                   'the nodes and GPUs with --sbatch "--nodes=2 --gres=gpu:N"; default 1: no torchrun)')
    return p


@dataclass(frozen=True)
class Variant:
    """One config of the study: its ``name`` (the config's stem, with the values of a ``--grid`` variant),
    its file and the overrides that make the variant."""

    name: str
    config: Path
    overrides: tuple[str, ...] = ()

    @classmethod
    def of(cls, config: Path) -> "Variant":
        return cls(config.stem, config)


def grid_axes(grid: Sequence[str]) -> list[tuple[str, list[str]]]:
    """Each ``--grid key=v1,v2,...`` as ``(key, [v1, v2, ...])``. The values are YAML, split at the commas
    outside brackets and quotes, so ``key=[0.25,0.5],[1,2]`` has the two values ``[0.25,0.5]`` and ``[1,2]``;
    a value listed twice (as YAML: ``0.5`` and ``0.50``) is refused.

    Example::

        grid_axes(["criterion.uniform_weight=0.25,0.5", "data.size=[64,32],[128,64]"])
        # -> [("criterion.uniform_weight", ["0.25", "0.5"]), ("data.size", ["[64,32]", "[128,64]"])]
    """
    from ..config import parse_override

    axes = []
    for item in grid:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key or not text.strip():
            raise LaunchError(f"--grid {item}: give key=v1,v2,..., e.g. --grid criterion.uniform_weight=0.25,0.5,1")
        if key in RESERVED:
            raise LaunchError(f"--grid {item}: {RESERVED[key]}")
        values = top_level_items(text)
        if any(not v for v in values):
            raise LaunchError(f"--grid {item}: a value is empty; separate the values with single commas")
        seen: dict[str, str] = {}
        for v in values:
            same = seen.setdefault(repr(parse_override(f"{key}={v}")[1]), v)
            if same is not v:
                raise LaunchError(f"--grid {item}: the value {v} is listed twice ({same} and {v}); list each value "
                                  "once")
        axes.append((key, values))
    return axes


def top_level_items(text: str) -> list[str]:
    """``text`` split at the commas outside brackets, braces and quotes, each item stripped.

    Example::

        top_level_items("[0.25,0.5], 1, '2,3'")   # -> ["[0.25,0.5]", "1", "'2,3'"]
    """
    items, depth, quote, start = [], 0, "", 0
    for i, c in enumerate(text):
        if quote:
            quote = "" if c == quote else quote
        elif c in "'\"":
            quote = c
        elif c in "[{":
            depth += 1
        elif c in "]}":
            depth -= 1
        elif c == "," and depth == 0:
            items.append(text[start:i].strip())
            start = i + 1
    return items + [text[start:].strip()]


def grid_variants(config: Path, axes: Sequence[tuple[str, list[str]]]) -> list[Variant]:
    """The variants of ``config`` over the product of the ``--grid`` axes (:func:`grid_axes`), each named after
    its values: ``criterion.uniform_weight=0.25,0.5`` -> ``soft_uw0.25``, ``soft_uw0.5``.

    Example::

        [v.name for v in grid_variants(Path("configs/soft.yaml"), grid_axes(["criterion.uniform_weight=0.5,1"]))]
        # -> ["soft_uw0.5", "soft_uw1"]
    """
    named = []
    for key, values in axes:
        last = key.split(".")[-1]
        short = "".join(word[0] for word in last.split("_") if word) if "_" in last else last
        named.append([(f"{key}={v}", short + re.sub(r"[^A-Za-z0-9.+-]+", "-", v).strip("-")) for v in values])
    return [Variant("_".join([config.stem, *(tag for _, tag in combo)]), config, tuple(o for o, _ in combo))
            for combo in itertools.product(*named)]


def run_name(variant: Variant, seed: int) -> str:
    """The run directory name of ``variant`` with ``seed``: ``<name>_s<seed>``."""
    return f"{variant.name}_s{seed}"


def parse_per_gpu(text: str) -> int | str:
    """``--per-gpu``: a positive number of runs, or ``auto``."""
    if text == "auto":
        return text
    try:
        return int(text)
    except ValueError:
        raise LaunchError(f"--per-gpu {text}: give a number of runs per GPU (e.g. 2) or auto") from None


def plan(variants: Sequence[Variant], seeds: list[int], sets: list[str]) -> list[Job]:
    """One job per (seed, variant), seed by seed."""
    return [Job(run_name(v, s), v.config, [*sets, *v.overrides, f"seed={s}", f"output.name={run_name(v, s)}"])
            for s in seeds for v in variants]


def resolve(jobs: list[Job]) -> None:
    """Fill each job's run directory (their configs were checked before: :func:`check_configs_before_training`)."""
    for job in jobs:
        job.resolve()
    check_distinct_run_dirs(jobs)


def check_configs_before_training(configs: Sequence[Path], axes: Sequence[tuple[str, list[str]]],
                                  variants: Sequence[Variant], sets: Sequence[str]) -> None:
    """:class:`Problems` with one line per problem of the study's configs, ``--set`` and ``--grid`` values."""
    problems = config_problems(configs, axes, variants, sets)
    if problems:
        raise Problems(problems)


def check_reruns(jobs: Sequence[Job], extend: bool) -> None:
    """:class:`Problems` when the study would continue runs trained with other settings, or extend finished
    runs without ``--extend`` (:func:`reid.launch.checks.rerun_problems`)."""
    problems = rerun_problems(jobs, extend)
    if problems:
        raise Problems(problems)


def study_out(jobs: list[Job], variants: Sequence[Variant]) -> Path:
    """``study_<name>_vs_<name>....png`` in the folder of the first run."""
    stem = "study_" + "_vs_".join(v.name for v in variants)
    if len(stem) > 150:  # a large grid: keep the file name within file-system limits
        stem = f"{stem[:120]}_and_{len(variants)}_configs"
    return jobs[0].run_dir.parent / f"{stem}.png"


def unfinished(jobs: list[Job]) -> list[int]:
    """Indices of the jobs whose run has not finished all its epochs (by its checkpoint)."""
    from ..engine.checkpoint import run_finished

    return [i for i, job in enumerate(jobs) if not run_finished(job.run_dir, job.epochs)]


def print_commands(jobs: list[Job], trainer: TrainerCommand) -> int:
    """One shell command line per unfinished run on stdout (what a local study would run)."""
    todo = unfinished(jobs)
    for i in todo:
        print(shlex.join(trainer.argv(jobs[i])))
    if not todo:
        print("study: every run has finished; no command to print", file=sys.stderr)
    return 0


def submit_to_slurm(jobs: list[Job], configs: list[Variant], trainer: TrainerCommand, compare_argv: list[str],
                    sbatch_options: str, max_requeues: int = slurm.MAX_REQUEUES, nproc_per_node: int = 1) -> int:
    """Write the study's sbatch script and submit the unfinished runs, then the comparison job."""
    out = study_out(jobs, configs)
    name = out.stem
    queued = slurm.queued_jobs(name)
    if queued:
        raise LaunchError(f"jobs {', '.join(queued)} of this study ({name}) are still queued or running; wait for "
                          f"them (squeue -n {name}) or cancel them (scancel -n {name}), then run this command again")
    todo = unfinished(jobs)
    if not todo:
        print("study: every run has finished; nothing submitted")
        return 0 if write_comparison([job.run_dir for job in jobs], out) else EXIT_RUN_FAILED
    slurm_out = out.parent / "slurm"
    script = slurm.write_script(out.with_suffix(".sbatch"), jobs, trainer, compare_argv, name, slurm_out, Path.cwd(),
                                max_requeues, nproc_per_node)
    try:
        options = shlex.split(sbatch_options)
    except ValueError as e:
        raise LaunchError(f"--sbatch {sbatch_options!r}: {e}; quote it as one argument") from e
    array_id, compare_id = slurm.submit(script, todo, options, slurm_out)
    print(f"study: {len(todo)} of {len(jobs)} runs to train; wrote {script}")
    print(f"submitted job array {array_id} ({len(todo)} tasks) and comparison job {compare_id} (after the array)")
    for i in todo:
        print(f"  task {array_id}_{i}: {jobs[i].label}, log {jobs[i].log_path}")
    print(f"comparison: {out} and {out.with_suffix('.md')} when job {compare_id} ends (its output in {slurm_out})")
    return 0


def unfinished_note(job: Job) -> str:
    """``label (output in LOG)``, with why its last start ended where its log says (the requeue cap, an error)."""
    why = last_start_error(job.log_path)
    return f"{job.label} ({why.removeprefix('error: ')}; output in {job.log_path})" if why else \
        f"{job.label} (output in {job.log_path})"


def last_start_error(log: Path) -> str:
    """The first ``error:`` line of the log's last start (after its last ``== `` header), or ""."""
    try:
        text = log.read_text(errors="replace")
    except OSError:
        return ""
    reader = ErrorLine()
    reader.feed(text[text.rfind("\n== ") + 1:])
    return reader.first_error


def compare_only(jobs: list[Job], configs: list[Variant]) -> int:
    """Write the comparison if every run has finished; else name the runs that have not."""
    left = unfinished(jobs)
    if left:
        print(f"error: no comparison written: {len(left)} run(s) have not finished: "
              f"{', '.join(unfinished_note(jobs[i]) for i in left)}; run the same study command again to train them",
              file=sys.stderr)
        return EXIT_RUN_FAILED
    out = study_out(jobs, configs)
    return 0 if write_comparison([job.run_dir for job in jobs], out) else EXIT_RUN_FAILED


def study(args: argparse.Namespace, where: str = "here") -> int:
    """Train configs x seeds and compare them; returns the exit status (see the module docstring).

    ``args`` are the command's options (:func:`build_parser`); ``where``: ``here`` trains locally,
    ``slurm`` submits to SLURM, ``print`` prints the commands, ``compare`` only writes the comparison.
    """
    if not args.configs:
        raise LaunchError("give at least one config")
    if args.until_decided:
        if args.seeds:
            raise LaunchError("--until-decided chooses the seeds (0, 1, 2, then one more per round up to "
                              "--max-seeds); leave out --seeds")
        if where not in ("here", "slurm"):
            raise LaunchError("--until-decided trains its rounds here or on SLURM (--slurm); for another scheduler, "
                              "give --seeds and read the decisions and the seeds-needed line of the study's table")
    elif not args.seeds:
        raise LaunchError("give the seeds, e.g. --seeds 0,1,2 (or --until-decided)")
    elif args.max_seeds != 10 or args.margin is not None or args.metric != "mAP":
        raise LaunchError("--max-seeds, --margin and --metric say when --until-decided stops; add --until-decided")
    seed_list = parse_int_list(args.seeds, "--seeds") if args.seeds else []
    check_sets(args.sets, RESERVED)
    gpu_ids = parse_gpus(args.gpus)
    args.per_gpu = parse_per_gpu(args.per_gpu)
    if args.per_gpu != 1 and not gpu_ids:
        raise LaunchError("--per-gpu needs --gpus; without GPUs use --jobs N")
    if args.jobs != 1 and gpu_ids:
        raise LaunchError("--jobs is for runs without --gpus; with GPUs use --per-gpu N")
    if where != "here" and (gpu_ids or args.per_gpu != 1 or args.jobs != 1):
        raise LaunchError("--gpus, --per-gpu and --jobs place runs on this machine; with --slurm ask for GPUs with "
                          '--sbatch "--gres=gpu:1", with --print-commands your scheduler places them')
    if where != "slurm" and (args.nproc_per_node != 1 or args.max_requeues != slurm.MAX_REQUEUES):
        raise LaunchError("--nproc-per-node and --max-requeues are for --slurm tasks; on this machine run train.py "
                          "under torchrun yourself (python -m torch.distributed.run --standalone --nproc_per_node=N "
                          "train.py ...)")
    if args.nproc_per_node < 1 or args.max_requeues < 0:
        raise LaunchError(f"--nproc-per-node {args.nproc_per_node} / --max-requeues {args.max_requeues}: give at "
                          "least 1 process per node and 0 or more requeues")
    trainer = TrainerCommand.of(args.trainer, args.device)
    config_paths = check_configs(args.configs)
    if len({c.stem for c in config_paths}) != len(config_paths):
        raise LaunchError(f"two configs have the same file name ({', '.join(args.configs)}); the runs are named "
                          "after it, so rename one")
    axes = grid_axes(args.grid)
    variants = [Variant.of(c) for c in config_paths[:-1]]
    variants += grid_variants(config_paths[-1], axes) if axes else [Variant.of(config_paths[-1])]
    check_configs_before_training(config_paths, axes, variants, args.sets)
    if args.per_gpu == "auto":
        from . import packing

        first = plan(variants[:1], (seed_list or [0])[:1], list(args.sets))[0]
        args.per_gpu, why = packing.choose_per_gpu(gpu_ids, first, trainer)
        print(f"study: --per-gpu auto: {args.per_gpu} run(s) per GPU ({why})", flush=True)
    slots = device_slots(gpu_ids, args.per_gpu, args.jobs)

    if args.until_decided:
        from . import rounds

        if where == "slurm":
            follow_up = [trainer.python, "-m", "reid.launch.study", *map(str, args.configs), "--until-decided",
                         "--max-seeds", str(args.max_seeds), "--metric", args.metric,
                         *(["--extend"] if args.extend else []),
                         *(["--margin", str(args.margin)] if args.margin is not None else []),
                         *(a for g in args.grid for a in ("--grid", g)), *(a for s in args.sets for a in ("--set", s)),
                         "--trainer", str(trainer.script), "--slurm", f"--sbatch={args.sbatch}",
                         "--max-requeues", str(args.max_requeues), "--nproc-per-node", str(args.nproc_per_node)]
            return rounds.until_decided_on_slurm(variants, list(args.sets), args.max_seeds, args.margin, args.metric,
                                                 trainer, follow_up, args.sbatch, args.after_look, args.max_requeues,
                                                 args.nproc_per_node, args.extend)
        return rounds.until_decided(variants, list(args.sets), args.max_seeds, args.margin, args.metric, slots,
                                    trainer, args.extend)
    jobs = plan(variants, seed_list, list(args.sets))
    resolve(jobs)
    if where != "compare":
        check_reruns(jobs, args.extend)
    if where == "print":
        return print_commands(jobs, trainer)
    if where == "compare":
        return compare_only(jobs, variants)
    if where == "slurm":
        compare_argv = [trainer.python, "-m", "reid.launch.study", *map(str, args.configs), "--seeds", args.seeds,
                        *(a for s in args.sets for a in ("--set", s)), *(a for g in args.grid for a in ("--grid", g)),
                        "--trainer", str(trainer.script), "--compare-only"]
        return submit_to_slurm(jobs, variants, trainer, compare_argv, args.sbatch, args.max_requeues,
                               args.nproc_per_node)
    print(f"study: {len(variants)} config(s) x {len(seed_list)} seed(s) = {len(jobs)} runs, {len(slots)} at once")
    if not train_all(jobs, slots, trainer):
        return EXIT_RUN_FAILED
    out = study_out(jobs, variants)
    if not write_comparison([job.run_dir for job in jobs], out):
        return EXIT_RUN_FAILED
    print(f"comparison: {out} and {out.with_suffix('.md')}")
    return 0


def train_all(jobs: list[Job], slots: list[str | None], trainer: TrainerCommand) -> bool:
    """Train ``jobs`` here and report each; False (after saying so) when one failed."""
    outcomes = run_jobs(jobs, slots, trainer)
    failed = sum(not o.ok for o in outcomes)
    print(f"study: {len(jobs) - failed} of {len(jobs)} runs finished")
    if not report(outcomes):
        print(f"no comparison written: {failed} run(s) failed; fix them and rerun this command (finished runs "
              "are not redone)", file=sys.stderr)
        return False
    return True


def with_sbatch_values_attached(argv: Sequence[str]) -> list[str]:
    """``--sbatch VALUE`` as ``--sbatch=VALUE``: argparse takes a lone value that starts with ``--``
    (``--sbatch "--cpus-per-task=2"``) for an option of its own and refuses it.

    Example::

        with_sbatch_values_attached(["--sbatch", "--time=10", "a.yaml"])   # -> ["--sbatch=--time=10", "a.yaml"]
    """
    out, args = [], list(argv)
    while args:
        arg = args.pop(0)
        out.append(f"--sbatch={args.pop(0)}" if arg == "--sbatch" and args else arg)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_intermixed_args(with_sbatch_values_attached(sys.argv[1:] if argv is None else argv))
    if args.sbatch and not args.slurm:
        parser.error("--sbatch passes options to sbatch, so it needs --slurm")
    where = "slurm" if args.slurm else "print" if args.print_commands else "compare" if args.compare_only else "here"
    return run_launch(lambda: study(args, where))


if __name__ == "__main__":
    sys.exit(main())
