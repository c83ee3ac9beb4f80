"""One part of the check in its own process (the runner starts it; not a user command).

    python -m reid.gpu_check.part speed --out outputs/gpu_check --device cuda --result parts/speed.json

Exit status 0 when every step of the part succeeded, 1 when one failed (its error line
is in the result file).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path

from .context import PartContext
from .parts import PARTS


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m reid.gpu_check.part")
    p.add_argument("name", choices=[part.name for part in PARTS])
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--device", required=True, choices=["cuda", "cpu"])
    p.add_argument("--tiny", action="store_true")
    p.add_argument("--market-root", type=Path, default=None)
    p.add_argument("--result", required=True, type=Path)
    args = p.parse_args(argv)
    ctx = PartContext(args.name, args.out, args.device, args.tiny, args.market_root, result_path=args.result)
    ctx.save()
    importlib.import_module(f"{__package__}.{args.name}").run(ctx)
    return 1 if ctx.failed else 0


if __name__ == "__main__":
    sys.exit(main())
