"""Detections out: a photo's per-cell scores and boxes (the network's output, either back-end) turned
into presence, the top box, the stamps found after NMS, and the heatmap, in the photo's own pixels.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

NMS_IOU, MAX_DETECTIONS = 0.5, 10  # as stampcheck.train.detect.detect, which chose the valid threshold


@dataclass
class PhotoResult:
    """What the model says about one photo; boxes in the photo's own (EXIF-upright) pixels."""

    path: Path
    width: int = 0
    height: int = 0
    score: float = 0.0
    top_box: list[float] | None = None
    detections: list[tuple[float, str, list[float]]] | None = None  # (score, class, box)
    error: str | None = None
    preview: Image.Image | None = None  # the photo at report-thumbnail size, upright, when asked for
    # the best class score of every grid cell, (side, side) rows top to bottom: where the model looked
    heatmap: np.ndarray | None = None
    detector_score: float | None = None  # the detector's presence, when a verifier gave ``score``
    look_window: list[int] | None = None  # the square the verifier saw around ``top_box``, photo pixels
    threshold: float = 0.5  # the score that makes a stamp, as the engine judged (judge_batch)

    def found(self) -> list[tuple[float, str, list[float]]]:
        """The stamps this photo is judged to carry: its detections at or above its threshold (those
        below are kept only for AP)."""
        return [d for d in (self.detections or []) if d[0] >= self.threshold]


def nms(boxes: np.ndarray, scores: np.ndarray, classes: np.ndarray, iou: float = NMS_IOU) -> list[int]:
    """Indices kept by greedy per-class NMS, best first: torchvision's batched_nms (a box goes when it
    overlaps a better one of its class by more than ``iou``), in numpy."""
    x0, y0, x1, y1 = boxes.T
    area = (x1 - x0) * (y1 - y0)
    order = np.argsort(-scores, kind="stable")
    keep = []
    with np.errstate(invalid="ignore", divide="ignore"):
        while order.size:
            i, rest = order[0], order[1:]
            keep.append(int(i))
            w = np.clip(np.minimum(x1[i], x1[rest]) - np.maximum(x0[i], x0[rest]), 0, None)
            h = np.clip(np.minimum(y1[i], y1[rest]) - np.maximum(y0[i], y0[rest]), 0, None)
            inter = w * h
            overlap = inter / (area[i] + area[rest] - inter)
            order = rest[~((overlap > iou) & (classes[rest] == classes[i]))]  # NaN (empty boxes) stays
    return keep


def to_photo_pixels(box: np.ndarray, size: int, width: int, height: int) -> list[float]:
    """A box in the pixels of the S x S input -> pixels of a width x height photo (x1/y1 exclusive),
    clipped to the photo and at least 1 px wide and high (as stampcheck.train.detect.to_pixels)."""
    x0, y0, x1, y1 = np.clip(np.nan_to_num(np.asarray(box, dtype=np.float64) / size, nan=0.0), 0, 1).tolist()
    x0, y0 = min(x0 * width, width - 1), min(y0 * height, height - 1)
    return [x0, y0, max(x1 * width, x0 + 1), max(y1 * height, y0 + 1)]


def find_stamps(r: PhotoResult, scores: np.ndarray, boxes: np.ndarray, size: int, classes: list[str],
                threshold: float) -> None:
    """Fill ``r`` from one photo's per-cell (HW, C) scores and (HW, 4) boxes: presence (the best cell
    anywhere), its box, the detections at or above ``threshold`` after NMS, and the heatmap."""
    score, cls = scores.max(-1), scores.argmax(-1)
    side = math.isqrt(len(score))  # the input is square, and so is its grid
    if side * side == len(score):
        r.heatmap = score.reshape(side, side).astype(np.float32)
    top = int(score.argmax())
    r.score = float(score[top])
    r.top_box = to_photo_pixels(boxes[top], size, r.width, r.height)
    kept = np.flatnonzero(score >= threshold)
    best = kept[nms(boxes[kept], score[kept], cls[kept])[:MAX_DETECTIONS]]
    r.detections = [(float(score[i]), classes[int(cls[i])], to_photo_pixels(boxes[i], size, r.width, r.height))
                    for i in best]
