"""What the terminal shows: one look for every long step (a rich progress bar with counts, rate and
time left), and names made safe to print."""

from __future__ import annotations

import sys
from contextlib import contextmanager

from rich.console import Console
from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                           TimeRemainingColumn)

# Never wrapped: an error or a result line stays one line in logs, pipes and greps. Tables get
# room for their headers where the output is not a terminal (rich would assume 80 columns).
# emoji off: a name such as lot:x:42.jpg is printed as it is, not as an emoji
console = Console(stderr=True, soft_wrap=True, width=None if sys.stderr.isatty() else 200, emoji=False)
report = Console(soft_wrap=True, width=None if sys.stdout.isatty() else 200, emoji=False)


@contextmanager
def progress_bar(total: int | None, description: str):
    """Yield ``advance(n=1)``; the bar goes to stderr so stdout stays clean for results."""
    columns = [TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
               TimeElapsedColumn(), TimeRemainingColumn()]
    with Progress(*columns, console=console, transient=False) as progress:
        task = progress.add_task(description, total=total)
        yield lambda n=1: progress.advance(task, n)


def printable(text: str) -> str:
    """``text`` as valid UTF-8: the bytes of a file name that are not UTF-8 (which Python keeps as
    surrogates) shown as \\xNN, as `ls -b` does, instead of failing the whole report."""
    try:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:
        return text.encode("utf-8", "backslashreplace").decode()


def shown(text: str) -> str:
    """A name (or a reason naming one) as printed on the terminal: one line, whatever its bytes;
    escape sequences and bytes that are not UTF-8 as \\xNN, never sent to the terminal."""
    return "".join(c if c.isprintable() else f"\\x{ord(c):02x}" for c in printable(text))


class no_progress:
    """A progress_bar that shows nothing: for library calls and benches."""

    def __init__(self, total, description):
        pass

    def __enter__(self):
        return lambda n=1: None

    def __exit__(self, *exc):
        return False
