"""The input size a trained model predicts at: measured on the valid split, not assumed.

The smallest stamps want more pixels than the training size gives them, and training saw every
stamp a little larger than a photo squished to that size shows it (the zoom augmentation only
enlarges). A somewhat larger view finds small stamps far more often and large ones a little less;
the valid split weighs the two, each size at its own threshold. On the three test stamps 1.25x the
training size won (BENCHMARKS.md, session 12); 1.5x lost too many of the largest.
"""

from __future__ import annotations

from pathlib import Path

from train.metrics import best_threshold, summarise
from train.model import SIZES
from train.predict import Predictor, judge_photos

SCALES = (1.0, 1.125, 1.25)  # of the training size; the grid's stride (16) rounds them


def view_sizes(size: int) -> list[int]:
    """The input sizes tried for a model trained at ``size`` px, smallest first."""
    return sorted({min(SIZES[1], max(size, round(size * s / 16) * 16)) for s in SCALES})


def choose_view(model_dir: Path, train_size: int, items: list, files: list[Path], monitor: str, device=None,
                log=print) -> dict:
    """Score the valid ``items`` (their image ``files``) at each of :func:`view_sizes`, each at the
    threshold its own results prefer, and return the best view by ``monitor`` then mean IoU (a tie
    goes to the smaller, cheaper size): ``{"size", "threshold", "metrics", "views"}``.
    ``views`` lists every size's metrics."""
    views, best = [], None
    for size in view_sizes(train_size):
        engine = Predictor(model_dir, device, size=size)
        results = [judged for _, _, judged in judge_photos(engine, items, files) if judged is not None]
        threshold = best_threshold(results)
        metrics = summarise(results, threshold)
        views.append({"size": size, "threshold": threshold, **metrics})
        key = (metrics[monitor], metrics["mean_iou"])
        if best is None or key > best[0]:
            best = (key, {"size": size, "threshold": threshold, "metrics": metrics})
    log("predicting at " + " / ".join(f"{v['size']}" for v in views) + " px: valid "
        + monitor + " " + " / ".join(f"{v[monitor]:.3f}" for v in views) + ", mean IoU "
        + " / ".join(f"{v['mean_iou']:.3f}" for v in views)
        + f"; the model predicts at {best[1]['size']} px (trained at {train_size})")
    return {**best[1], "views": views}
