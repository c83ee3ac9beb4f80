#!/usr/bin/env python
"""Benchmarks: ``python scripts/bench.py data|train|eval|all [options]``.

    data   images/s of the classic per-image pipeline vs the cached batched path (one thread)
    train  a bare forward/backward/step loop vs the full trainer step, images/s and their ratio
    eval   distance + ranking + CMC + mAP on a Market-1501-sized problem
    pack   images/s of 1 run alone vs N runs packed on one GPU (study.sh --per-gpu N)
    epoch  what an epoch costs beyond its steps (checkpoint, .mat/TensorBoard, val), checkpoint waited vs background
    all    data, train and eval, and a JSON of the results beside the printed tables (--json FILE)
"""

import argparse
import importlib
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from reid.cli import run_main  # noqa: E402
from reid.io import atomic_write_text  # noqa: E402

SUITES = ("data", "train", "eval")  # what `all` runs
EXTRA = ("pack", "epoch")  # not in `all`: they train for minutes (pack: several processes, meaningful on a GPU)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--debug", action="store_true")
    sub = parser.add_subparsers(dest="suite", required=True)
    for name in SUITES + EXTRA:
        importlib.import_module(f"tools.bench.{name}").add_arguments(sub.add_parser(name))
    every = sub.add_parser("all", help="data, train and eval with their defaults")
    every.add_argument("--json", default="outputs/bench.json", help="where to write the results")
    every.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    args = parser.parse_args(argv)

    def body() -> int:
        if args.suite != "all":
            importlib.import_module(f"tools.bench.{args.suite}").run(args)
            return 0
        results = {}
        for name in SUITES:
            module = importlib.import_module(f"tools.bench.{name}")
            sub_parser = argparse.ArgumentParser()
            module.add_arguments(sub_parser)
            defaults = sub_parser.parse_args([])
            if hasattr(defaults, "device"):
                defaults.device = args.device
            print(f"\n== {name} ==")
            results[name] = module.run(defaults)
        atomic_write_text(args.json, json.dumps(results, indent=2, default=str) + "\n")
        print(f"\nwrote {args.json}")
        return 0

    return run_main(body, debug=args.debug)


if __name__ == "__main__":
    sys.exit(main())
