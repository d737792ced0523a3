"""The commands that make data: compose, preview and crawl."""

from __future__ import annotations

import math
from pathlib import Path
from typing import List, Optional, Tuple

import typer

from stampcheck.compose.composer import ComposeConfig
from stampcheck.compose.looks import Looks
from stampcheck.crawler.config import CrawlOptions
from stampcheck import errors
from stampcheck.device import cpu_count
from stampcheck.progress import console, progress_bar, report

from stampcheck.app.base import C, D, DATA, L, app, fail


@app.command(short_help="Stamp backgrounds: a labelled dataset.")
def compose(
    stamp: List[Path] = typer.Option(None, "--stamp", metavar="PATH", help="Stamp image, repeatable: one class per file, named "
                                     "after the file. A PNG with alpha is used as is; without alpha the "
                                     "background colour (median of the border pixels) is keyed out. "
                                     "Default: the built-in stamp."),
    backgrounds: Optional[Path] = typer.Option(None, help="Folder of background photos, searched recursively; "
                                               "bad files are skipped and listed in dataset.json. "
                                               "Default: built-in generated product scenes."),
    out: Path = typer.Option(DATA / "dataset", help="Dataset folder to write."),
    count: int = typer.Option(D.count, min=1, help="Number of images."),
    seed: int = typer.Option(D.seed, help="Random seed: same seed and options give byte-identical output."),
    workers: int = typer.Option(cpu_count(), min=1, help="Worker processes (output does not depend on it)."),
    max_size: int = typer.Option(D.max_size, min=32, help="Long side of written images in pixels."),
    valid_share: float = typer.Option(D.valid_share, min=0.0, max=0.9, help="Share of backgrounds held out for valid."),
    builtin_backgrounds: int = typer.Option(D.builtin_backgrounds, min=0, help="Number of built-in scenes (0: count/4)."),
    scale: Tuple[float, float] = typer.Option(L.scale, metavar="MIN MAX", help="Stamp long side / background short side (log-uniform)."),
    rotation: float = typer.Option(L.rotation, help="Rotation range, +- degrees."),
    perspective: float = typer.Option(L.perspective, help="Tilt: largest corner shift, share of stamp size."),
    opacity: Tuple[float, float] = typer.Option(L.opacity, metavar="MIN MAX", help="Ink strength range, 0..1."),
    fade: Tuple[float, float] = typer.Option(L.fade, metavar="MIN MAX", help="Uneven ink: share of ink lost in patches, 0..1."),
    multiply_share: float = typer.Option(L.multiply_share, help="Share of 'ink' (multiply) blends, "
                                         "where the product shows through the stamp; the rest are normal pastes."),
    ink_colour: List[str] = typer.Option(list(L.ink_colours), metavar="COLOUR", help="Ink colours to draw from (#rrggbb or a name); "
                                         "'keep' keeps the stamp's own colours (half the draws when listed). Repeatable."),
    blur: Tuple[float, float] = typer.Option(L.blur, metavar="MIN MAX", help="Stamp blur radius range, pixels."),
    noise: Tuple[float, float] = typer.Option(L.noise, metavar="MIN MAX", help="Sensor noise std range, grey levels."),
    brightness: Tuple[float, float] = typer.Option(L.brightness, metavar="MIN MAX", help="Whole-image brightness factor range."),
    glare_share: float = typer.Option(L.glare_share, help="Share of images with a glossy highlight."),
    jpeg_quality: Tuple[int, int] = typer.Option(L.jpeg_quality, metavar="MIN MAX", help="JPEG quality range of the output."),
    truncate_share: float = typer.Option(L.truncate_share, help="Share of stamps cut off at the "
                                         "border (0 keeps every stamp fully inside)."),
    occlude_share: float = typer.Option(L.occlude_share, help="Share of stamps (and of stamp-free images) partly "
                                        "hidden by a finger or a cap's edge, 15-45% of their extent."),
    multi_share: float = typer.Option(L.multi_share, help="Share of stamped images with several stamps."),
    max_stamps: int = typer.Option(L.max_stamps, help="Most stamps on one image."),
    negative_share: float = typer.Option(L.negative_share, help="Share of images without a stamp."),
    hard_negative_share: float = typer.Option(L.hard_negative_share, help="Share of negatives "
                                              "carrying stamp-like distractors (other seals, badges), labelled no stamp."),
    preview: bool = typer.Option(True, help="Write preview.png, a grid of samples with boxes."),
    overwrite: bool = typer.Option(False, help="Replace the dataset an earlier compose wrote in --out (its own "
                                   "files only; anything else there stays). Other folders are never written into."),
):
    """Superimpose the stamp on backgrounds and write a labelled dataset (images, labels.csv, coco.json, yolo/)."""
    from stampcheck.compose.composer import ComposeError, compose_dataset
    from stampcheck.compose.stamps import DEFAULT_STAMP, StampError
    from stampcheck.dataset import PREVIEW_PNG

    try:  # Looks checks every range (LooksError, a ValueError) before anything is written
        looks = Looks(scale=scale, rotation=rotation, perspective=perspective, opacity=opacity, fade=fade,
                      multiply_share=multiply_share, ink_colours=tuple(ink_colour), blur=blur, noise=noise,
                      brightness=brightness, glare_share=glare_share, jpeg_quality=jpeg_quality,
                      truncate_share=truncate_share, occlude_share=occlude_share, multi_share=multi_share, max_stamps=max_stamps,
                      negative_share=negative_share, hard_negative_share=hard_negative_share)
        cfg = ComposeConfig(count=count, seed=seed, stamps=list(stamp or [DEFAULT_STAMP]), backgrounds=backgrounds,
                            builtin_backgrounds=builtin_backgrounds, max_size=max_size, valid_share=valid_share,
                            looks=looks)
        summary = compose_dataset(cfg, out, workers=workers, overwrite=overwrite, progress=progress_bar,
                                  preview=preview)
    except (ComposeError, StampError, FileNotFoundError, ValueError) as e:
        fail(e)
    for s in summary["skipped_backgrounds"]:
        console.print(f"[yellow]skipped background[/] {s['file']}: {s['reason']} {s['detail']}")
    for f in summary["failed_images"]:
        console.print(f"[yellow]failed image[/] {f['file']}: {f['error']}")
    report.print(f"[green]dataset[/] {out}: {summary['images']} images, {summary['stamped']} stamped, "
                  f"{summary['negatives']} without stamp ({summary['hard_negatives']} with distractors), "
                  f"train/valid {summary['splits']['train']}/{summary['splits']['valid']}, "
                  f"{len(summary['skipped_backgrounds'])} backgrounds skipped")
    if preview and summary["images"]:
        report.print(f"preview: {out / PREVIEW_PNG}")


