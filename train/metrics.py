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

import numpy as np
import torch
from fastai.learner import Metric

from stampcheck.train.detect import best_iou, detect, plain

METRIC_KEYS = ("accuracy", "precision", "recall", "mean_iou", "iou50", "correct")


@dataclass(frozen=True)
class ImageResult:
    has_stamp: bool
    score: float
    iou: float


def image_results(out: torch.Tensor, boxes: torch.Tensor, labels: torch.Tensor, n_classes: int) -> list[ImageResult]:
    """Results of a batch; ``boxes``/``labels`` are fastai's padded targets (label 0 = padding)."""
    boxes, labels = plain(boxes), plain(labels)
    found = detect(out, n_classes, threshold=1.1)  # only the top cell is needed here
    results = []
    for b, f in enumerate(found):
        truth = boxes[b][labels[b] > 0] if labels.shape[1] else boxes.new_zeros(0, 4)
        results.append(ImageResult(bool(truth.numel()), f["score"], best_iou(f["box"], truth)))
    return results


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


class ValidResults:
    """The valid pass's per-image results, collected once per epoch and shared by every metric."""

    def __init__(self, n_classes: int):
        self.n_classes, self.results, self._threshold = n_classes, [], None

    def reset(self):
        self.results, self._threshold = [], None

    def accumulate(self, learn):
        self.results += image_results(learn.pred, *learn.yb, self.n_classes)

    @property
    def threshold(self) -> float:
        if self._threshold is None:
            self._threshold = best_threshold(self.results)
        return self._threshold


class DetectionMetric(Metric):
    """One of METRIC_KEYS as a fastai metric over the valid set, at the threshold the epoch's own
    valid results prefer (best_threshold), as the finished model is judged. A fixed 0.5 misjudges
    epochs: mid-training scores sit far from 0.5 (a 15-minute model scored its stamps around 0.1),
    and the best epoch at 0.5 was the one whose scores happened to lie nearest it, not the best."""

    def __init__(self, key: str, shared: ValidResults, collects: bool):
        self.key, self.shared, self.collects = key, shared, collects  # one metric collects for all

    def __setstate__(self, state):
        # a model.pkl exported before the metrics shared their results holds metrics without one
        self.__dict__.update(state)
        if "shared" not in state:  # each collects its own, as they did
            self.shared, self.collects = ValidResults(state.get("n_classes", 1)), True

    def reset(self):
        if self.collects:
            self.shared.reset()

    def accumulate(self, learn):
        if self.collects:
            self.shared.accumulate(learn)

    @property
    def value(self):
        if self.key == "threshold":
            return self.shared.threshold
        return summarise(self.shared.results, self.shared.threshold)[self.key]

    @property
    def name(self):
        return self.key


def detection_metrics(n_classes: int) -> list[DetectionMetric]:
    """METRIC_KEYS, then the threshold they were taken at."""
    shared = ValidResults(n_classes)
    keys = (*METRIC_KEYS, "threshold")
    return [DetectionMetric(k, shared, collects=k == keys[0]) for k in keys]
