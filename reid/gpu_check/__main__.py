"""``python -m reid.gpu_check [--market-root DIR] [--device cuda|cpu] [--tiny] [--out DIR]``
(what ``scripts/gpu_check.sh`` runs).

Exit status: 0 every part ok; 1 a part failed or timed out (the report says which and
why); 2 a usage error; 130 interrupted (the report keeps the parts that finished).
"""

from __future__ import annotations

import argparse
import shutil
import signal
import sys
from pathlib import Path

from ..cli import EXIT_INTERRUPTED, run_main
from ..errors import ReidError
from .parts import PARTS
from .report import REPORT_JSON, REPORT_MD, new_report
from .runner import PartRun, run_parts
from .scale import scale_for

# What a rerun into the same --out replaces; the decoded-image cache (keyed by the file list) is kept.
PREVIOUS_OUTPUTS = ("runs", "parts", "logs", "synthetic")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="scripts/gpu_check.sh", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--market-root", type=Path, default=None,
                   help="the Market-1501 (mini) set: folder holding bounding_box_train/, query/, bounding_box_test/")
    p.add_argument("--device", default="cuda", choices=["cuda", "cpu"], help="default cuda")
    p.add_argument("--tiny", action="store_true",
                   help="synthetic data and tiny sizes: the CPU rehearsal (a minute or two)")
    p.add_argument("--out", type=Path, default=Path("outputs/gpu_check"), help="default outputs/gpu_check")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    return p.parse_args(argv)


def check_args(args: argparse.Namespace) -> None:
    if args.device == "cpu" and not args.tiny:
        raise ReidError("--device cpu: the full check trains ResNet-50 at 256x128 and would take hours on a CPU; "
                        "add --tiny for the CPU rehearsal")
    if args.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise ReidError("--device cuda: no CUDA device is visible; run the CPU rehearsal with --device cpu --tiny")
    if args.market_root is not None and not args.market_root.is_dir():
        raise ReidError(f"--market-root {args.market_root}: no such folder; pass the folder holding "
                        "bounding_box_train/, query/ and bounding_box_test/")


def prepare_out(out: Path) -> None:
    """Make ``out``; a previous check's results there are replaced, anything else there is refused."""
    if out.exists() and any(out.iterdir()) and not (out / REPORT_JSON).exists():
        raise ReidError(f"--out {out}: the folder holds files that are not a GPU check's report; "
                        "choose an empty or new folder")
    for name in PREVIOUS_OUTPUTS:
        shutil.rmtree(out / name, ignore_errors=True)
    for stale in [out / REPORT_MD, *out.glob("*.png")]:
        stale.unlink(missing_ok=True)
    out.mkdir(parents=True, exist_ok=True)


def plan(args: argparse.Namespace) -> list[PartRun]:
    budgets = scale_for(args.tiny).budgets_s
    common = ["--out", str(args.out), "--device", args.device, *(["--tiny"] if args.tiny else []),
              *(["--market-root", str(args.market_root)] if args.market_root else [])]
    return [PartRun(p.name, p.title, budgets[p.name], [sys.executable, "-m", f"{__package__}.part", p.name, *common])
            for p in PARTS]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    args.out = args.out.resolve()
    args.market_root = args.market_root.resolve() if args.market_root else None

    def body() -> int:
        check_args(args)
        prepare_out(args.out)
        scale = scale_for(args.tiny)
        report = new_report(PARTS, scale.budgets_s, args.device, scale.name, args.market_root, scale.notes)
        signal.signal(signal.SIGTERM, _interrupt)
        try:
            ok = run_parts(plan(args), args.out, report)
        except KeyboardInterrupt:
            print(f"interrupted; {args.out / REPORT_MD} holds the parts that finished", file=sys.stderr)
            return EXIT_INTERRUPTED
        print(f"wrote {args.out / REPORT_MD} and {args.out / REPORT_JSON}")
        return 0 if ok else 1

    return run_main(body, debug=args.debug)


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


if __name__ == "__main__":
    sys.exit(main())
