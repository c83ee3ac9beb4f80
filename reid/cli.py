"""What every command-line entry point shares: ``error: <message>`` and an exit code
instead of a traceback for user mistakes (``--debug`` shows the traceback)."""

from __future__ import annotations

import sys
import traceback
import warnings
from typing import Callable

from .errors import ReidError

EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130


def run_main(body: Callable[[], int | None], debug: bool = False) -> int:
    """Call ``body``; turn a ReidError into one line on stderr and exit code 2."""
    warnings.formatwarning = lambda message, category, *a, **k: f"warning: {message}\n"
    try:
        return body() or 0
    except ReidError as e:
        if debug:
            traceback.print_exc()
        print(f"error: {e}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("interrupted; continue with --resume auto", file=sys.stderr)
        return EXIT_INTERRUPTED
