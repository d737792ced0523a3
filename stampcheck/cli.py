"""The `stampcheck` command: a thin layer that parses options and calls the stages.

Heavy imports (torch, fastai, icrawler) happen inside the commands, so `--help` and `compose`
start fast.
"""

from __future__ import annotations

import math
import os
import signal
from pathlib import Path
from typing import List, Optional, Tuple

import typer
from rich.markup import escape

from stampcheck.compose.composer import ComposeConfig
from stampcheck.compose.looks import Looks
from stampcheck.crawler.config import CrawlOptions
from stampcheck.qa.config import BS, GATE_JOBS, SETTLE
from stampcheck.train.config import LR, PretrainConfig, TrainConfig
from stampcheck import errors
from stampcheck.device import DeviceError, cpu_count
from stampcheck.progress import console, printable, progress_bar, report, shown

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


def first_three(names: list[str], where: str) -> str:
    """The first three of ``names`` for one console line; the rest counted, with ``where`` they are."""
    more = f"; and {len(names) - 3} more ({where})" if len(names) > 3 else ""
    return ", ".join(names[:3]) + more


@app.command("train", short_help="Train the stamp detector (and its second look).")
def train_cmd(
    dataset: Path = typer.Argument(..., metavar="DATASET", help="Dataset folder (from `stampcheck compose`, or labelled by hand)."),
    out: Path = typer.Option(DATA / "model", help="Model folder to write."),
    arch: str = typer.Option(T.arch, help="ResNet body: resnet18, resnet34 or resnet50 (a shipped base "
                             "detector exists for resnet18)."),
    size: Optional[int] = typer.Option(None, min=64, max=2048, help="Input size in pixels (images are squished to "
                                       "size x size). Default: 256 (on a CPU trained on --crop 160 windows)."),
    crop: Optional[int] = typer.Option(None, min=0, help="Train on random crop x crop windows of the size x size "
                                       "image (each holding a stamp whole or not at all); valid and qa see the whole "
                                       "image. Small stamps get the pixels of a large --size at the cost of --crop. Default: 160 on a "
                                       "CPU when --size is not given, none on a GPU; 0: the whole image."),
    epochs: int = typer.Option(T.epochs, min=1, help="Epochs of fit_one_cycle (ignored with --minutes)."),
    minutes: Optional[float] = typer.Option(None, min=0.1, help="Train as well as possible within this many "
                                            "minutes on this machine: the speed of the first batches sets the "
                                            "epochs; the log says what it chose. On a CPU, `--minutes 15` with no "
                                            "other option is the recipe to run."),
    bs: int = typer.Option(T.bs, min=1, help="Batch size."),
    lr: Optional[float] = typer.Option(T.lr, help=f"Peak learning rate (default {LR:g})."),
    lr_find: bool = typer.Option(T.lr_find, "--lr-find", help="Run fastai's lr_find, save lr_find.png, use its suggestion."),
    pretrained: str = typer.Option(T.pretrained, help="Where the weights start: 'base' (the shipped stamp detector, "
                                   "data/weights/), 'imagenet' (torch's cache or a download) or 'none' (from "
                                   "scratch). Missing weights: a warning, then the next of base, imagenet, none."),
    no_pretrained: bool = typer.Option(False, "--no-pretrained", hidden=True, help="The same as --pretrained none."),
    weights: Optional[Path] = typer.Option(None, help="A local .pth of torchvision ResNet weights to start from."),
    init: Optional[Path] = typer.Option(None, help="Start from an earlier model folder of the same arch and "
                                        "classes (fine-tune it on new photos or harder looks) instead of ResNet weights."),
    workers: Optional[int] = typer.Option(None, help="Data-loader processes (default: suited to the device)."),
    device: Optional[str] = typer.Option(None, help="cuda, cuda:1, cpu... (default: the GPU when there is one)."),
    patience: int = typer.Option(T.patience, min=0, help="Stop after this many epochs without a better valid 'correct' "
                                 "share (0: never stop early)."),
    seed: int = typer.Option(T.seed, help="Random seed."),
    augment: bool = typer.Option(T.augment, help="Random small rotation, zoom, lighting and warp on each batch (never "
                                 "flips). Composed data already varies its looks; augmenting also slows early learning."),
    mixed_precision: bool = typer.Option(T.mixed_precision, help="Autocast to bf16 (fp16 on GPUs without bf16) where the "
                                         "hardware runs it natively: CUDA GPUs and CPUs with AVX512-BF16 or AMX."),
    verifier: bool = typer.Option(T.verifier, help="Also train the second look: a classifier that judges a close "
                                  "crop of each candidate the detector proposes (which stamp, or none of ours); "
                                  "with --minutes it gets 30% of them. It helps a weak detector; on the 15-minute "
                                  "CPU recipe the detector given all the minutes does as well (BENCHMARKS.md)."),
    valid_images: int = typer.Option(T.valid_images, min=0, help="Judge on a fixed sample of this many valid "
                                               "images (0: all of them): each epoch's valid pass, and "
                                               "the passes that choose the size and thresholds after training, "
                                               "cost one pass over them each."),
    overwrite: bool = typer.Option(False, help="Replace the model already in --out (only the files train writes; "
                                   "anything else there stays), once the new run's first epoch is there to take "
                                   "its place: a refused or interrupted run leaves it as it was."),
):
    """Train one ResNet detector for stamp presence and location; keeps the best epoch by the share of
    valid images judged right (presence, and IoU >= 0.5 for stamped ones)."""
    from stampcheck.dataset import DatasetError
    from stampcheck.train.learner import train

    cfg = TrainConfig(arch=arch, size=size, crop=crop, epochs=epochs, minutes=minutes, bs=bs, lr=lr, lr_find=lr_find,
                      pretrained="none" if no_pretrained else pretrained,
                      weights=str(weights) if weights else None, init=str(init) if init else None, workers=workers, device=device,
                      patience=patience, seed=seed, augment=augment,
                      mixed_precision=mixed_precision, verifier=verifier, valid_images=valid_images)
    try:
        metrics = train(dataset, out, cfg, log=report.print, overwrite=overwrite)
    except (DatasetError, ValueError, FileNotFoundError) as e:
        fail(e)
    except KeyboardInterrupt:  # raised by train (stopped before its first epoch), not by a signal handler of
        raise typer.Abort() from None  # main's, which Typer would turn into a silent 130; main says "interrupted"
    if metrics.get("interrupted"):  # the best epoch is kept, but a script must not take it for a finished run
        raise typer.Exit(errors.INTERRUPTED)


