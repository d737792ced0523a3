"""Seal-like marks drawn by code: the built-in stamp and the stamp-like distractors (hard negatives).

Both come from :func:`draw_seal`, so a distractor differs from the stamp only in what a model must
learn to tell apart (text, rings, shape), not in how it was rendered.
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image, ImageDraw

from stampcheck.compose.seals import seal_design
from stampcheck.draw import font

DISTRACTOR_WORDS = ["ORGANIC", "BIO", "ECO", "NEW", "100%", "FRESH", "VEGAN", "SALE", "BEST",
                    "PREMIUM", "LOCAL", "EST. 1921", "QUALITY", "NATURAL", "GLUTEN FREE", "-30%"]


def draw_seal(lines: list[str], size: int = 256, rings: int = 2, stars: bool = True,
              shape: str = "circle", colour=(200, 30, 40)) -> Image.Image:
    """An RGBA seal: rings (circle, square or rounded box), centred lines of text, optional stars."""
    img = Image.new("RGBA", (size, size), colour + (0,))
    d = ImageDraw.Draw(img)
    ink = colour + (255,)
    width = max(2, size // 28)
    for k in range(rings):
        m = width + k * width * 2.2
        box = (m, m, size - 1 - m, size - 1 - m)
        if shape == "circle":
            d.ellipse(box, outline=ink, width=width if k == 0 else max(1, width // 2))
        elif shape == "square":
            d.rectangle(box, outline=ink, width=width)
        else:
            d.rounded_rectangle(box, radius=size // 6, outline=ink, width=width)
    if stars:
        for dx in (-0.36, 0.36):
            _star(d, size * (0.5 + dx), size / 2, size * 0.04, ink)
    if lines:
        weights = [1.4 if i == len(lines) // 2 and len(lines) == 3 else 1.0 for i in range(len(lines))]
        # Fit the widest line into the inner ring and the block into its height.
        unit = min(size * 0.56 / sum(w * 1.15 for w in weights),
                   min(size * (0.5 if len(lines) > 1 else 0.6) / (len(t) * 0.6 * w)
                       for t, w in zip(lines, weights)))
        y = size / 2 - sum(w * 1.15 for w in weights) * unit / 2
        for text, w in zip(lines, weights):
            d.text((size / 2, y + w * unit * 0.575), text, fill=ink, font=font(w * unit), anchor="mm")
            y += w * unit * 1.15
    return img


def _star(d: ImageDraw.ImageDraw, cx: float, cy: float, r: float, ink) -> None:
    pts = []
    for k in range(10):
        a = -math.pi / 2 + k * math.pi / 5
        rr = r if k % 2 == 0 else r * 0.45
        pts.append((cx + math.cos(a) * rr, cy + math.sin(a) * rr))
    d.polygon(pts, fill=ink)


def random_distractor(rng: np.random.Generator, size: int = 192) -> Image.Image:
    """A stamp-like mark that is not our stamp: mostly another stamp design from the seal
    generator (the model must learn which seal is ours, not that seals exist), else a word seal
    or a filled badge like a price sticker."""
    if rng.random() < 0.7:
        return seal_design(int(rng.integers(1_000_000)), size)
    n_lines = int(rng.integers(1, 4))
    words = [DISTRACTOR_WORDS[int(i)] for i in rng.choice(len(DISTRACTOR_WORDS), n_lines, replace=False)]
    shape = ["circle", "circle", "square", "rounded"][int(rng.integers(4))]
    if rng.random() < 0.2:  # a plain filled badge, like a price or "new" sticker
        img = Image.new("RGBA", (size, size), (0, 0, 0, 0))
        d = ImageDraw.Draw(img)
        d.ellipse((4, 4, size - 5, size - 5), fill=(0, 0, 0, 255))
        d.text((size / 2, size / 2), words[0], fill=(0, 0, 0, 0), font=font(size / 5), anchor="mm")
        return img
    return draw_seal(words, size=size, rings=int(rng.integers(1, 3)), stars=bool(rng.random() < 0.4),
                     shape=shape, colour=(0, 0, 0))


def make_default_stamp(path) -> None:
    """Write the built-in stamp asset (kept in data/stamps/; regenerate with this function)."""
    draw_seal(["INSPECTED", "QC", "PASSED"], size=256).save(path)
