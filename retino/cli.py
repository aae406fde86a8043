"""How stage scripts end: a user's mistake is one clear message, not a traceback."""

from __future__ import annotations

import sys
from typing import Callable

from retino.params import ParamsError
from retino.problems import DataError, WeightsUnavailable
from retino.progress import console

USER_ERRORS = (ParamsError, DataError, WeightsUnavailable, FileNotFoundError)


def run_stage(main: Callable[[], None]) -> None:
    """Call ``main``; report a known input problem on stderr and exit with status 1."""
    try:
        main()
    except USER_ERRORS as error:
        console.print(f"[bold red]error:[/] {error}", highlight=False, soft_wrap=True)
        sys.exit(1)
