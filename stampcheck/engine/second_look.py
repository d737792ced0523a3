"""The second look, without torch: the close crops a verifier judges and what its answers make of a photo.

The detector proposes a few candidate boxes per photo at a low score; the verifier (a small
classifier, stampcheck.engine.verifier) looks again at each one on a crop of the photo itself, where a stamp
of a sixth of the photo is a hundred pixels wide and shows its lettering, and says which stamp it is
or that it is none of ours. Crops are cut the same way for training and for checking photos: from
the photo brought to the ``detail`` size (long side) the training images had, a square around the
box with ``margin`` of its long side on each side, resized to ``size`` pixels.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

from stampcheck.images import fit_within


# A window up to this side is cut whole, black past the photo's edge included, then resized. The
# window of a photo-wide box with a wide margin can be 5x the photo's side: 1.6 G pixels (5 GB) at
# detail 8192, past Pillow's decompression-bomb limit.
CUT_WHOLE = 4096


@dataclass(frozen=True)
class LookConfig:
    """How crops are cut and judged; stored in config.json's ``verifier`` with the verifier's weights."""

    size: int = 96                      # crop side the verifier sees, pixels
    margin: float = 0.25                # context around the box, a share of its long side on each side
    top_k: int = 3                      # candidates judged per photo, best detector scores first
    detail: int = 512                   # long side the photo is brought to before cropping
    candidate_threshold: float = 0.05   # detector score a candidate needs (chosen on valid for recall)
    threshold: float = 0.5              # verifier score that makes a stamp (chosen on valid)

    @classmethod
    def from_dict(cls, d: dict) -> "LookConfig":
        return cls(**{k: d[k] for k in cls.__dataclass_fields__ if k in d})


def crop_window(box, margin: float) -> tuple[int, int, int, int]:
    """The square window, in the box's pixels, centred on ``box`` with ``margin`` of its long side
    on each side; it may reach past the photo (that part is black)."""
    x0, y0, x1, y1 = (float(v) for v in box)
    side = max(x1 - x0, y1 - y0, 4.0) * (1 + 2 * margin)
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    left, top = round(cx - side / 2), round(cy - side / 2)
    return left, top, left + round(side), top + round(side)


def detail_view(img: Image.Image, detail: int) -> Image.Image:
    """The photo as crops are cut from it: at most ``detail`` pixels on its long side."""
    return fit_within(img, detail)


def crop(view: Image.Image, box, source_size: tuple[int, int], look: LookConfig) -> np.ndarray:
    """The verifier's input for one candidate: ``box`` in the photo's own pixels (``source_size``),
    cut from ``view`` (the photo at :func:`detail_view` size); uint8 (3, size, size)."""
    sx, sy = view.width / source_size[0], view.height / source_size[1]
    x0, y0, x1, y1 = box
    window = left, top, right, bottom = crop_window((x0 * sx, y0 * sy, x1 * sx, y1 * sy), look.margin)
    if right - left <= CUT_WHOLE:
        patch = view.crop(window).resize((look.size, look.size), Image.BILINEAR, reducing_gap=2.0)
        return np.asarray(patch).transpose(2, 0, 1)
    # Larger windows: only the part inside the photo is resized, into its place on a black square.
    scale = look.size / (right - left)
    inside = (max(left, 0), max(top, 0), min(right, view.width), min(bottom, view.height))
    at = [round((v - o) * scale) for v, o in zip(inside, (left, top, left, top))]
    patch = Image.new(view.mode, (look.size, look.size))
    if at[2] > at[0] and at[3] > at[1]:
        part = view.crop(inside).resize((at[2] - at[0], at[3] - at[1]), Image.BILINEAR, reducing_gap=2.0)
        patch.paste(part, tuple(at[:2]))
    return np.asarray(patch).transpose(2, 0, 1)


def rescore(r, probs: np.ndarray, classes: list[str], keep: float) -> None:
    """Judge a PhotoResult's candidates (its ``detections``, best detector score first) by the
    verifier's class probabilities ``probs`` (K, 1 + C), column 0 "none of ours": each candidate's
    score becomes its best stamp class's probability; presence is the best of them; detections keep
    those scoring at least ``keep``, best first. The detector's own presence stays in ``detector_score``."""
    r.detector_score = r.score
    cands = r.detections or []
    judged = []
    for (_, _, box), p in zip(cands, probs):
        c = int(np.argmax(p[1:]))
        judged.append((float(p[1 + c]), classes[c], box))
    judged.sort(key=lambda d: -d[0])
    r.score = judged[0][0] if judged else 0.0
    if judged:
        r.top_box = judged[0][2]
    r.detections = [d for d in judged if d[0] >= keep]
