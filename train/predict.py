"""Inference on photos: load a model folder, read photos in parallel, predict in batches.

Used by `qa` and `evaluate`. Photos are decoded at reduced scale (JPEG draft mode) since the
model sees only ``size`` pixels, and each worker also returns a small preview for reports, so
nothing is decoded twice.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from stampcheck.device import autocast_dtype, cpu_count, pick_device
from stampcheck.images import ImageLimits, ImageRejected, fit_within, open_checked
from train.detect import detect, to_pixels
from train.model import load_model_dir

# Capped as crawl and compose cap theirs: a 169 MP PNG decodes to 2 GB, so anything over 100 MP is
# refused from its header, unread. JPEGs decode at reduced scale (draft mode), so they may be larger,
# up to Pillow's own bomb limit (179 MP): 108 MP phone photos stay checkable.
PHOTO_LIMITS = ImageLimits(min_side=16, max_pixels=100_000_000, max_aspect=20.0)
JPEG_LIMITS = replace(PHOTO_LIMITS, max_pixels=2 * Image.MAX_IMAGE_PIXELS)
THUMB = 160  # report thumbnails' display size; small enough that JPEG draft decoding still applies
# Draft decoding lands between 1x and 2x of that; up to 1.5x the photo is kept as decoded and the
# page scales it: shrinking 174 px to 160 px cost qa about a tenth of its speed on shop photos.
THUMB_MAX = THUMB * 3 // 2


class Predictor:
    """A trained model folder (config.json + model.pth) ready to score batches.

    ``mixed_precision`` None follows the training run (its valid threshold was chosen that way)."""

    def __init__(self, model_dir: Path, device: str | None = None, mixed_precision: bool | None = None):
        self.config, model = load_model_dir(model_dir)
        self.classes = self.config["classes"]
        self.size = int(self.config["size"])
        self.threshold = float(self.config["threshold"])
        self.device = pick_device(device)
        if mixed_precision is None:
            mixed_precision = self.config.get("train", {}).get("mixed_precision", True)
        self.dtype = autocast_dtype(self.device, mixed_precision)
        model.eval().to(self.device)
        if self.dtype is not None:
            model = model.to(memory_format=torch.channels_last)
        self.model = model
        self.mean = torch.tensor(self.config["mean"], device=self.device).view(1, 3, 1, 1) * 255
        self.std = torch.tensor(self.config["std"], device=self.device).view(1, 3, 1, 1) * 255

    def to_input(self, img: Image.Image) -> torch.Tensor:
        """The model's view of a photo: squished to size x size, as in training; uint8 CHW."""
        small = img.resize((self.size, self.size), Image.BILINEAR, reducing_gap=2.0)
        return torch.from_numpy(np.asarray(small).copy()).permute(2, 0, 1)

    @torch.no_grad()
    def predict(self, batch: torch.Tensor, threshold: float | None = None) -> list[dict]:
        """uint8 (B, 3, S, S) -> per photo: score, top box, detections (boxes in -1..1)."""
        x = (batch.to(self.device, non_blocking=True).float() - self.mean) / self.std
        if self.dtype is not None:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(self.device.type, dtype=self.dtype, enabled=self.dtype is not None):
            out = self.model(x)
        return detect(out.float(), len(self.classes), self.threshold if threshold is None else threshold)


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
    thumbnail: bytes | None = None      # the report's JPEG, made from preview by whoever draws on it

    def found(self, threshold: float) -> list[tuple[float, str, list[float]]]:
        """The detections at or above ``threshold``: the stamps this photo is judged to carry."""
        return [d for d in (self.detections or []) if d[0] >= threshold]


class PhotoDataset(Dataset):
    def __init__(self, files: list[Path], predictor: Predictor, previews: bool):
        self.files, self.size, self.previews = files, predictor.size, previews
        self.to_input = predictor.to_input

    def __len__(self):
        return len(self.files)

    def open(self, path: Path) -> Image.Image:
        draft = max(self.size, THUMB)
        try:
            return open_checked(path, PHOTO_LIMITS, draft_size=draft)
        except ImageRejected as e:
            if e.reason != "too-large" or not _is_jpeg(path):
                raise
        return open_checked(path, JPEG_LIMITS, draft_size=draft)

    def __getitem__(self, i):
        try:
            img = self.open(self.files[i])
        except ImageRejected as e:
            return i, None, (0, 0), str(e), None
        except Exception as e:  # whatever else a broken file does, it must not stop the batch
            return i, None, (0, 0), f"unreadable: {type(e).__name__}: {e}", None
        # kept as pixels: the report draws the boxes on it and encodes it once
        thumb = fit_within(img, THUMB_MAX) if self.previews else None
        return i, self.to_input(img), img.info["source_size"], None, thumb


def _is_jpeg(path: Path) -> bool:
    with open(path, "rb") as f:
        return f.read(3) == b"\xff\xd8\xff"


def _collate(samples):
    return samples


def predict_photos(predictor: Predictor, files: list[Path], bs: int = 32, workers: int | None = None,
                   threshold: float | None = None, previews: bool = False, low_threshold: float | None = None):
    """Yield a PhotoResult per file, in batches, in file order. ``low_threshold`` keeps lower
    scoring detections too (for AP)."""
    if workers is None:
        # On the CPU the forward pass already uses every core; decoding workers only pay off
        # beyond a few cores (on 2 cores they cost 30-40% of the speed).
        workers = min(8, cpu_count()) if predictor.device.type == "cuda" else cpu_count() // 4
    workers = min(workers, max(0, len(files) - 1))
    loader = DataLoader(PhotoDataset(files, predictor, previews), batch_size=bs, num_workers=workers,
                        collate_fn=_collate, pin_memory=False, prefetch_factor=4 if workers else None)
    thr = predictor.threshold if threshold is None else threshold
    for samples in loader:
        good = [s for s in samples if s[1] is not None]
        found = predictor.predict(torch.stack([s[1] for s in good]), low_threshold or thr) if good else []
        by_index = {s[0]: f for s, f in zip(good, found)}
        for i, tensor, (w, h), error, thumb in samples:
            r = PhotoResult(files[i], w, h, error=error, preview=thumb)
            f = by_index.get(i)
            if f is not None:
                r.score = f["score"]
                r.top_box = to_pixels(f["box"], w, h)
                s, c, b = f["dets"]
                r.detections = [(float(sc), predictor.classes[int(cl)], to_pixels(bx, w, h))
                                for sc, cl, bx in zip(s, c, b)]
            yield r
