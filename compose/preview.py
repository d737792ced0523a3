"""A PNG grid of dataset samples with their boxes drawn, to check labels at a glance."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from compose.draw import font
from stampcheck.atomic import atomic_path
from stampcheck.dataset import IMAGES_DIR, PREVIEW_PNG, ImageLabels, read_labels


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


def write_preview(dataset: Path, out: Path | None = None, n: int = 16, tile: int = 256, seed: int = 0) -> Path:
    dataset = Path(dataset)
    items = read_labels(dataset)
    rng = np.random.default_rng(seed)
    stamped = [i for i in items if i.has_stamp]
    empty = [i for i in items if not i.has_stamp]
    k = min(len(stamped), max(n - len(empty), (n * 3) // 4))
    picks: list[ImageLabels] = [stamped[j] for j in rng.permutation(len(stamped))[:k]]
    picks += [empty[j] for j in rng.permutation(len(empty))[:n - len(picks)]]
    cols = 4
    rows = max(1, (len(picks) + cols - 1) // cols)
    grid = Image.new("RGB", (cols * tile, rows * (tile + 18)), (30, 30, 30))
    d = ImageDraw.Draw(grid)
    for j, item in enumerate(picks):
        img = Image.open(dataset / IMAGES_DIR / item.file).convert("RGB")
        img = draw_boxes(img, [b.as_tuple() for b in item.boxes], width=max(2, img.width // 150))
        img.thumbnail((tile, tile))
        x, y = (j % cols) * tile, (j // cols) * (tile + 18)
        grid.paste(img, (x, y + 18))
        caption = f"{item.file} {item.split} {'stamp x%d' % len(item.boxes) if item.boxes else 'no stamp'}"
        d.text((x + 4, y + 2), caption, fill=(255, 255, 255), font=font(12))
    out = Path(out) if out else dataset / PREVIEW_PNG
    with atomic_path(out) as tmp:
        grid.save(tmp, "PNG")
    return out