@app.command("preview", short_help="A PNG grid of a dataset's samples.")
def preview_cmd(dataset: Path = typer.Argument(..., metavar="DATASET", help="Dataset folder."),
                out: Optional[Path] = typer.Option(None, help="PNG to write (default DATASET/preview.png). An existing "
                                     "file is replaced only when it is a preview stampcheck wrote."),
                n: int = typer.Option(16, min=1, help="Number of samples.")):
    """Write a PNG grid of dataset samples with their boxes drawn."""
    from stampcheck.compose.preview import write_preview
    from stampcheck.dataset import IMAGES_DIR, DatasetError
    from stampcheck.paths import refuse_overlap

    try:
        if out is not None:
            if out.suffix.lower() != ".png" or out.is_dir():
                raise ValueError(f"--out {out}: give the path of a .png file to write")
            refuse_overlap(out, [dataset / IMAGES_DIR])  # a PNG among the images would be taken for one
        report.print(f"preview: {write_preview(dataset, out, n=n)}")
    except (DatasetError, ValueError) as e:
        fail(e)


@app.command(short_help="Fetch background product photos.")
def crawl(
    keyword: List[str] = typer.Option(None, "--keyword", "-k", metavar="WORDS", help="Search term, repeatable."),
    keywords_file: Optional[Path] = typer.Option(None, help="UTF-8 text file with one search term per line."),
    engine: str = typer.Option("bing", help="Comma-separated search engines: bing, google, baidu, flickr "
                               "(flickr needs FLICKR_APIKEY in the environment)."),
    site: List[str] = typer.Option(None, metavar="URL", help="Crawl a site for images, repeatable: pages on its host only, "
                                   "obeying its robots.txt."),
    urls: List[Path] = typer.Option(None, metavar="PATH", help="UTF-8 text file with one image URL per line, repeatable."),
    from_dir: List[Path] = typer.Option(None, metavar="PATH", help="Bring your own photos through the same checks, repeatable; "
                                        "must lie outside --out. They are read, never changed."),
    out: Path = typer.Option(DATA / "backgrounds", help="Folder: images/, manifest.jsonl, rejected.jsonl."),
    max_num: int = typer.Option(C.max_num, "--max", min=1, help="Images to keep per engine and keyword (or site/list)."),
    min_size: int = typer.Option(C.min_size, min=16, help="Smallest short side kept, pixels."),
    max_size: Optional[int] = typer.Option(C.max_size, min=64, help="Downsize kept images to this long side (0: keep)."),
    max_pixels: int = typer.Option(C.max_pixels, help="Refuse larger images (decompression bombs)."),
    threads: int = typer.Option(C.threads, min=1, help="Download threads."),
    timeout: float = typer.Option(C.timeout, help="Per-request timeout (connect, and each read), seconds."),
    deadline: float = typer.Option(C.deadline, help="Longest time for one URL, connect to last byte, retries "
                                   "included, seconds."),
    max_bytes: int = typer.Option(C.max_bytes, help="Largest download (or file of --from-dir), bytes."),
    delay: float = typer.Option(C.delay, min=0, help="Pause after each download per thread, seconds (politeness)."),
    max_depth: int = typer.Option(C.max_depth, min=0, help="--site: follow links this far from the given page."),
    max_pages: int = typer.Option(C.max_pages, min=1, help="--site: fetch at most this many pages."),
    ignore_robots: bool = typer.Option(False, "--ignore-robots", help="--site: do not read or obey robots.txt."),
):
    """Pull background product images through icrawler, check and de-duplicate them, keep provenance.

    Every kept image is fully decoded, upright, RGB, at least --min-size,
    saved as JPEG under a hash-based name; duplicates (exact, or perceptual
    hash within 6 bits) are dropped across engines, keywords and runs.
    Every URL and file ends in manifest.jsonl or, with its reason, in
    rejected.jsonl. Running the same command again adds only what is missing.
    Files in --out that crawl did not write are never changed or removed.

    Exit codes: 0 done; 2 bad usage or input (nothing written);
    4 the tool failed; 5 nothing kept (no new image, none from earlier runs)."""
    from rich.table import Table

    from stampcheck.crawler.run import check_request, empty_engines, read_list, run_crawl, site_url
    from stampcheck.crawler.store import ImageStore
    from stampcheck.images import ImageLimits

    for option, value in (("--timeout", timeout), ("--deadline", deadline), ("--delay", delay)):
        if not math.isfinite(value) or value < 0 or (value == 0 and option != "--delay"):
            fail(f"{option} {value}: give a finite number of seconds, above 0")
    keywords, folders, url_files = list(keyword or []), list(from_dir or []), list(urls or [])
    if not (keywords or keywords_file or site or url_files or folders):
        fail("nothing to crawl: give --keyword, --keywords-file, --site, --urls or --from-dir")
    try:  # every check before the first file is written
        if keywords_file:
            keywords += read_list(keywords_file, "--keywords-file")
        engines = [e.strip() for e in engine.split(",") if e.strip()] if keywords else []
        sites = [site_url(s) for s in site or []]
        check_request(out, keywords, engines, sites, url_files, folders)
        # holds --out from here to the end of the process (kill -9 included): one crawl at a time writes it
        store = ImageStore(out, ImageLimits(min_side=min_size, max_pixels=max_pixels), max_size or None)
    except (ValueError, OSError) as e:
        fail(e)
    if store.foreign:
        console.print(f"[yellow]note:[/] {store.images} holds {len(store.foreign)} files that crawl did not write "
                      "(not in manifest.jsonl); left as they are")
    before = store.kept()
    opts = CrawlOptions(max_num=max_num, threads=threads, timeout=timeout, deadline=deadline, max_bytes=max_bytes,
                        delay=delay, max_depth=max_depth, max_pages=max_pages, robots=not ignore_robots)
    stats = run_crawl(out, keywords, engines, sites, url_files, folders, opts, store, progress_bar)
    table = Table(title=f"crawl into {out}")
    for col in ("engine", "keyword / source", "pages", "links", "downloaded", "rejected", "duplicates", "kept",
                "known"):
        if col in ("keyword / source", "rejected"):  # long values fold onto more lines, never cut
            table.add_column(col, overflow="fold", ratio=1)
        else:
            table.add_column(col, justify="left" if col == "engine" else "right", no_wrap=True, min_width=len(col))
    for (eng, kw), row in sorted(stats.rows.items()):
        reasons = ", ".join(f"{r} {n}" for r, n in stats.reasons[(eng, kw)].most_common()) or "0"
        table.add_row(eng, kw, str(row["pages"]), str(row["links"]), str(row["downloaded"]), reasons,
                      str(row["duplicates"]), str(row["kept"]), str(row["known"]))
    report.print(table)
    for warning in empty_engines(stats):
        console.print(f"[bold yellow]warning:[/] {warning}")
    report.print(f"{store.kept() - before} new images, {store.kept()} in {out / 'images'}")
    if not store.kept():
        fail(f"nothing kept in {out / 'images'}: no source gave a usable image (the table says why; "
             "each refused URL and its reason are in rejected.jsonl)", errors.CRAWL_EMPTY)
