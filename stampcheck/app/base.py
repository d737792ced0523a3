"""The `stampcheck` Typer app, the defaults its options show (each the settings' own), and the one-line
failure every command ends with on bad input."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.markup import escape

from stampcheck.compose.composer import ComposeConfig
from stampcheck.compose.looks import Looks
from stampcheck.crawler.config import CrawlOptions
from stampcheck.train.config import PretrainConfig, TrainConfig
from stampcheck import errors
from stampcheck.progress import console, shown

app = typer.Typer(add_completion=False, no_args_is_help=True, rich_markup_mode=None, pretty_exceptions_enable=False,
                  help="Prove from photos that a product carries its inspection stamp, and where.\n\n"
                       "Pipeline: crawl (backgrounds) -> compose (labelled dataset) -> train (model) -> qa (reports).")
DATA = Path("data")
# what only the full install has (pip install 'stampcheck[full]'; pyproject.toml)
FULL_ONLY = {"torch", "torchvision", "fastai", "accelerate", "icrawler", "protego", "imagehash", "pycocotools", "matplotlib",
             "yaml", "defusedxml"}
L, T, P, C, D = Looks(), TrainConfig(), PretrainConfig(), CrawlOptions(), ComposeConfig()


def fail(message, code: int = errors.USAGE):
    """One line saying what is wrong (an exception's message, or text), and exit ``code``. Names in
    it are anyone's bytes: escaped, so no name can start a line of its own; a DatasetError's list of
    bad rows is printed a row a line, each escaped alike."""
    lines = getattr(message, "lines", None) or []
    head = message.head if lines else str(message)
    console.print(f"[bold red]error:[/] {escape(shown(head))}" + "".join(f"\n  {escape(shown(line))}" for line in lines))
    raise typer.Exit(code)


def first_three(names: list[str], where: str) -> str:
    """The first three of ``names`` for one console line; the rest counted, with ``where`` they are."""
    more = f"; and {len(names) - 3} more ({where})" if len(names) > 3 else ""
    return ", ".join(names[:3]) + more
