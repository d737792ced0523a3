"""The commands that use a model: qa, export, evaluate, and the demo of it all."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer
from rich.markup import escape

from stampcheck.qa.config import BS, GATE_JOBS, SETTLE
from stampcheck import errors
from stampcheck.progress import console, printable, progress_bar, report, shown

from stampcheck.app.base import DATA, app, fail, first_three


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
    missing = [r for r in summary.results if not r.error and not r.found()]
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


@app.command(short_help="Write the model as ONNX, TorchScript or fastai.")
def export(
    model: Path = typer.Argument(..., metavar="MODEL", help="Model folder (from `stampcheck train`)."),
    fmt: str = typer.Option("onnx", "--format", help="onnx, torchscript, or fastai (model.pkl written anew "
                            "from model.pth and config.json, for fastai's load_learner)."),
    out: Optional[Path] = typer.Option(None, help="File to write (default MODEL/model.onnx, "
                                       "MODEL/model.torchscript or MODEL/model.pkl). An existing file is replaced "
                                       "only when an earlier export (or train, for model.pkl) wrote it."),
):
    """Write the model as one graph that other tools load: uint8 photos (B, 3, S, S), RGB, squished to
    the model's size, in; per-cell scores (B, HW, C) and boxes (B, HW, 4) in input pixels out. The
    model's config.json travels in the file's metadata. `qa --engine onnx` runs the ONNX file without torch.
    `--format fastai` writes model.pkl again, as train does, when fastai cannot load the one there."""
    from stampcheck.train.export import export as run_export
    from stampcheck.engine.config import ModelError

    try:
        path, difference = run_export(model, fmt, out)
    except (ModelError, ValueError, OSError) as e:
        fail(e)
    checked = ("for fastai's load_learner" if fmt == "fastai" else "not checked (no onnxruntime installed)"
               if difference is None else
               f"checked: scores within {difference[0]:.1g}, boxes within {difference[1]:.1g} px of torch's")
    report.print(f"[green]exported[/] {escape(str(path))} ({path.stat().st_size / 1e6:.1f} MB); {checked}")
    from stampcheck.engine.onnx import verifier_file

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
    from stampcheck.app.demo import run_demo

    run_demo(out, quick=quick, log=report.print)
