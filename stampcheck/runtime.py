"""Running a trained model on photos without torch: reading photos as the model sees them, turning
per-cell scores and boxes into detections, the batch loop, and the ONNX engine.

An engine takes a uint8 batch (B, 3, S, S), RGB, of photos squished to S x S, and returns per cell
``scores`` (B, HW, C), probabilities, and ``boxes`` (B, HW, 4), x0, y0, x1, y1 in the pixels of
that input. Two do: the torch model (train/predict.py) and its ONNX export (:class:`OnnxModel`);
everything before and after the network is this module's, the same for both.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import NamedTuple

import numpy as np
from PIL import Image

from stampcheck.device import cpu_count
from stampcheck.files import open_regular
from stampcheck.images import ImageLimits, ImageRejected, fit_within, open_checked
from stampcheck.modelconfig import config_problem
from stampcheck.second_look import LookConfig, crop, crop_window, detail_view, rescore

# Capped as crawl and compose cap theirs: a 169 MP PNG decodes to 2 GB, so anything over 100 MP is
# refused from its header, unread. JPEGs decode at reduced scale (draft mode), so they may be larger,
# up to Pillow's own bomb limit (179 MP): 108 MP phone photos stay checkable. Either way what is
# decoded may take no more than an 8-bit RGB photo of 100 MP does (300 MB): a 100 MP float TIFF is refused.
PHOTO_LIMITS = ImageLimits(min_side=16, max_pixels=100_000_000, max_aspect=20.0)
JPEG_LIMITS = replace(PHOTO_LIMITS, max_pixels=2 * Image.MAX_IMAGE_PIXELS, max_bytes=PHOTO_LIMITS.byte_limit)
THUMB = 160  # report thumbnails' display size; small enough that JPEG draft decoding still applies
# Draft decoding lands between 1x and 2x of that; up to 1.5x the photo is kept as decoded and the
# page scales it: shrinking 174 px to 160 px cost qa about a tenth of its speed on shop photos.
THUMB_MAX = THUMB * 3 // 2
NMS_IOU, MAX_DETECTIONS = 0.5, 10  # as stampcheck.train.detect.detect, which chose the valid threshold
ONNX_NAME, TORCHSCRIPT_NAME = "model.onnx", "model.torchscript"
VERIFIER_WEIGHTS = "verifier.pth"  # a model folder's second look (stampcheck.train.verifier)
META_KEY = "stampcheck"  # the exported file's metadata: the model's config.json, and what it was made from


class ModelError(ValueError):
    """A model folder or file that cannot be used: missing, corrupt, or not what the caller needs."""


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

    def found(self, threshold: float) -> list[tuple[float, str, list[float]]]:
        """The detections at or above ``threshold``: the stamps this photo is judged to carry."""
        return [d for d in (self.detections or []) if d[0] >= threshold]


# ---- photos in ----

def _is_jpeg(path: Path) -> bool:
    with open_regular(path) as f:
        return f.read(3) == b"\xff\xd8\xff"


def open_photo(path: Path, size: int) -> Image.Image:
    """A photo upright and RGB, JPEGs decoded at reduced scale (enough for the model and a thumbnail)."""
    draft = max(size, THUMB)
    try:
        return open_checked(path, PHOTO_LIMITS, draft_size=draft)
    except ImageRejected as e:
        if e.reason != "too-large" or not _is_jpeg(path):
            raise
    return open_checked(path, JPEG_LIMITS, draft_size=draft)


def to_input(img: Image.Image, size: int) -> np.ndarray:
    """The model's view of an RGB image: squished to size x size, as in training; uint8 (3, S, S)."""
    small = img.resize((size, size), Image.BILINEAR, reducing_gap=2.0)
    return np.asarray(small).transpose(2, 0, 1)


class Photo(NamedTuple):
    pixels: np.ndarray | None        # to_input's array; None when the photo could not be read
    source_size: tuple[int, int]     # width, height of the photo as stored, upright
    error: str | None
    preview: Image.Image | None
    view: Image.Image | None = None  # the photo at the verifier's detail size, to cut crops from


def read_photo(path: Path, size: int, previews: bool = False, detail: int | None = None) -> Photo:
    """Read one photo for the model (and, with ``detail``, for a verifier's crops); a photo that
    cannot be read is a Photo with an error, never a raise."""
    try:
        img = open_photo(path, max(size, detail or 0))
    except ImageRejected as e:
        return Photo(None, (0, 0), str(e), None)
    except Exception as e:  # whatever else a broken file does, it must not stop the batch
        return Photo(None, (0, 0), f"unreadable: {type(e).__name__}: {e}", None)
    # kept as pixels: the report draws the boxes on it and encodes it once
    thumb = fit_within(img, THUMB_MAX) if previews else None
    view = detail_view(img, detail) if detail else None
    return Photo(to_input(img, size), img.info["source_size"], None, thumb, view)