@app.command(short_help="Train the base detector on any seal.")
def pretrain(
    out: Path = typer.Option(DATA / "pretrain", help="Run folder: checkpoint.pth, state.json, base.pth, card.md."),
    backgrounds: List[Path] = typer.Option(None, metavar="PATH", help="Folders of real product photos (no stamps on them), "
                                           "repeatable; built-in scenes are always used too."),
    arch: str = typer.Option(P.arch, help="ResNet body: resnet18, resnet34 or resnet50."),
    size: int = typer.Option(P.size, min=64, max=1024, help="Input size in pixels (the shipped base: 128, then 256 on 160 px windows)."),
    crop: Optional[int] = typer.Option(None, min=0, help="Train on random windows of this many pixels of the "
                                       "--size image, as `train --crop` does (valid: the whole image; 0: none)."),
    init: Optional[Path] = typer.Option(None, help="Start from this base file (e.g. the shipped one, to go on "
                                        "at another size) instead of random weights; no clear-stamp warm-up."),
    epochs: Optional[int] = typer.Option(None, min=1, help=f"Epochs of the one-cycle schedule (default {P.epochs}). With "
                                         "--resume: a new length for the run's schedule."),
    epoch_images: int = typer.Option(P.epoch_images, min=8, help="New images composed per epoch."),
    valid_images: int = typer.Option(P.valid_images, min=8, help="Composed valid images (the same every epoch)."),
    bs: int = typer.Option(P.bs, min=1, help="Batch size."),
    lr: float = typer.Option(P.lr, min=1e-6, max=1.0, help="Peak learning rate."),
    seed: int = typer.Option(P.seed, help="Same seed, same images."),
    workers: Optional[int] = typer.Option(None, min=0, help="Composing processes (default: the cores but one; "
                                          "16 at most on a GPU)."),
    device: Optional[str] = typer.Option(None, help="cuda, cpu... (default: the GPU when there is one)."),
    resume: bool = typer.Option(False, help="Continue the run in --out from its last finished epoch "
                                "(weights, optimiser and schedule position); its own settings are kept."),
    mixed_precision: bool = typer.Option(P.mixed_precision, help="bf16/fp16 autocast where the hardware runs it natively."),
    ship: bool = typer.Option(False, help="Only copy the finished run's base.pth and card into data/weights/, "
                              "where `train` takes its base from (a maintainer's step: each copy stays in git)."),
):
    """Train the class-agnostic base detector on images composed on the fly (thousands of generated seal
    designs with every compose look); `train` starts from it. Ctrl-C stops after the current batch;
    --resume continues."""
    from stampcheck.paths import refuse_overlap
    from stampcheck.train.pretrain import pretrain as run_pretrain
    from stampcheck.train.pretrain import ship as ship_base

    try:
        if ship:
            ship_base(out, log=report.print)
            return
        refuse_overlap(out, list(backgrounds or []))
        if init and not init.is_file():
            raise FileNotFoundError(f"--init {init}: {'not a file' if init.exists() else 'no such file'}")
        cfg = PretrainConfig(arch=arch, size=size, crop=crop or None, init=str(init) if init else None, epochs=epochs or P.epochs, epoch_images=epoch_images,
                             valid_images=valid_images, bs=bs, lr=lr, seed=seed,
                             backgrounds=[str(b) for b in backgrounds or []], workers=workers, device=device,
                             mixed_precision=mixed_precision)
        result = run_pretrain(out, cfg, resume=resume, epochs_changed=epochs if resume else None, log=report.print)
    except (ValueError, FileNotFoundError) as e:
        fail(e)
    except KeyboardInterrupt:  # as in train: said by main as "interrupted"
        raise typer.Abort() from None
    report.print(f"base: {out / 'base.pth'} (sha256 {result['sha256'][:16]}...), card: {out / 'card.md'}")
    if result.get("interrupted"):
        raise typer.Exit(errors.INTERRUPTED)


