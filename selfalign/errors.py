"""One-line user-facing errors: scripts catch `UserError` at the top and print it without a traceback."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import NoReturn


class UserError(Exception):
    """Bad input, bad configuration or a missing prerequisite: said in one line, never a traceback."""


def fail(message: str) -> NoReturn:
    raise UserError(message)


def run_main(main: Callable[[], object]) -> None:
    """Run a script's `main`, turning `UserError` (and Ctrl-C) into a one-line message and exit status."""
    try:
        main()
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted: finished parts are kept; run the same command again to resume", file=sys.stderr)
        sys.exit(130)
