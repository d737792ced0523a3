"""Presence and location metrics: one implementation, used every epoch and by `stampcheck evaluate`.

Per image we keep the presence score (highest stamp score) and the IoU of the top-scoring box
with the true box it overlaps most. For a threshold t:

- accuracy: share of images where (score >= t) equals "has a stamp";
- precision, recall, f1: of presence, stamped images being the positives;
- mean_iou: mean IoU of the top box over stamped images (localisation, whatever the score);
- iou50: share of stamped images whose top box has IoU >= 0.5;
- correct: share of images judged right end to end: an unstamped image scored below t, or a
  stamped image scored at or above t with IoU >= 0.5. Training keeps the epoch with the best one.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from stampcheck.engine.run import predict_photos

METRIC_KEYS = ("accuracy", "precision", "recall", "mean_iou", "iou50", "correct")


@dataclass(frozen=True)
class ImageResult:
    has_stamp: bool
    score: float
    iou: float


def best_iou(box, truth) -> float:
    """IoU of one box with the true box it overlaps most (0 when there is none); pixels or -1..1 alike."""
    truth = np.asarray(truth, dtype=np.float64).reshape(-1, 4)
    if not len(truth):
        return 0.0
    x0, y0, x1, y1 = np.asarray(box, dtype=np.float64)
    w = np.clip(np.minimum(x1, truth[:, 2]) - np.maximum(x0, truth[:, 0]), 0, None)
    h = np.clip(np.minimum(y1, truth[:, 3]) - np.maximum(y0, truth[:, 1]), 0, None)
    inter = w * h
    union = (x1 - x0) * (y1 - y0) + (truth[:, 2] - truth[:, 0]) * (truth[:, 3] - truth[:, 1]) - inter
    with np.errstate(invalid="ignore", divide="ignore"):
        return float(np.nan_to_num(inter / union).max())


def summarise(results: list[ImageResult], threshold: float) -> dict:
    if not results:
        return {k: float("nan") for k in METRIC_KEYS}
    has = np.array([r.has_stamp for r in results])
    pred = np.array([r.score >= threshold for r in results])
    iou = np.array([r.iou for r in results])
    tp, fp, fn = int((has & pred).sum()), int((~has & pred).sum()), int((has & ~pred).sum())
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    return {
        "accuracy": float((has == pred).mean()),
        "precision": precision,
        "recall": recall,
        "f1": 2 * precision * recall / (precision + recall) if precision + recall else 0.0,
        "mean_iou": float(iou[has].mean()) if has.any() else float("nan"),
        "iou50": float((iou[has] >= 0.5).mean()) if has.any() else float("nan"),
        "correct": float(np.where(has, pred & (iou >= 0.5), ~pred).mean()),
        "images": len(results), "stamped": int(has.sum()), "threshold": threshold,
    }


# Stamp size buckets: the stamp's long side as a share of the image's short side. Small stamps are
# the hard ones and one overall recall hides them.
SIZE_EDGES = (0.0, 0.12, 0.2, 0.3, float("inf"))


def by_stamp_size(results: list[ImageResult], sizes: list[float], threshold: float,
                  edges: tuple[float, ...] = SIZE_EDGES) -> list[dict]:
    """Recall and box quality of the stamped images, grouped by the size of their largest stamp."""
    rows = []
    for lo, hi in zip(edges, edges[1:]):
        group = [r for r, s in zip(results, sizes) if r.has_stamp and lo <= s < hi]
        if group:
            m = summarise(group, threshold)
            rows.append({"size": f"{lo:.2f}-{hi:.2f}" if hi != float("inf") else f">={lo:.2f}",
                         "stamped": len(group), "recall": m["recall"], "mean_iou": m["mean_iou"],
                         "iou50": m["iou50"]})
    return rows


def best_threshold(results: list[ImageResult], prefer: float | None = None) -> float:
    """The strictest threshold whose presence accuracy is within one standard error of the best.

    On a few hundred valid images accuracy is flat over a wide range of thresholds, and its single
    best point often sits low, catching one faint valid stamp at the price of real photos flagged (a
    demo model chose 0.10 and flagged 15% of shop photos; 0.5 flagged 1.7%). Thresholds the valid
    set cannot tell apart are equal, and among them the strictest wins: a stamp-free product that
    passes the gate costs more than a stamped one sent to a person. (Model selection's one-standard-
    error rule: the standard error of one accuracy, wider than that of the difference between two
    thresholds on the same images, because the best point is itself chosen on them.) A valid set
    told apart perfectly has no error to spare: the threshold is then its faintest stamp's score.
    ``prefer``: among those thresholds, the one nearest this score instead of the strictest (a
    classifier's own decision point). No valid images: 0.5."""
    if not results:
        return 0.5
    grid = np.round(np.arange(0.05, 0.96, 0.01), 2)
    acc = np.array([summarise(results, float(t))["accuracy"] for t in grid])
    near = grid[acc >= within_one_se(acc.max(), len(results))]
    if prefer is not None:
        return float(near[np.abs(near - prefer).argmin()])
    return float(near.max())


def within_one_se(best: float, n: int) -> float:
    """The lowest share of ``n`` images that cannot be told from ``best``: one standard error below
    it (with a hair of slack for float noise). Ties among choices go to the safest or cheapest."""
    return best - np.sqrt(best * (1 - best) / n) - 1e-9


def judge_photos(engine, items: list, files: list[Path], **kwargs):
    """Yield, per labelled item (stampcheck.dataset.ImageLabels) and its image file, the engine's
    PhotoResult and how it fares against the labels: an ImageResult, or None when the file could
    not be read. ``kwargs`` go to :func:`predict_photos`."""
    for item, r in zip(items, predict_photos(engine, files, **kwargs)):
        if r.error:
            yield item, r, None
            continue
        yield item, r, ImageResult(item.has_stamp, r.score, best_iou(r.top_box, [b.as_tuple() for b in item.boxes]))