@app.command(short_help="Check photos for the stamp: a report.")
def qa(
    model: Path = typer.Argument(..., metavar="MODEL", help="Model folder (from `stampcheck train`); with --engine onnx, its "
                                 "exported model.onnx or the folder holding it."),
    photos: Optional[List[str]] = typer.Argument(None, metavar="PHOTOS", help="Photo files, folders (recursive) or globs."),
    out: Path = typer.Option(DATA / "qa", help="Report folder: results.csv, results.jsonl, index.html."),
    threshold: Optional[float] = typer.Option(None, min=0, max=1, help="Stamp score threshold "
                                              "(default: the one stored with the model, chosen on its valid set)."),
    bs: int = typer.Option(BS, min=1, help="Batch size."),
    workers: Optional[int] = typer.Option(None, min=0, help="Photo-decoding threads."),
    device: Optional[str] = typer.Option(None, help="cuda, cpu... (default: the GPU when there is one)."),
    annotate: bool = typer.Option(False, help="Also write full-size annotated photos to REPORT/annotated/."),
    engine: str = typer.Option("torch", help="torch (the model folder), or onnx: its `stampcheck export` file "
                               "run by onnxruntime, which needs no torch (pip install 'stampcheck\\[runtime]')."),
    watch: Optional[Path] = typer.Option(None, help="Instead of PHOTOS: watch this folder (and its sub-folders) "
                                         "and check each photo once it is completely written, until Ctrl-C; a "
                                         "restart with the same --out goes on where it stopped."),
    on_missing: Optional[str] = typer.Option(None, help="--watch: run this command (no shell) with the path of "
                                             "each photo that is missing its stamp or unreadable appended."),
    on_missing_jobs: int = typer.Option(GATE_JOBS, min=1, help="--watch: --on-missing commands running at once; the "
                                        "others wait their turn, in order."),
    settle: float = typer.Option(SETTLE, min=0.1, help="--watch: seconds a photo that does not decode must stay "
                                 "unchanged before it is reported unreadable (longer than the camera's pauses)."),
):
    """Check photos for the stamp. Every photo given gets a row in the report; those that cannot be
    read too (never fatal, never a pass). In a folder or glob, a file that is an image by neither
    name nor content (a README, LICENSE, labels.csv) is skipped and listed.

    Exit codes, a production gate:
    0 every photo was read and carries a stamp
    1 at least one photo lacks a stamp
    3 no stamp missing, but some photos could not be read
    2 bad usage or input (nothing written)
    4 the tool itself failed

    With --watch it runs until Ctrl-C (or SIGTERM), printing a line per photo, and exits 130."""
    from rich.table import Table

    from stampcheck.qa.batch import UsageError, run_qa
    from stampcheck.paths import OverlapError

    if watch is not None and (photos or annotate):
        fail("--watch checks the photos of its folder: give no PHOTOS" + (" and no --annotate" if annotate else ""))
    if watch is None and not photos:  # the parser's own message, as for any missing argument
        raise typer.BadParameter("give the photos to check (files, folders or globs), or --watch FOLDER",
                                 param_hint="PHOTOS...")
    if watch is None and on_missing is not None:
        fail("--on-missing is for --watch; batch qa's exit code is its gate")
    try:
        if watch is not None:
            from stampcheck.qa.watch import ReportRemoved, run_watch

            try:
                summary = run_watch(model, watch, out, threshold, device, engine, on_missing, settle, bs=bs,
                                    workers=workers or 0, on_missing_jobs=on_missing_jobs,
                                    log=lambda line: report.print(line, markup=False, highlight=False))
            except ReportRemoved as e:
                fail(str(e), errors.FAILED)
        else:
            summary = run_qa(model, photos, out, threshold, bs, workers, device, annotate, progress=progress_bar,
                             engine=engine)
    except (UsageError, OverlapError) as e:  # a model folder that cannot be used is a UsageError
        fail(e)

    if summary.not_photos:
        names = first_three([escape(shown(str(p))) for p in summary.not_photos], "the report lists them")
        console.print(f"[yellow]skipped[/], not photos by name or content: {len(summary.not_photos)} ({names})")
    for path, why in summary.not_annotated:
        console.print(f"[yellow]not annotated[/] {escape(shown(str(path)))}: {escape(shown(why))}")
    unreadable = [r for r in summary.results if r.error]
    if unreadable and watch is None:  # --watch printed each one as it came
        names = first_three([f"{escape(shown(str(r.path)))}: {escape(shown(r.error))}" for r in unreadable],
                            "results.csv gives each")
        console.print(f"[yellow]unreadable[/] {len(unreadable)} ({names})")
    missing = [r for r in summary.results if not r.error and not r.found(summary.threshold)]
    if missing and watch is None:
        names = first_three([escape(shown(str(r.path))) for r in missing], "the report lists them")
        console.print(f"[red]missing their stamp[/] {len(missing)} ({names})")
    at = f" at {summary.size} px" if summary.size else ""
    stages = "second look" if summary.second_look else "one stage"
    if not summary.second_look:
        console.print("this model has no verifier: the detector's scores decide alone "
                      "(`stampcheck train --verifier` adds the second look)")
    table = Table(title=f"stampcheck qa ({summary.photos} photos{at}, {stages}, threshold {summary.threshold:.2f})")
    for col in ("stamped", "missing", "unreadable"):
        table.add_column(col, justify="right")
    table.add_row(str(summary.stamped), str(summary.missing), str(summary.unreadable))
    report.print(table)
    report.print(f"report: {out / 'index.html'}  table: {out / 'results.csv'}")
    raise typer.Exit(errors.INTERRUPTED if watch is not None else summary.exit_code)


