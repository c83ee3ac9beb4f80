"""``scripts/paired.sh``: train two configs as a pair (same seed, same overrides), then compare them.

    scripts/paired.sh configs/standard.yaml configs/soft.yaml --seed 0 --set train.epochs=60
    scripts/paired.sh A.yaml B.yaml --gpus 0,1        # both at once, one GPU each

Both runs use ``--resume auto``: the same command again after a crash continues both where
they stopped, and a finished run returns at once. With one GPU id both runs train on it one
after the other; with two, A on the first and B on the second at the same time. Exit status:
0 both runs and the comparison succeeded; 1 a run or the comparison failed (named on
stderr); 2 usage error or the run directories cannot be resolved.
"""

from __future__ import annotations

import sys

from .cli import EXIT_RUN_FAILED, Parser, add_run_arguments, check_configs, check_sets, run_launch, write_comparison
from .jobs import report, run_jobs
from .runs import Job, LaunchError, TrainerCommand, check_distinct_run_dirs, device_slots, parse_gpus


def build_parser() -> Parser:
    p = Parser(prog="paired.sh", description="Train two configs as a pair (same seed, same overrides), then "
               "compare their curves (compare_A_vs_B.png/.md beside the runs).")
    add_run_arguments(p, "exactly two configs: A and B")
    p.add_argument("--seed", default=None, help="passed to both as --set seed=S (default: each config's own)")
    return p


def paired(configs: list[str], seed: str | None, sets: list[str], gpus: str, device: str | None,
           trainer_script: str) -> int:
    """Train the pair and compare it; returns the exit status (see the module docstring)."""
    if len(configs) != 2:
        raise LaunchError(f"give exactly two configs (got {len(configs)})")
    check_sets(sets)
    if seed is not None and not seed.isdigit():
        raise LaunchError(f"--seed {seed} is not a non-negative integer")
    gpu_ids = parse_gpus(gpus)
    if len(gpu_ids) > 2:
        raise LaunchError(f"--gpus takes one or two ids (got {gpus})")
    trainer = TrainerCommand.of(trainer_script, device)
    config_a, config_b = check_configs(configs)

    common = list(sets) + ([f"seed={seed}"] if seed is not None else [])  # --seed last: it wins
    if seed is None:
        print("note: no --seed given: each config's own seed is used (the pair shares the data order only if "
              "they match)", file=sys.stderr)
    jobs = [Job(label, config, common) for label, config in (("A", config_a), ("B", config_b))]
    for job in jobs:
        job.resolve()
        print(f"run {job.label}: {job.config} -> {job.run_dir}")
    check_distinct_run_dirs(jobs)

    if not report(run_jobs(jobs, device_slots(gpu_ids), trainer)):
        print("no comparison written: both runs must finish first", file=sys.stderr)
        return EXIT_RUN_FAILED
    run_a, run_b = (job.run_dir for job in jobs)
    out = run_a.parent / f"compare_{run_a.name}_vs_{run_b.name}.png"
    if not write_comparison([run_a, run_b], out):
        return EXIT_RUN_FAILED
    print(f"run A: {run_a}")
    print(f"run B: {run_b}")
    print(f"comparison: {out} and {out.with_suffix('.md')}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_intermixed_args(argv)
    return run_launch(lambda: paired(args.configs, args.seed, args.sets, args.gpus, args.device, args.trainer))


if __name__ == "__main__":
    sys.exit(main())
