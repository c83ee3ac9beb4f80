"""``scripts/study.sh``: train every config with every seed, then compare the configs over the seeds.

    scripts/study.sh configs/standard.yaml configs/soft.yaml --seeds 0,1,2,3,4
    scripts/study.sh configs/bot_standard.yaml configs/bot_soft.yaml --seeds 0,1,2 --gpus 0,1 --per-gpu 3

Run ``<stem>_s<seed>`` of each config and seed trains into ``output.root/<stem>_s<seed>``
(``--set seed=<seed> --set output.name=<stem>_s<seed>``), the seeds in turn, every config of
one seed before the next seed, so that complete pairs come first. Runs of the same seed see
the same images in the same order with the same augmentation; only the config differs.

Every run uses ``--resume auto``: the same command again after a crash leaves finished runs
as they are and continues the interrupted ones. A run that fails (or whose config does not
load) is reported at the end with the last line of its output; the others go on. When every
run finished, ``output.root/study_<stem>_vs_<stem>....png`` and ``.md`` hold the mean curves
with bands and the table over seeds (``scripts/compare.py`` on the run directories).

Exit status: 0 every run and the comparison succeeded; 1 a run or the comparison failed;
2 usage error; 130 interrupted.
"""

from __future__ import annotations

import sys
from pathlib import Path

from .cli import EXIT_RUN_FAILED, Parser, add_run_arguments, check_configs, check_sets, run_launch, write_comparison
from .runner import Job, LaunchError, TrainerCommand, check_distinct_run_dirs, device_slots, parse_gpus, report, run_jobs

# Keys the study sets itself for each run, and what to use instead.
RESERVED = {"seed": "the study sets each run's seed; list them with --seeds",
            "output.name": "the study names each run <config stem>_s<seed>; set output.root to choose the folder"}


def build_parser() -> Parser:
    p = Parser(prog="study.sh", description="Train every config with every seed into output.root/<config "
               "stem>_s<seed> (resumable), then write the comparison over seeds (study_*.png/.md).")
    add_run_arguments(p, "the configs to compare")
    p.add_argument("--seeds", default=None, help="seeds, comma-separated, e.g. 0,1,2,3,4 (required)")
    p.add_argument("--per-gpu", type=int, default=1, metavar="N",
                   help="with --gpus: runs trained at once on each GPU (default 1)")
    p.add_argument("--jobs", type=int, default=1, metavar="N",
                   help="without --gpus: runs trained at once (default 1; each CPU run uses every core)")
    return p


def parse_seeds(text: str | None) -> list[int]:
    """``"0,1,2"`` -> ``[0, 1, 2]``.

    Example::

        parse_seeds("3,1")   # -> [3, 1]
    """
    if not text:
        raise LaunchError("give the seeds, e.g. --seeds 0,1,2")
    items = [s.strip() for s in text.split(",")]
    if not all(s.isdigit() for s in items):
        raise LaunchError(f"--seeds {text}: give non-negative integers separated by commas, e.g. --seeds 0,1,2")
    seeds = [int(s) for s in items]
    if len(set(seeds)) != len(seeds):
        raise LaunchError(f"--seeds {text}: a seed is listed twice")
    return seeds


def run_name(config: Path, seed: int) -> str:
    """The run directory name of ``config`` with ``seed``: ``<stem>_s<seed>``."""
    return f"{config.stem}_s{seed}"


def plan(configs: list[Path], seeds: list[int], sets: list[str]) -> list[Job]:
    """One job per (seed, config), seed by seed."""
    return [Job(run_name(c, s), c, [*sets, f"seed={s}", f"output.name={run_name(c, s)}"]) for s in seeds for c in configs]


def resolve(jobs: list[Job], trainer: TrainerCommand) -> None:
    """Fill each job's run directory; a config that does not load marks its jobs with the error."""
    errors: dict[Path, str] = {}
    for job in jobs:
        if job.config in errors:
            job.error = errors[job.config]
            continue
        try:
            job.run_dir = trainer.run_dir(job.config, job.overrides)
        except LaunchError as e:
            job.error = errors[job.config] = str(e)
            print(f"error: {e}; its runs are skipped, the others go on", file=sys.stderr)
    check_distinct_run_dirs(jobs)


def study_out(jobs: list[Job], configs: list[Path]) -> Path:
    """``study_<stem>_vs_<stem>....png`` in the folder of the first run."""
    return jobs[0].run_dir.parent / ("study_" + "_vs_".join(c.stem for c in configs) + ".png")


def study(configs: list[str], seeds: str | None, sets: list[str], gpus: str, per_gpu: int, jobs_at_once: int,
          device: str | None) -> int:
    """Train configs x seeds and compare them; returns the exit status (see the module docstring)."""
    if not configs:
        raise LaunchError("give at least one config")
    seed_list = parse_seeds(seeds)
    check_sets(sets, RESERVED)
    gpu_ids = parse_gpus(gpus)
    if per_gpu != 1 and not gpu_ids:
        raise LaunchError("--per-gpu needs --gpus; without GPUs use --jobs N")
    if jobs_at_once != 1 and gpu_ids:
        raise LaunchError("--jobs is for runs without --gpus; with GPUs use --per-gpu N")
    slots = device_slots(gpu_ids, per_gpu, jobs_at_once)
    trainer = TrainerCommand.from_env(device)
    config_paths = check_configs(configs)
    if len({c.stem for c in config_paths}) != len(config_paths):
        raise LaunchError(f"two configs have the same file name ({', '.join(configs)}); the runs are named "
                          "after it, so rename one")

    jobs = plan(config_paths, seed_list, list(sets))
    resolve(jobs, trainer)
    print(f"study: {len(config_paths)} config(s) x {len(seed_list)} seed(s) = {len(jobs)} runs, "
          f"{len(slots)} at once")
    outcomes = run_jobs(jobs, slots, trainer)
    failed = sum(not o.ok for o in outcomes)
    print(f"study: {len(jobs) - failed} of {len(jobs)} runs finished")
    if not report(outcomes):
        print(f"no comparison written: {failed} run(s) failed; fix them and rerun this command (finished runs "
              "are not redone)", file=sys.stderr)
        return EXIT_RUN_FAILED
    out = study_out(jobs, config_paths)
    if not write_comparison([job.run_dir for job in jobs], out):
        return EXIT_RUN_FAILED
    print(f"comparison: {out} and {out.with_suffix('.md')}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_intermixed_args(argv)
    return run_launch(lambda: study(args.configs, args.seeds, args.sets, args.gpus, args.per_gpu, args.jobs,
                                    args.device))


if __name__ == "__main__":
    sys.exit(main())
