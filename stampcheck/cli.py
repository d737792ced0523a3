"""The `stampcheck` command: a thin layer that parses options and calls the stages.

Heavy imports (torch, fastai, icrawler) happen inside the commands, so `--help` and `compose`
start fast.
"""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional, Tuple

import typer

from compose.looks import Looks
from stampcheck.progress import console, progress_bar

app = typer.Typer(add_completion=False, no_args_is_help=True, rich_markup_mode="rich",
                  help="Prove from photos that a product carries its inspection stamp, and where.\n\n"
                       "Pipeline: crawl (backgrounds) -> compose (labelled dataset) -> train (model) -> qa (reports).")
DATA = Path("data")
L = Looks()


def fail(message: str, code: int = 2):
    console.print(f"[bold red]error:[/] {message}")
    raise typer.Exit(code)


@app.command()
def compose(
    stamp: List[Path] = typer.Option(None, "--stamp", help="Stamp image, repeatable: one class per file, named "
                                     "after the file. A PNG with alpha is used as is; without alpha the "
                                     "background colour (median of the border pixels) is keyed out. "
                                     "Default: the built-in stamp."),
    backgrounds: Optional[Path] = typer.Option(None, help="Folder of background photos, searched recursively; "
                                               "bad files are skipped and listed in dataset.json. "
                                               "Default: built-in generated product scenes."),
    out: Path = typer.Option(DATA / "dataset", help="Dataset folder to write."),
    count: int = typer.Option(1000, min=1, help="Number of images."),
    seed: int = typer.Option(0, help="Random seed: same seed and options give byte-identical output."),
    workers: int = typer.Option(1, min=1, help="Worker processes (output does not depend on it)."),
    max_size: int = typer.Option(512, min=32, help="Long side of written images in pixels."),
    valid_share: float = typer.Option(0.2, min=0.0, max=0.9, help="Share of backgrounds held out for valid."),
    builtin_backgrounds: int = typer.Option(0, min=0, help="Number of built-in scenes (0: count/4)."),
    scale: Tuple[float, float] = typer.Option(L.scale, help="Stamp long side / background short side (log-uniform)."),
    rotation: float = typer.Option(L.rotation, min=0, max=180, help="Rotation range, +- degrees."),
    perspective: float = typer.Option(L.perspective, min=0, max=0.4, help="Tilt: largest corner shift, share of stamp size."),
    opacity: Tuple[float, float] = typer.Option(L.opacity, help="Ink strength range, 0..1."),
    fade: Tuple[float, float] = typer.Option(L.fade, help="Uneven ink: share of ink lost in patches, 0..1."),
    multiply_share: float = typer.Option(L.multiply_share, min=0, max=1, help="Share of 'ink' (multiply) blends, "
                                         "where the product shows through the stamp; the rest are normal pastes."),
    ink_colour: List[str] = typer.Option(list(L.ink_colours), help="Ink colours to draw from (#rrggbb or a name); "
                                         "'keep' keeps the stamp's own colours. Repeatable."),
    blur: Tuple[float, float] = typer.Option(L.blur, help="Stamp blur radius range, pixels."),
    noise: Tuple[float, float] = typer.Option(L.noise, help="Sensor noise std range, grey levels."),
    brightness: Tuple[float, float] = typer.Option(L.brightness, help="Whole-image brightness factor range."),
    glare_share: float = typer.Option(L.glare_share, min=0, max=1, help="Share of images with a glossy highlight."),
    jpeg_quality: Tuple[int, int] = typer.Option(L.jpeg_quality, help="JPEG quality range of the output."),
    truncate_share: float = typer.Option(L.truncate_share, min=0, max=1, help="Share of stamps cut off at the "
                                         "border (0 keeps every stamp fully inside)."),
    multi_share: float = typer.Option(L.multi_share, min=0, max=1, help="Share of stamped images with several stamps."),
    max_stamps: int = typer.Option(L.max_stamps, min=1, help="Most stamps on one image."),
    negative_share: float = typer.Option(L.negative_share, min=0, max=1, help="Share of images without a stamp."),
    hard_negative_share: float = typer.Option(L.hard_negative_share, min=0, max=1, help="Share of negatives "
                                              "carrying stamp-like distractors (other seals, badges), labelled no stamp."),
    preview: bool = typer.Option(True, help="Write preview.png, a grid of samples with boxes."),
    overwrite: bool = typer.Option(False, help="Replace a dataset composed with other parameters."),
):
    """Superimpose the stamp on backgrounds and write a labelled dataset (images, labels.csv, coco.json, yolo/)."""
    from compose.composer import ComposeConfig, ComposeError, compose_dataset
    from compose.preview import write_preview
    from compose.stamps import DEFAULT_STAMP, StampError

    looks = Looks(scale=scale, rotation=rotation, perspective=perspective, opacity=opacity, fade=fade,
                  multiply_share=multiply_share, ink_colours=tuple(ink_colour), blur=blur, noise=noise,
                  brightness=brightness, glare_share=glare_share, jpeg_quality=jpeg_quality,
                  truncate_share=truncate_share, multi_share=multi_share, max_stamps=max_stamps,
                  negative_share=negative_share, hard_negative_share=hard_negative_share)
    cfg = ComposeConfig(count=count, seed=seed, stamps=list(stamp or [DEFAULT_STAMP]), backgrounds=backgrounds,
                        builtin_backgrounds=builtin_backgrounds, max_size=max_size, valid_share=valid_share,
                        looks=looks)
    try:
        summary = compose_dataset(cfg, out, workers=workers, overwrite=overwrite, progress=progress_bar)
    except (ComposeError, StampError, FileNotFoundError, ValueError) as e:
        fail(str(e))
    for s in summary["skipped_backgrounds"]:
        console.print(f"[yellow]skipped background[/] {s['file']}: {s['reason']} {s['detail']}")
    for f in summary["failed_images"]:
        console.print(f"[yellow]failed image[/] {f['file']}: {f['error']}")
    console.print(f"[green]dataset[/] {out}: {summary['images']} images, {summary['stamped']} stamped, "
                  f"{summary['negatives']} without stamp ({summary['hard_negatives']} with distractors), "
                  f"train/valid {summary['splits']['train']}/{summary['splits']['valid']}, "
                  f"{len(summary['skipped_backgrounds'])} backgrounds skipped")
    if preview and summary["images"]:
        console.print(f"preview: {write_preview(out)}")


@app.command("preview")
def preview_cmd(dataset: Path = typer.Argument(..., help="Dataset folder."),
                out: Optional[Path] = typer.Option(None, help="PNG to write (default DATASET/preview.png)."),
                n: int = typer.Option(16, min=1, help="Number of samples.")):
    """Write a PNG grid of dataset samples with their boxes drawn."""
    from compose.preview import write_preview
    from stampcheck.dataset import DatasetError

    try:
        console.print(f"preview: {write_preview(dataset, out, n=n)}")
    except DatasetError as e:
        fail(str(e))


@app.command()
def demo(out: Path = typer.Option(DATA / "demo", help="Folder for everything the demo writes."),
         count: int = typer.Option(400, min=8, help="Images to compose.")):
    """The whole pipeline offline on the built-in stamp and backgrounds."""
    from compose.composer import ComposeConfig, compose_dataset
    from compose.preview import write_preview

    summary = compose_dataset(ComposeConfig(count=count, seed=0), out / "dataset", workers=2,
                              progress=progress_bar)
    console.print(f"dataset: {out / 'dataset'} ({summary['images']} images); "
                  f"preview: {write_preview(out / 'dataset')}")


def main():
    app()


if __name__ == "__main__":
    main()