@app.command(short_help="Write the model as ONNX or TorchScript.")
def export(
    model: Path = typer.Argument(..., metavar="MODEL", help="Model folder (from `stampcheck train`)."),
    fmt: str = typer.Option("onnx", "--format", help="onnx or torchscript."),
    out: Optional[Path] = typer.Option(None, help="File to write (default MODEL/model.onnx or "
                                       "MODEL/model.torchscript). An existing file is replaced only when an "
                                       "earlier export wrote it."),
):
    """Write the model as one graph that other tools load: uint8 photos (B, 3, S, S), RGB, squished to
    the model's size, in; per-cell scores (B, HW, C) and boxes (B, HW, 4) in input pixels out. The
    model's config.json travels in the file's metadata. `qa --engine onnx` runs the ONNX file without torch."""
    from stampcheck.train.export import export as run_export
    from stampcheck.train.model import ModelError

    try:
        path, difference = run_export(model, fmt, out)
    except (ModelError, ValueError, OSError) as e:
        fail(e)
    checked = ("not checked (no onnxruntime installed)" if difference is None else
               f"checked: scores within {difference[0]:.1g}, boxes within {difference[1]:.1g} px of torch's")
    report.print(f"[green]exported[/] {escape(str(path))} ({path.stat().st_size / 1e6:.1f} MB); {checked}")
    from stampcheck.runtime import verifier_file

    second = verifier_file(path)
    if (Path(model) / "verifier.pth").exists() and second.is_file():
        report.print(f"and its verifier {escape(str(second))}: the two files travel together")


