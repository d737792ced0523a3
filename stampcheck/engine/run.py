"""The batch loop shared by both back-ends: photos read ahead, judged a batch at a time, the second look
when the model has one.

An engine takes a uint8 batch (B, 3, S, S), RGB, of photos squished to S x S, and returns per cell
``scores`` (B, HW, C), probabilities, and ``boxes`` (B, HW, 4), x0, y0, x1, y1 in the pixels of
that input (``run``); a two-stage engine also ``verify``s crops. It carries ``size``, ``classes``,
``threshold``, ``look`` and ``on_gpu`` (stampcheck.engine.load_engine).
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

import numpy as np

from stampcheck.device import cpu_count
from stampcheck.engine.decode import PhotoResult, find_stamps
from stampcheck.engine.photos import Photo, _read_ahead, read_photo
from stampcheck.engine.second_look import crop, crop_window, rescore


def predict_photos(engine, files: list[Path], bs: int = 32, workers: int | None = None,
                   previews: bool = False, low_threshold: float | None = None):
    """Yield a PhotoResult per file, in batches, in file order, judged at the engine's threshold.
    ``low_threshold`` keeps lower scoring detections too (for AP); they are not found stamps. An engine with a verifier (``engine.look``, a LookConfig)
    proposes candidates at its candidate threshold and lets the verifier judge them (second_look)."""
    if workers is None:
        # On the CPU the forward pass already uses every core; decoding threads only pay off
        # beyond a few cores.
        workers = min(8, cpu_count()) if engine.on_gpu else cpu_count() // 4
    look = getattr(engine, "look", None)
    read = partial(read_photo, size=engine.size, previews=previews, detail=look.detail if look else None)
    photos = _read_ahead(read, files, workers, 4 * bs)
    batch = []
    for k, (path, photo) in enumerate(zip(files, photos)):
        batch.append((path, photo))
        if len(batch) < bs and k + 1 < len(files):
            continue
        yield from judge_batch(engine, [p for p, _ in batch], [ph for _, ph in batch], low_threshold=low_threshold)
        batch = []


def judge_batch(engine, paths: list[Path], photos: list[Photo], threshold: float | None = None,
                low_threshold: float | None = None) -> list[PhotoResult]:
    """The engine's verdict on a batch of read photos: the stamps found are the detections at or above
    ``threshold`` (None: the engine's), which each result carries; ``low_threshold`` keeps weaker
    ones beside them. A two-stage engine's detector proposes below both, down to its candidate
    threshold, and its verifier decides."""
    look = getattr(engine, "look", None)
    threshold = engine.threshold if threshold is None else threshold
    keep = threshold if low_threshold is None else min(threshold, low_threshold)
    good = [p.pixels for p in photos if p.pixels is not None]
    scores, boxes = engine.run(np.stack(good)) if good else (None, None)
    propose = min(look.candidate_threshold, keep) if look else keep
    j, results = 0, []
    for path, p in zip(paths, photos):
        r = PhotoResult(path, *p.source_size, error=p.error, preview=p.preview, threshold=threshold)
        if p.pixels is not None:
            find_stamps(r, scores[j], boxes[j], engine.size, engine.classes, propose)
            j += 1
        results.append(r)
    if look:
        second_look(engine, look, results, [p.view for p in photos], keep)
    return results


def second_look(engine, look, results: list[PhotoResult], views: list, keep: float) -> None:
    """Let the engine's verifier judge each read photo's best ``look.top_k`` candidates, in one batch."""
    crops, owners = [], []
    for n, (r, view) in enumerate(zip(results, views)):
        if r.error is None:
            r.detections = (r.detections or [])[:look.top_k]
            crops += [crop(view, box, (r.width, r.height), look) for _, _, box in r.detections]
            owners += [n] * len(r.detections)
    probs = engine.verify(np.stack(crops)) if crops else np.zeros((0, 1 + len(engine.classes)))
    owners = np.array(owners, dtype=int)
    for n, r in enumerate(results):
        if r.error is None:
            rescore(r, probs[owners == n], engine.classes, keep)
            if (owners == n).any():
                r.look_window = list(crop_window(r.top_box, look.margin))
