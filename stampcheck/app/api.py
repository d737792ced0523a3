"""The Python API: ``Detector("data/model").predict("photo.jpg")``.

Importing it costs no torch: the torch engine loads torch when a Detector is made, the ONNX engine
never does.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from stampcheck.engine import load_engine
from stampcheck.images import to_rgb8
from stampcheck.engine.photos import Photo, open_photo, to_input
from stampcheck.engine.run import judge_batch
from stampcheck.engine.second_look import detail_view


@dataclass(frozen=True)
class Detection:
    """One stamp found: its score (0..1), class name and box in the photo's pixels (x1, y1 exclusive)."""

    score: float
    label: str
    box: tuple[float, float, float, float]


class Detector:
    """A trained model, ready to find stamps on photos.

    ``model``: a model folder (from `stampcheck train`); with ``engine="onnx"`` its exported
    model.onnx (or the file itself), run by onnxruntime without torch. ``threshold`` defaults to
    the one stored with the model; ``device`` is the torch engine's ("cpu", "cuda", ...)."""

    def __init__(self, model: str | Path, engine: str = "torch", device: str | None = None,
                 threshold: float | None = None):
        self.engine = load_engine(Path(model), engine, device, threshold)
        self.classes = list(self.engine.classes)
        self.threshold = self.engine.threshold

    def predict(self, image: str | Path | Image.Image | np.ndarray,
                threshold: float | None = None) -> list[Detection]:
        """The stamps on ``image``, best first: a photo file (read as qa reads it: EXIF-upright, any
        format qa takes; an unusable file raises stampcheck.images.ImageRejected), a PIL image, or a
        H x W x 3 uint8 RGB array (both taken as they are, not turned)."""
        if isinstance(image, np.ndarray):
            if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
                raise ValueError(f"an array must be H x W x 3 uint8 RGB, not {image.shape} {image.dtype}")
            image = Image.fromarray(image)
        look = self.engine.look  # the second look, when the model has a verifier
        if isinstance(image, Image.Image):
            img, (w, h) = to_rgb8(image), image.size
        else:
            img = open_photo(Path(image), max(self.engine.size, look.detail if look else 0))
            w, h = img.info["source_size"]
        view = detail_view(img, look.detail) if look else None
        photo = Photo(to_input(img, self.engine.size), (w, h), None, None, view)
        r = judge_batch(self.engine, [Path()], [photo], threshold)[0]
        return [Detection(s, c, tuple(b)) for s, c, b in r.detections]
