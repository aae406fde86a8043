"""Rich progress bars and summary tables shared by the stages."""

from __future__ import annotations

import contextlib
import sys
import time
from typing import Callable, Iterator, Sequence

from rich.console import Console
from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                           TimeElapsedColumn, TimeRemainingColumn)
from rich.table import Table

# Wide enough for the summary tables when DVC pipes the output to a log.
console = Console(stderr=True, width=None if sys.stderr.isatty() else 200)


@contextlib.contextmanager
def counting(description: str, total: int) -> Iterator[Callable[..., None]]:
    """A progress bar over ``total`` items; yields ``tick(n=1)``, which advances it."""
    progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(),
                        MofNCompleteColumn(), TimeElapsedColumn(), TimeRemainingColumn(),
                        console=console, transient=False)
    with progress:
        task = progress.add_task(description, total=total)
        yield lambda n=1: progress.advance(task, n)


def print_table(title: str, columns: Sequence[str], rows: Sequence[Sequence[object]],
                out: Console = console) -> None:
    table = Table(title=title)
    for column in columns:  # the first column names the row: never wrapped
        first = column == columns[0]
        table.add_column(column, justify="left" if first else "right", no_wrap=first)
    for row in rows:
        table.add_row(*(f"{v:.4g}" if isinstance(v, float) else str(v) for v in row))
    out.print(table)


class EpochBar:
    """One epoch's bar: images done, running loss and accuracy, images/s. The images
    advance it every step; the loss and accuracy (device numbers the host must wait
    for) are shown when ``due``, at most every ``read_seconds``."""

    def __init__(self, progress: Progress, task: int, read_seconds: float):
        self._progress, self._task = progress, task
        self._start = self._shown = time.perf_counter()
        self._read_seconds = read_seconds
        self.images = 0

    def advance(self, images: int) -> None:
        self.images += images
        self._progress.update(self._task, advance=images, rate=self.images / max(
            time.perf_counter() - self._start, 1e-9))

    def due(self) -> bool:
        """Whether the loss and accuracy shown are older than ``read_seconds``."""
        return time.perf_counter() - self._shown >= self._read_seconds

    def show(self, loss_sum: float, correct: float) -> None:
        """The running loss and accuracy of this process's images so far."""
        self._shown = time.perf_counter()
        self._progress.update(self._task, loss=loss_sum / max(self.images, 1),
                              acc=100.0 * correct / max(self.images, 1))


@contextlib.contextmanager
def epoch_bar(description: str, total: int, read_seconds: float = 1.0) -> Iterator[EpochBar]:
    """A bar for one pass over ``total`` images showing loss, accuracy and speed."""
    progress = Progress(
        TextColumn("[bold]{task.description}"), BarColumn(bar_width=24), MofNCompleteColumn(),
        TextColumn("loss {task.fields[loss]:.3f}  acc {task.fields[acc]:5.1f} %  "
                   "{task.fields[rate]:6.0f} img/s"),
        TimeElapsedColumn(), console=console, transient=False)
    with progress:
        task = progress.add_task(description, total=total, loss=0.0, acc=0.0, rate=0.0)
        yield EpochBar(progress, task, read_seconds)


class Stopwatch:
    """Seconds a stage spends on each of its activities (training, scoring, writing, ...),
    added up over the run and printed in its closing line, where ``bench/default_run.py``
    reads them. Only timing: nothing it holds reaches an output file."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextlib.contextmanager
    def timing(self, activity: str) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[activity] = (self.seconds.get(activity, 0.0)
                                      + time.perf_counter() - started)

    def line(self) -> str:
        """``timing (s): training 101.2, scoring test 8.0, ...``, in the order first timed."""
        return "timing (s): " + ", ".join(f"{activity} {seconds:.1f}"
                                          for activity, seconds in self.seconds.items())


stopwatch = Stopwatch()  # one per process: a stage is one process (per rank under torchrun)