@app.command(short_help="Score a model on a labelled set.")
def evaluate(
    model: Path = typer.Argument(..., metavar="MODEL", help="Model folder."),
    dataset: Path = typer.Argument(..., metavar="DATASET", help="Labelled set: a folder with labels.csv + images/, a COCO JSON "
                                   "(CVAT, Label Studio, Roboflow), a YOLO data.yaml / Ultralytics-layout folder, "
                                   "CVAT's YOLO 1.1 obj.data, or a Pascal VOC folder (Annotations/)."),
    images: Optional[Path] = typer.Option(None, help="COCO only: the folder its file names are relative to "
                                          "(default: the JSON's folder, its images/ or ../images/)."),
    out: Optional[Path] = typer.Option(None, help="Folder for metrics.json, pr_curve.png, and the labels and "
                                       "detections as COCO files (coco_gt.json, coco_detections.json)."),
    split: Optional[str] = typer.Option(None, help="Only this split (train or valid; test in a YOLO set); "
                                        "default all images."),
    bs: int = typer.Option(BS, min=1, help="Photos per batch."),
    workers: Optional[int] = typer.Option(None, min=0, help="Photo-decoding threads."),
    device: Optional[str] = typer.Option(None, help="cuda, cpu... (default: the GPU when there is one)."),
):
    """Presence accuracy, precision, recall, F1, mean IoU, IoU>=0.5 share and COCO AP on a labelled set,
    with recall and mean IoU by stamp size."""
    from stampcheck.qa.evaluate import evaluate as run_evaluate

    def note(line: str):

        console.print(f"[yellow]note:[/] {escape(printable(line))}")

    try:
        result = run_evaluate(model, dataset, out, split, bs, workers, device, progress=progress_bar, images=images,
                              log=note)
    except ValueError as e:  # DatasetError, ModelError, OverlapError: bad input, named
        fail(e)
    m = result["metrics"]
    report.print(" ".join(f"{k} {m[k]:.3f}" for k in ("accuracy", "precision", "recall", "f1", "mean_iou",
                                                       "iou50", "ap50", "ap")))
    for row in m["by_stamp_size"]:
        report.print(f"  stamps {row['size']} of the short side: {row['stamped']} images, recall {row['recall']:.3f}, "
                     f"mean IoU {row['mean_iou']:.3f}")
    if out:
        report.print(f"written: {out / 'metrics.json'}, {out / 'pr_curve.png'}, {out / 'coco_gt.json'}, "
                     f"{out / 'coco_detections.json'}")


