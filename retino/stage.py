"""How a stage script starts and ends: its command line (``--help`` shows the stage's
docstring, which says what it reads from params.yaml), a user's mistake as one clear
message instead of a traceback, a Ctrl-C as one line that says where it stopped (and
one during training that always takes effect)."""

from __future__ import annotations

import argparse
import contextlib
import signal
import sys
from pathlib import Path
from typing import Callable, Iterator

from retino.errors import USER_ERRORS
from retino.params import ARCHS, INITS
from retino.progress import console


def stage_parser(description: str, per_run: bool = False,
                 paths: dict[str, str] | None = None) -> argparse.ArgumentParser:
    """A stage's argument parser; ``per_run`` adds ``--arch``, ``--init`` and ``--data``
    (the downscaled set), which the train and evaluate stages of each run take;
    ``paths`` adds a required path option per entry (``{"--out": "what it is"}``)."""
    parser = argparse.ArgumentParser(description=description,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    if per_run:
        parser.add_argument("--arch", required=True, help=f"one of: {', '.join(ARCHS)}")
        parser.add_argument("--init", required=True, help=f"one of: {', '.join(INITS)}")
        parser.add_argument("--data", type=Path, required=True, help="downscaled set")
    for option, meaning in (paths or {}).items():
        parser.add_argument(option, type=Path, required=True, help=meaning)
    return parser


class Stopped(KeyboardInterrupt):
    """A Ctrl-C whose message says where the stage stopped and what the next run does."""


INTERRUPTED = 130  # the exit status of a process ended by SIGINT, as shells report it


def run_stage(main: Callable[[], None]) -> None:
    """Call ``main``; report a known input problem on stderr and exit with status 1; a
    Ctrl-C in one line, no traceback, exit status 130."""
    try:
        main()
    except USER_ERRORS as error:
        console.print(f"[bold red]error:[/] {error}", highlight=False, soft_wrap=True)
        sys.exit(1)
    except KeyboardInterrupt as interrupt:
        said = str(interrupt) if isinstance(interrupt, Stopped) else (
            f"{Path(sys.argv[0]).name} stopped by Ctrl-C; its outputs are written whole or "
            "not at all, so none is half-written: run it again (`dvc repro`)")
        console.print(f"[bold yellow]interrupted:[/] {said}", highlight=False, soft_wrap=True)
        sys.exit(INTERRUPTED)


class Interrupts:
    """Remembers Ctrl-C, so that ``check`` can act on one that Python swallowed.

    Python turns SIGINT into a ``KeyboardInterrupt`` wherever the main thread is;
    raised inside a finaliser (``__del__``, a weakref callback) it is only printed
    and the program carries on. The handler here also records the signal, and the
    train stage calls ``check`` after saving each epoch's resume state.
    """

    def __init__(self) -> None:
        self.received = False

    def handle(self, signum: int, frame: object) -> None:
        self.received = True
        raise KeyboardInterrupt

    def check(self) -> None:
        if self.received:
            raise KeyboardInterrupt


@contextlib.contextmanager
def catching_interrupts() -> Iterator[Interrupts]:
    """Install an ``Interrupts`` handler for SIGINT for the duration of the block."""
    interrupts = Interrupts()
    previous = signal.signal(signal.SIGINT, interrupts.handle)
    try:
        yield interrupts
    finally:
        signal.signal(signal.SIGINT, previous)
