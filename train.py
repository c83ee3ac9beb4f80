#!/usr/bin/env python
"""Train a re-ID model: ``python train.py --config configs/soft.yaml [--set key.path=value ...]``.

Options:
    --config FILE         experiment config (YAML; see configs/base.yaml for every key)
    --set KEY=VALUE       override a config key, value parsed as YAML (repeatable)
    --resume auto|PATH    auto: continue the run in the run directory if it has a checkpoint
    --device cpu|cuda|auto
    --print-run-dir       print the resolved run directory and exit
    --debug               show tracebacks

SIGTERM or SIGUSR1 (preemption, a cluster's warning before its time limit) stops training at
the next step boundary: the checkpoint and the .mat are written, ``stopped at epoch E, step S:
checkpoint written; continue with --resume auto`` is printed, and the exit status is 75.

The first Ctrl-C (SIGINT) stops the same way; a second one interrupts at once.

Exit status: 0 finished; 2 a user mistake (one ``error:`` line); 75 stopped by SIGTERM/SIGUSR1 or
a first Ctrl-C, checkpoint written (continue with --resume auto); 130 interrupted by a second Ctrl-C
(the message says where the last checkpoint is and how many steps --resume auto redoes).
"""

import argparse
import sys

from reid.cli import run_main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Train a person re-ID model on Market-1501.")
    p.add_argument("--config", required=True, help="experiment config, e.g. configs/soft.yaml")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key (repeatable), e.g. --set train.epochs=10")
    p.add_argument("--resume", default=None, metavar="auto|PATH",
                   help="auto: continue the run directory's checkpoint if any; PATH: continue from that file")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--print-run-dir", action="store_true", help="print the run directory and exit")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)

    def body() -> int:
        from reid.config import load_config, run_dir

        cfg = load_config(args.config, args.overrides)
        if args.print_run_dir:
            print(run_dir(cfg))
            return 0
        from reid.engine.run import train

        train(cfg, device=args.device, resume=args.resume, progress=not args.no_progress)
        return 0

    return run_main(body, debug=args.debug)


if __name__ == "__main__":
    sys.exit(main())
