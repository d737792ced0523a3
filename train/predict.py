"""The torch engine: a trained model folder run by torch, for `qa`, `evaluate` and the Python API.

Reading photos, decoding detections and the batch loop are stampcheck.runtime's, shared with the
ONNX engine; this module only runs the network (stampcheck.train.export.InferenceGraph, the graph that export
writes) on the CPU or a GPU, in mixed precision where the hardware does it natively.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from stampcheck.device import autocast_dtype, pick_device
from stampcheck.runtime import JPEG_LIMITS, PHOTO_LIMITS, THUMB, THUMB_MAX, PhotoResult, predict_photos, to_input
from stampcheck.train.detect import best_iou, detect
from stampcheck.train.export import load_graph
from stampcheck.train.metrics import ImageResult
from stampcheck.train.verifier import load_verifier

__all__ = ["Predictor", "PhotoResult", "predict_photos", "judge_photos", "PHOTO_LIMITS", "JPEG_LIMITS", "THUMB",
           "THUMB_MAX"]


class Predictor:
    """A trained model folder (config.json + model.pth) ready to score batches.

    ``mixed_precision`` None follows the training run (its valid threshold was chosen that way).
    ``size`` None is the model's own; training tries others (train.views). A folder with a verifier
    (stampcheck.train.verifier) is run in two stages unless ``verifier`` is False; ``look`` then says how, and
    ``threshold`` is the verifier's."""

    def __init__(self, model_dir: Path, device: str | None = None, mixed_precision: bool | None = None,
                 size: int | None = None, verifier: bool = True):
        self.config, graph = load_graph(model_dir, size)
        self.classes = self.config["classes"]
        self.size = graph.size
        self.threshold = float(self.config["threshold"])
        self.device = pick_device(device)
        self.on_gpu = self.device.type == "cuda"
        if mixed_precision is None:
            mixed_precision = self.config.get("train", {}).get("mixed_precision", True)
        self.dtype = autocast_dtype(self.device, mixed_precision)
        graph.to(self.device)
        if self.dtype is not None:
            graph = graph.to(memory_format=torch.channels_last)
        self.graph, self.model = graph, graph.model
        self.mean, self.std = graph.mean, graph.std
        self.look, self.verifier = None, None
        loaded = load_verifier(model_dir, self.config) if verifier else None
        if loaded:
            self.look, self.verifier = loaded[0], loaded[1].to(self.device)
            self.threshold = self.look.threshold

    def to_input(self, img: Image.Image) -> torch.Tensor:
        """The model's view of a photo: squished to size x size, as in training; uint8 CHW."""
        return torch.from_numpy(to_input(img, self.size).copy())

    def _forward(self, module, x: torch.Tensor):
        x = x.to(self.device, non_blocking=True)
        if self.dtype is not None:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(self.device.type, dtype=self.dtype, enabled=self.dtype is not None):
            return module(x)

    @torch.no_grad()
    def run(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """uint8 (B, 3, S, S) -> scores (B, HW, C) and boxes (B, HW, 4) in input pixels (the engine
        interface of stampcheck.runtime)."""
        scores, boxes = self._forward(self.graph, torch.from_numpy(np.require(batch, requirements="CW")))
        return scores.float().cpu().numpy(), boxes.float().cpu().numpy()

    @torch.no_grad()
    def verify(self, crops: np.ndarray) -> np.ndarray:
        """uint8 crops (N, 3, s, s) -> the verifier's class probabilities (N, 1 + C), column 0 "none"."""
        return self._forward(self.verifier, torch.from_numpy(np.require(crops, requirements="CW"))).float().cpu().numpy()

    @torch.no_grad()
    def predict(self, batch: torch.Tensor, threshold: float | None = None) -> list[dict]:
        """uint8 (B, 3, S, S) -> per photo: score, top box, detections (boxes in -1..1)."""
        out = self._forward(lambda x: self.model(self.graph.normalise(x)), batch)
        return detect(out.float(), len(self.classes), self.threshold if threshold is None else threshold)


def judge_photos(engine, items: list, files: list[Path], **kwargs):
    """Yield, per labelled item (stampcheck.dataset.ImageLabels) and its image file, the engine's
    PhotoResult and how it fares against the labels: an ImageResult, or None when the file could
    not be read. ``kwargs`` go to :func:`predict_photos`."""
    for item, r in zip(items, predict_photos(engine, files, **kwargs)):
        if r.error:
            yield item, r, None
            continue
        truth = torch.tensor([b.as_tuple() for b in item.boxes], dtype=torch.float32).view(-1, 4)
        yield item, r, ImageResult(item.has_stamp, r.score, best_iou(torch.tensor(r.top_box), truth))
