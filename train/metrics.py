"""The valid figures as fastai metrics, every epoch: the same scoring as `stampcheck evaluate`
(stampcheck.engine.scores), fed from the network's raw output.
"""

from __future__ import annotations

import torch
from fastai.learner import Metric

from stampcheck.engine.scores import METRIC_KEYS, ImageResult, best_threshold, summarise
from stampcheck.train.detect import best_iou, detect, plain


def image_results(out: torch.Tensor, boxes: torch.Tensor, labels: torch.Tensor, n_classes: int) -> list[ImageResult]:
    """Results of a batch; ``boxes``/``labels`` are fastai's padded targets (label 0 = padding)."""
    boxes, labels = plain(boxes), plain(labels)
    found = detect(out, n_classes, threshold=1.1)  # only the top cell is needed here
    results = []
    for b, f in enumerate(found):
        truth = boxes[b][labels[b] > 0] if labels.shape[1] else boxes.new_zeros(0, 4)
        results.append(ImageResult(bool(truth.numel()), f["score"], best_iou(f["box"], truth)))
    return results


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
