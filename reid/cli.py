"""What every command-line entry point shares: ``error: <message>`` and an exit code
instead of a traceback for user mistakes (``--debug`` shows the traceback).

Exit codes: 0 done; 2 a user mistake (:data:`EXIT_USER_ERROR`); 75 stopped by SIGTERM or
SIGUSR1 at a step boundary with a checkpoint written, to be continued with ``--resume auto``
(:data:`EXIT_STOPPED`, EX_TEMPFAIL: "try again later"); 130 interrupted (Ctrl-C).
"""

from __future__ import annotations

import sys
import traceback
import warnings
from typing import Callable

from .errors import ReidError, Stopped

EXIT_USER_ERROR = 2
EXIT_STOPPED = 75
EXIT_INTERRUPTED = 130


def run_main(body: Callable[[], int | None], debug: bool = False) -> int:
    """Call ``body``; turn a ReidError into one line on stderr and exit code 2."""
    warnings.formatwarning = lambda message, category, *a, **k: f"warning: {message}\n"
    try:
        return body() or 0
    except ReidError as e:
        if debug:
            traceback.print_exc()
        say(f"error: {e}")
        return EXIT_USER_ERROR
    except Stopped as e:
        if str(e):
            say(str(e))
        return EXIT_STOPPED
    except KeyboardInterrupt as e:
        say(str(e) or "interrupted")
        return EXIT_INTERRUPTED


def say(line: str) -> None:
    """``line`` on stderr in one write: the processes of a torchrun group share the terminal, and with
    unbuffered output (PYTHONUNBUFFERED) print's separate newline let their lines run into each other."""
    sys.stderr.write(line + "\n")
    sys.stderr.flush()


def parse_int_list(text: str | None, option: str, minimum: int = 0) -> list[int]:
    """``"0,1,2"`` -> ``[0, 1, 2]``: the integers of a comma-separated option, each at least ``minimum``,
    none listed twice; anything else is a ReidError naming ``option``.

    Example::

        parse_int_list("1,2,4", "--runs", minimum=1)    # -> [1, 2, 4]
    """
    items = [s.strip() for s in (text or "").split(",")]
    if not all(s.lstrip("-").isdigit() for s in items) or min(int(s) for s in items) < minimum:
        example = ",".join(str(minimum + i) for i in range(3))
        raise ReidError(f"{option} {text!r}: give integers of at least {minimum} separated by commas, "
                        f"e.g. {option} {example}")
    values = [int(s) for s in items]
    if len(set(values)) != len(values):
        raise ReidError(f"{option} {text}: a value is listed twice; list each once")
    return values


class ErrorLine:
    """The line that says why a command failed, read from its output as it comes (whole lines).

    The first line starting with ``error:`` (the project's one-line errors), else the last
    non-blank line (a traceback's exception, a crash's last words); progress-bar carriage
    returns count as line ends. :func:`error_line` applies it to a whole text.

    Example::

        reader = ErrorLine()
        for line in ("epoch 1/2\\n", "error: data.root missing\\n", "Traceback ...\\n"):
            reader.feed(line)
        str(reader)   # -> "error: data.root missing"
    """

    def __init__(self) -> None:
        self.first_error, self.last = "", ""

    def feed(self, text: str) -> None:
        for line in text.replace("\r", "\n").splitlines():
            line = line.strip()
            if line:
                self.last = line
                if not self.first_error and line.startswith("error:"):
                    self.first_error = line

    def __str__(self) -> str:
        return self.first_error or self.last


def error_line(text: str) -> str:
    """Why the command whose output is ``text`` failed: see :class:`ErrorLine`; "" for no output.

    Example::

        error_line("step 3\\rstep 4\\nValueError: boom\\n")   # -> "ValueError: boom"
    """
    reader = ErrorLine()
    reader.feed(text)
    return str(reader)