def _read_ahead(read, files, workers: int, ahead: int):
    """``map(read, files)`` on ``workers`` threads, at most ``ahead`` photos ahead of the consumer.
    Threads suffice: Pillow lets go of the GIL while it decodes and resizes."""
    if not workers:
        yield from map(read, files)
        return
    with ThreadPoolExecutor(workers) as pool:
        pending = deque()
        for f in files:
            pending.append(pool.submit(read, f))
            if len(pending) > ahead:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()


# ---- detections out ----

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


def predict_photos(engine, files: list[Path], bs: int = 32, workers: int | None = None,
                   threshold: float | None = None, previews: bool = False, low_threshold: float | None = None):
    """Yield a PhotoResult per file, in batches, in file order. ``low_threshold`` keeps lower
    scoring detections too (for AP). An engine with a verifier (``engine.look``, a LookConfig)
    proposes candidates at its candidate threshold and lets the verifier judge them (second_look)."""
    if workers is None:
        # On the CPU the forward pass already uses every core; decoding threads only pay off
        # beyond a few cores.
        workers = min(8, cpu_count()) if engine.on_gpu else cpu_count() // 4
    thr = low_threshold or (engine.threshold if threshold is None else threshold)
    look = getattr(engine, "look", None)
    read = partial(read_photo, size=engine.size, previews=previews, detail=look.detail if look else None)
    photos = _read_ahead(read, files, workers, 4 * bs)
    batch = []
    for k, (path, photo) in enumerate(zip(files, photos)):
        batch.append((path, photo))
        if len(batch) < bs and k + 1 < len(files):
            continue
        yield from judge_batch(engine, [p for p, _ in batch], [ph for _, ph in batch], thr)
        batch = []


def judge_batch(engine, paths: list[Path], photos: list[Photo], threshold: float) -> list[PhotoResult]:
    """The engine's verdict on a batch of read photos: detections at or above ``threshold`` (a
    two-stage engine's detector proposes below it, down to its candidate threshold, and its
    verifier decides)."""
    look = getattr(engine, "look", None)
    good = [p.pixels for p in photos if p.pixels is not None]
    scores, boxes = engine.run(np.stack(good)) if good else (None, None)
    propose = min(look.candidate_threshold, threshold) if look else threshold
    j, results = 0, []
    for path, p in zip(paths, photos):
        r = PhotoResult(path, *p.source_size, error=p.error, preview=p.preview)
        if p.pixels is not None:
            find_stamps(r, scores[j], boxes[j], engine.size, engine.classes, propose)
            j += 1
        results.append(r)
    if look:
        second_look(engine, look, results, [p.view for p in photos], threshold)
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


# ---- the ONNX engine ----

def source_digest(model_dir: Path) -> str | None:
    """sha256 of the weights and config an export was made from, or None when they are not there;
    an export whose digest differs from its folder's is stale (the folder was trained again)."""
    h = hashlib.sha256()
    try:
        for name in ("model.pth", "config.json", VERIFIER_WEIGHTS):
            if name == VERIFIER_WEIGHTS and not (Path(model_dir) / name).exists():
                continue  # a one-stage model
            with open_regular(Path(model_dir) / name) as f:  # a named pipe there must not block the load
                while chunk := f.read(1 << 20):
                    h.update(chunk)
    except OSError:
        return None
    return h.hexdigest()


def verifier_file(export: Path) -> Path:
    """Where an export's verifier graph lies: beside it, ``NAME.verifier.SUFFIX``."""
    return export.with_name(f"{export.stem}.verifier{export.suffix}")


