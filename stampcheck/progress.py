"""One look for every long step: a rich progress bar with counts, rate and time left."""

from __future__ import annotations

from contextlib import contextmanager

from rich.console import Console
from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                           TimeRemainingColumn)

console = Console(stderr=True)  # progress, warnings and errors
report = Console(soft_wrap=True)  # results on stdout; long lines stay whole in logs and pipes


@contextmanager
def progress_bar(total: int | None, description: str):
    """Yield ``advance(n=1)``; the bar goes to stderr so stdout stays clean for results."""
    columns = [TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
               TimeElapsedColumn(), TimeRemainingColumn()]
    with Progress(*columns, console=console, transient=False) as progress:
        task = progress.add_task(description, total=total)
        yield lambda n=1: progress.advance(task, n)
