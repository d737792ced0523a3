"""A PNG grid of dataset samples with their boxes drawn, to check labels at a glance."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from stampcheck.atomic import atomic_path
from stampcheck.dataset import IMAGES_DIR, PREVIEW_PNG, ImageLabels, read_labels
from stampcheck.draw import draw_boxes, font


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