class OnnxModel:
    """An exported model.onnx run by onnxruntime: the engine of a PC without torch.

    ``path`` is the file or the model folder holding it. The file carries the model's config
    (classes, input size, threshold) in its metadata, so it is enough on its own."""

    def __init__(self, path: Path, device: str | None = None):
        try:
            import onnxruntime as ort
        except ImportError as e:
            raise ModelError("the onnx engine needs onnxruntime: pip install 'stampcheck[runtime]'") from e
        path = Path(path)
        if path.is_dir():
            path = path / ONNX_NAME
        if not path.is_file():  # onnxruntime opens it itself: a named pipe would block it
            raise ModelError(f"{path} {'is not a regular file' if path.exists() else 'not found'}; "
                             "make it with `stampcheck export MODEL`")
        available = ort.get_available_providers()
        gpu = "CUDAExecutionProvider" in available and (device in (None, "", "auto") or str(device).startswith("cuda"))
        if device not in (None, "", "auto", "cpu") and not gpu:
            raise ModelError(f"device {device!r}: this onnxruntime runs on {', '.join(available)}")
        providers = ["CUDAExecutionProvider", "CPUExecutionProvider"] if gpu else ["CPUExecutionProvider"]
        opts = ort.SessionOptions()
        opts.log_severity_level = 3  # onnxruntime's warnings are for its developers
        try:
            self.session = ort.InferenceSession(str(path), opts, providers=providers)
            meta = json.loads(self.session.get_modelmeta().custom_metadata_map[META_KEY])
            self.config, made_from = meta["config"], meta["source_sha256"]
            self.input, scores = self.session.get_inputs()[0], self.session.get_outputs()[0]
        except Exception as e:  # a truncated file, another tool's ONNX: onnxruntime's own errors vary
            raise ModelError(f"{path} is not a stampcheck export ({type(e).__name__}: {str(e)[:200]}); "
                             "make one with `stampcheck export MODEL`") from e
        # the file is anyone's: its config is held to config.json's rules before a photo is read
        problem = config_problem(self.config)
        if problem:
            raise ModelError(f"{path}: the config in its metadata cannot be used: {problem}; "
                             "make the file again with `stampcheck export MODEL`")
        self.classes = list(self.config["classes"])
        self.size, self.threshold = self.config["size"], float(self.config["threshold"])
        # torch's exporter may leave the class axis symbolic (a name): then only the input is held to the config
        classes_axis = scores.shape[-1] if scores.shape and isinstance(scores.shape[-1], int) else len(self.classes)
        if self.input.shape[1:] != [3, self.size, self.size] or classes_axis != len(self.classes):
            raise ModelError(f"{path}: its graph takes {self.input.shape} and gives scores {scores.shape}, its "
                             f"config says {self.size} px and {len(self.classes)} classes; make the file again "
                             "with `stampcheck export MODEL`")
        digest = source_digest(path.parent)
        if digest and digest != made_from:
            raise ModelError(f"{path} was exported from other weights than the model.pth beside it "
                             f"(trained again since?); run `stampcheck export {path.parent}` again")
        self.path = path
        self.on_gpu = self.session.get_providers()[0] == "CUDAExecutionProvider"
        self.look, self.verifier = None, None
        if self.config.get("verifier") is not None:
            self.look = LookConfig.from_dict(self.config["verifier"])
            self.threshold = self.look.threshold
            self.verifier = self._verifier_session(ort, opts, providers)

    def _verifier_session(self, ort, opts, providers):
        path = verifier_file(self.path)
        if not path.is_file():  # onnxruntime opens it itself: a named pipe would block it
            raise ModelError(f"{self.path} is a two-stage model and its verifier {path} "
                             f"{'is not a regular file' if path.exists() else 'is not beside it'}; copy both "
                             "files, or run `stampcheck export MODEL` again")
        try:
            session = ort.InferenceSession(str(path), opts, providers=providers)
            meta = json.loads(session.get_modelmeta().custom_metadata_map[META_KEY])
            crops, probs = session.get_inputs()[0], session.get_outputs()[0]
        except Exception as e:
            raise ModelError(f"{self.path} is a two-stage model and its verifier {path.name} cannot be used "
                             f"({type(e).__name__}: {str(e)[:160]}); run `stampcheck export MODEL` again") from e
        made_from = json.loads(self.session.get_modelmeta().custom_metadata_map[META_KEY]).get("source_sha256")
        if not isinstance(meta, dict) or meta.get("source_sha256") != made_from:
            raise ModelError(f"{path} was exported from another model than {self.path.name}; "
                             "run `stampcheck export MODEL` again")
        # the crops are cut to the config's size: a graph for others (or a hand-edited size) fails here, not mid-run
        side, answers = self.look.size, 1 + len(self.classes)
        given = probs.shape[-1] if probs.shape and isinstance(probs.shape[-1], int) else answers
        if crops.name != "crops" or crops.shape[1:] != [3, side, side] or given != answers:
            raise ModelError(f"{path}: its graph takes {crops.name} {crops.shape} and gives {probs.shape}, the config "
                             f"in {self.path.name} says {side} px crops and {answers} answers; run `stampcheck "
                             "export MODEL` again")
        return session

    def verify(self, crops: np.ndarray) -> np.ndarray:
        """uint8 crops (N, 3, s, s) -> the verifier's class probabilities (N, 1 + C), column 0 "none"."""
        return self.verifier.run(None, {"crops": np.ascontiguousarray(crops, dtype=np.uint8)})[0]

    def run(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """uint8 (B, 3, S, S) -> scores (B, HW, C) and boxes (B, HW, 4) in input pixels."""
        scores, boxes = self.session.run(None, {self.input.name: np.ascontiguousarray(batch, dtype=np.uint8)})
        return scores, boxes
