"""Evaluate a model on a labelled set: the dataset contract (composed, or real photos labelled by
hand), a COCO JSON or a YOLO set (see stampcheck.formats). The presence and IoU metrics of
stampcheck.engine.scores, COCO AP from pycocotools, and a threshold sweep with its precision-recall curve."""

from __future__ import annotations

import contextlib
import io
from dataclasses import replace
from pathlib import Path

import numpy as np

from stampcheck.qa.config import BS
from stampcheck.atomic import atomic_path, atomic_write_json
from stampcheck.dataset import coco_dict
from stampcheck.formats import read_labelled_set
from stampcheck.paths import OutputLock, check_output, claim_output, refuse_overlap
from stampcheck.progress import no_progress

AP_THRESHOLD = 0.01  # detections kept for AP: AP integrates over all scores
COCO_GT, COCO_DETECTIONS = "coco_gt.json", "coco_detections.json"


def evaluate(model_dir: Path, dataset: Path, out: Path | None = None, split: str | None = None, bs: int = BS,
             workers: int | None = None, device: str | None = None, progress=None, images: Path | None = None,
             log=None) -> dict:
    """``dataset``: any labelled set :func:`stampcheck.formats.read_labelled_set` reads; ``images``
    the folder a COCO JSON's file names are relative to. ``log`` gets how the set was read."""
    dataset, progress = Path(dataset), progress or no_progress
    labelled = read_labelled_set(dataset, images)
    if out:
        refuse_overlap(out, [dataset, labelled.root, model_dir])
        check_output(out, "evaluate")
    splits = sorted({i.split for i in labelled.items} - {""})
    if split is not None and not splits:
        raise ValueError(f"{dataset} ({labelled.kind}) has no splits; evaluate without --split")
    items = [i for i in labelled.items if split is None or i.split == split]
    if not items:
        raise ValueError(f"{dataset} has no images in split {split!r} (it has {', '.join(splits)})")
    for note in labelled.notes + unlabelled_notes(labelled):
        if log:
            log(note)
    # torch and fastai load in seconds: only now, so that a bad labelled set is answered at once
    from stampcheck.engine import load_engine
    from stampcheck.engine.scores import by_stamp_size, judge_photos, summarise

    predictor = load_engine(model_dir, "torch", device)
    match_classes(items, predictor.classes, dataset)
    files = [labelled.root / i.file for i in items]
    results, sizes, detections, errors = [], [], [], []
    with progress(len(files), "evaluating") as advance:
        for item, r, judged in judge_photos(predictor, items, files, bs=bs, workers=workers,
                                            low_threshold=AP_THRESHOLD):
            advance(1)
            if judged is None:
                errors.append({"file": item.file, "error": r.error})
                continue
            item.width, item.height = r.width, r.height
            results.append(judged)
            sizes.append(max((max(b.width, b.height) for b in item.boxes), default=0) / min(r.width, r.height))
            detections.append((item, r.detections))
    if not results:
        raise ValueError(f"none of the {len(errors)} images of {dataset} could be read "
                         f"(first: {errors[0]['file']}: {errors[0]['error']})")
    thr = predictor.threshold
    gt = coco_dict([i for i, _ in detections], predictor.classes)
    dets = coco_detections([d for _, d in detections], predictor.classes)
    metrics = {**summarise(results, thr), **coco_ap(gt, dets)}
    metrics["by_stamp_size"] = by_stamp_size(results, sizes, thr)
    sweep = [summarise(results, float(t)) for t in np.round(np.arange(0.05, 0.96, 0.05), 2)]
    report = {"metrics": metrics, "sweep": [{k: s[k] for k in ("threshold", "accuracy", "precision", "recall", "f1")}
                                            for s in sweep], "unreadable": errors, "model": str(model_dir),
              "dataset": str(dataset), "format": labelled.kind, "images": str(labelled.root),
              "unlabelled": labelled.unlabelled, "notes": labelled.notes, "split": split or "all"}
    if out:
        out = claim_output(out, "evaluate")
        with OutputLock(out, "evaluate"):  # another evaluate's metrics.json beside this one's curve is no report
            atomic_write_json(out / "metrics.json", report)
            # what pycocotools, Ultralytics (save_json), detectron2 and mmdetection read and write:
            # the labels as COCO, the detections as COCO results (image ids of the first)
            atomic_write_json(out / COCO_GT, gt)
            atomic_write_json(out / COCO_DETECTIONS, dets)
            plot_pr(report["sweep"], thr, out / "pr_curve.png")
    return report


def unlabelled_notes(labelled, named: int = 10) -> list[str]:
    """Photos in the images folder that no label names: left out, and said so."""
    left = labelled.unlabelled
    if not left:
        return []
    more = f" and {len(left) - named} more" if len(left) > named else ""
    return [f"no labels, not evaluated ({len(left)} in {labelled.root}): " + ", ".join(left[:named]) + more]


def match_classes(items, classes: list[str], dataset: Path) -> None:
    """Make the labels' classes the model's: a one-class model takes every label as its class
    (a hand-labelled set may say "stamp" or nothing); otherwise a class it lacks is an error."""
    if len(classes) == 1:
        for item in items:
            item.boxes = [replace(b, label=classes[0]) for b in item.boxes]
        return
    unknown = sorted({b.label for item in items for b in item.boxes} - set(classes))
    if unknown:
        raise ValueError(f"{dataset}: the labels' classes {unknown} are not among the model's classes {classes} "
                         "(a labels.csv without a class column calls them 'stamp')")


def coco_detections(detections: list, classes: list[str]) -> list[dict]:
    """Per image (ids from 1, in order) its (score, class, box) detections as COCO results:
    ``bbox`` [x, y, w, h] in the image's pixels."""
    return [{"image_id": k + 1, "category_id": classes.index(c) + 1, "score": round(float(s), 6),
             "bbox": [round(b[0], 2), round(b[1], 2), round(b[2] - b[0], 2), round(b[3] - b[1], 2)]}
            for k, found in enumerate(detections) for s, c, b in (found or [])]


def coco_ap(gt: dict, dets: list[dict]) -> dict:
    """AP@0.5 and AP@[.5:.95] by pycocotools; NaN when the set holds no stamp at all."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    if not gt["annotations"]:
        return {"ap50": float("nan"), "ap": float("nan")}
    if not dets:
        return {"ap50": 0.0, "ap": 0.0}
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints its tables
        coco = COCO()
        coco.dataset = gt
        coco.createIndex()
        ev = COCOeval(coco, coco.loadRes([dict(d) for d in dets]), "bbox")  # loadRes adds fields to what it gets
        ev.evaluate(); ev.accumulate(); ev.summarize()
    return {"ap50": float(ev.stats[1]), "ap": float(ev.stats[0])}


def plot_pr(sweep: list[dict], threshold: float, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 4.5))
    ax.plot([s["recall"] for s in sweep], [s["precision"] for s in sweep], marker="o")
    for s in sweep[::3]:
        ax.annotate(f"{s['threshold']:.2f}", (s["recall"], s["precision"]), fontsize=7)
    ax.set_xlabel("recall"); ax.set_ylabel("precision"); ax.set_xlim(0, 1.02); ax.set_ylim(0, 1.02)
    ax.set_title(f"presence precision-recall (model threshold {threshold:.2f})")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=90)
    plt.close(fig)