@app.command(short_help="The whole pipeline offline, in minutes.")
def demo(out: Path = typer.Option(DATA / "demo", help="Folder for everything the demo writes."),
         quick: bool = typer.Option(False, help="A reduced run (tests, smoke checks): tiny data, one epoch.")):
    """The whole pipeline offline: compose on the built-in stamp and backgrounds, train, then QA on
    freshly composed photos the model never saw; prints the held-out metrics and the report path."""
    from stampcheck.demo import run_demo

    run_demo(out, quick=quick, log=report.print)


def main():
    """The console script: any error the commands did not turn into a message still ends as one
    line and a documented exit code, never a traceback."""
    main_pid, interrupted = os.getpid(), []

    def interrupt(signum, frame):
        # Ctrl-C, and SIGTERM (a service manager's stop) taken as one by every command from its first
        # second: one line and 130. Typer turns the KeyboardInterrupt into a silent exit 130, hence
        # the note. A command's own Ctrl-C handler (train: stop after the batch) takes SIGTERM too;
        # watch puts its own in place for both while it runs.
        if os.getpid() != main_pid and signum == signal.SIGTERM:  # a forked worker dies of it, as before
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
        handler = signal.getsignal(signal.SIGINT)
        if signum == signal.SIGTERM and callable(handler) and handler not in (interrupt, signal.default_int_handler):
            return handler(signal.SIGINT, frame)
        interrupted.append(signum)
        raise KeyboardInterrupt

    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:  # not when started with it ignored (&)
        signal.signal(signal.SIGINT, interrupt)
    signal.signal(signal.SIGTERM, interrupt)
    try:
        rc = app(standalone_mode=False)  # typer.Exit(code) comes back as the return value here
        if interrupted and rc == errors.INTERRUPTED:
            console.print("[bold yellow]interrupted[/]")
    except typer.Exit as e:
        rc = e.exit_code
    except (typer.Abort, KeyboardInterrupt):
        console.print("[bold yellow]interrupted[/]")
        rc = errors.INTERRUPTED
    except typer.TyperException as e:  # bad options: the parser's own message, then the usage code
        e.show()
        rc = errors.USAGE
    except DeviceError as e:  # raised deep inside every command that runs a model
        console.print(f"[bold red]error:[/] {escape(shown(str(e)))}")
        rc = errors.USAGE
    except MemoryError:
        console.print("[bold red]error:[/] out of memory")
        rc = errors.FAILED
    except Exception as e:  # noqa: BLE001 - the last line of defence: one line, not a traceback
        if os.environ.get("STAMPCHECK_DEBUG"):
            raise
        missing = getattr(e, "name", None) or ""  # a runtime install (stampcheck[runtime]) has no torch...
        if isinstance(e, ModuleNotFoundError) and missing.split(".")[0] in FULL_ONLY:
            console.print(f"[bold red]error:[/] this command needs {missing.split('.')[0]}, which is not installed: "
                          + escape("pip install 'stampcheck[full]' (a runtime install runs `qa --engine onnx`)"))
        else:
            console.print(f"[bold red]error:[/] {escape(shown(f'{type(e).__name__}: {e}'))} "
                          "(a bug in stampcheck or a problem of the machine; STAMPCHECK_DEBUG=1 shows the traceback)")
        rc = errors.FAILED
    raise SystemExit(rc if isinstance(rc, int) else errors.OK)


if __name__ == "__main__":
    main()
