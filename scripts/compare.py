#!/usr/bin/env python
"""Compare training runs' per-mini-batch curves and print a summary table.

    scripts/compare.py outputs/standard outputs/soft --metrics train_acc --range 0:0.1 --smooth 10
    scripts/compare.py a/mini_batch_data.mat b/ --x epoch --out cmp.png   # also writes cmp.md
    scripts/compare.py outputs/standard_s* outputs/soft_s* --band std      # a study over seeds

Runs named <config>_s<seed> (or runs of one name in several folders, e.g. seed0/soft and
seed1/soft) are a study: mean curves over seeds with a band, mean ± std per config and
paired differences with a 95% t interval (reid/analysis/over_seeds.py).

Logic and conventions live in reid/analysis/compare.py.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

# Runnable from a checkout without installing the package.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from reid.errors import ReidError  # noqa: E402


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description="Plot runs' mini_batch_data.mat curves side by side (one panel per metric) and "
                    "write FILE.png + FILE.md with a summary table per run.")
    p.add_argument("runs", nargs="+", metavar="RUN_DIR_OR_MAT", help="run directories or .mat files")
    p.add_argument("--metrics", default=None,
                   help="comma-separated metrics (default train_loss,train_acc,val_loss,val_acc)")
    p.add_argument("--smooth", type=int, default=1, metavar="N",
                   help="trailing moving average over N mini-batches (default 1 = none)")
    p.add_argument("--x", choices=("batch", "epoch"), default="batch", help="x axis (default batch)")
    p.add_argument("--range", dest="range_", default=None, metavar="A:B",
                   help="fraction of the longest run's mini-batches to show, e.g. 0:0.1 (default all)")
    p.add_argument("--band", choices=("minmax", "std"), default="minmax",
                   help="a study's band around the mean curve: min-max over seeds or ±1 std (default minmax)")
    p.add_argument("--out", default=None, metavar="FILE.png",
                   help="figure path (default: compare_<run>_vs_<run>.png, or study_<config>_vs_<config>.png for a study, in the runs' common parent); FILE.md is written beside it")
    p.add_argument("--debug", action="store_true", help="show the traceback on errors")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        from reid.analysis import compare

        png, table = compare(args.runs, out=args.out, metrics=args.metrics, smooth=args.smooth,
                             x=args.x, range_=args.range_, band=args.band)
    except ReidError as e:
        if args.debug:
            raise
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(table, end="")
    print(f"wrote {png} and {png.with_suffix('.md')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
