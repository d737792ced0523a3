"""Drawing what every stage shows a person: boxes on images, and the font they are labelled in."""

from __future__ import annotations

import math
from functools import lru_cache

from PIL import Image, ImageDraw, ImageFont


@lru_cache(maxsize=256)
def font(size: int) -> ImageFont.ImageFont:
    """Pillow's scalable built-in font: no font file to ship or find. Kept once made: Pillow builds
    it from bytes embedded in base64, which cost a third of composing a small image."""
    return ImageFont.load_default(size=max(6, int(size)))


def draw_boxes(img: Image.Image, boxes, colour=(0, 230, 0), width: int = 2, labels=None) -> Image.Image:
    """Draw pixel boxes (x1/y1 exclusive) on a copy of ``img``; a box under a pixel wide or high is
    drawn as one pixel, one with a non-finite corner is left out (a drawing never fails a run)."""
    img = img.copy()
    d = ImageDraw.Draw(img)
    for k, b in enumerate(boxes):
        x0, y0, x1, y1 = (float(v) for v in b[:4])
        if not all(map(math.isfinite, (x0, y0, x1, y1))):
            continue
        d.rectangle((x0, y0, max(x0, x1 - 1), max(y0, y1 - 1)), outline=colour, width=width)
        if labels:
            d.text((x0 + 2, max(0, y0 - 14)), labels[k], fill=colour, font=font(12))
    return img
