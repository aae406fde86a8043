"""Rich progress bars and summary tables shared by the stages."""

from __future__ import annotations

import contextlib
from typing import Callable, Iterator, Sequence

from rich.console import Console
from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                           TimeElapsedColumn, TimeRemainingColumn)
from rich.table import Table

console = Console(stderr=True)


@contextlib.contextmanager
def counting(description: str, total: int) -> Iterator[Callable[[], None]]:
    """A progress bar over ``total`` items; yields the function that advances it."""
    progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(),
                        MofNCompleteColumn(), TimeElapsedColumn(), TimeRemainingColumn(),
                        console=console, transient=False)
    with progress:
        task = progress.add_task(description, total=total)
        yield lambda: progress.advance(task)


def print_table(title: str, columns: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    table = Table(title=title)
    for column in columns:
        table.add_column(column, justify="right" if column != columns[0] else "left")
    for row in rows:
        table.add_row(*(f"{v:.4g}" if isinstance(v, float) else str(v) for v in row))
    console.print(table)
