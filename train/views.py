"""The input size a trained model predicts at: measured on the valid split, not assumed.

The smallest stamps want more pixels than the training size gives them, and training saw every
stamp a little larger than a photo squished to that size shows it (the zoom augmentation only
enlarges). A somewhat larger view finds small stamps far more often and large ones a little less;
the valid split weighs the two, each size at its own threshold. On the three test stamps 1.125x or
1.25x the training size is chosen (BENCHMARKS.md, "Transfer"); 1.5x loses too many of the largest.
"""

from __future__ import annotations

from pathlib import Path

from stampcheck.engine.config import SIZES
from stampcheck.engine.scores import best_threshold, summarise, within_one_se
from stampcheck.engine.scores import judge_photos
from stampcheck.engine.torch_engine import Predictor

SCALES = (1.0, 1.125, 1.25)  # of the training size; the grid's stride (16) rounds them


def view_sizes(size: int) -> list[int]:
    """The input sizes tried for a model trained at ``size`` px, smallest first."""
    return sorted({min(SIZES[1], max(size, round(size * s / 16) * 16)) for s in SCALES})


def pick_view(views: list[dict], monitor: str) -> dict:
    """Of ``views`` (each a size's ``summarise`` figures, with ``size``, ``threshold`` and ``images``),
    those whose ``monitor`` is within one standard error of the best, and of them the strictest
    threshold, then the smallest size. With no figures to compare (NaN), the first view."""
    best = max(views, key=lambda v: v[monitor] if v[monitor] == v[monitor] else -1.0)
    floor = within_one_se(best[monitor], best["images"] or 1)
    near = [v for v in views if v[monitor] >= floor] or views[:1]
    return max(near, key=lambda v: (v["threshold"], -v["size"]))


def choose_view(model_dir: Path, train_size: int, items: list, files: list[Path], monitor: str, device=None,
                bs: int = 32, log=print) -> dict:
    """Score the valid ``items`` (their image ``files``) at each of :func:`view_sizes`, each at the
    threshold its own results prefer, and keep the view :func:`pick_view` picks. Among sizes the valid
    split cannot tell apart the strictest threshold wins, as among thresholds
    (stampcheck.train.metrics.best_threshold): a stamp-free product passing the gate costs more than a stamped
    one sent to a person; then the smaller size, cheaper for qa. Returns ``{"size", "threshold",
    "metrics", "views"}``; ``views`` lists every size's metrics."""
    views = []
    for size in view_sizes(train_size):
        engine = Predictor(model_dir, device, size=size, verifier=False)
        results = [judged for _, _, judged in judge_photos(engine, items, files, bs=bs) if judged is not None]
        threshold = best_threshold(results)
        views.append({"size": size, **summarise(results, threshold), "threshold": threshold,
                      "images": len(results)})
    chosen = pick_view(views, monitor)
    log("predicting at " + " / ".join(f"{v['size']}" for v in views) + " px: valid "
        + monitor + " " + " / ".join(f"{v[monitor]:.3f}" for v in views) + ", mean IoU "
        + " / ".join(f"{v['mean_iou']:.3f}" for v in views)
        + f"; the model predicts at {chosen['size']} px, threshold {chosen['threshold']:.2f} (trained at "
        f"{train_size}; of the sizes within one standard error of the best, the strictest threshold)")
    return {"size": chosen["size"], "threshold": chosen["threshold"],
            "metrics": {k: v for k, v in chosen.items() if k != "size"}, "views": views}
