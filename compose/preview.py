"""A PNG grid of dataset samples with their boxes drawn, to check labels at a glance.

Every preview carries a PNG text chunk saying stampcheck wrote it: the only kind of picture a
preview replaces (a hand-labelled set's own preview.png stays as it is).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, PngImagePlugin

from stampcheck.compose.folder import is_dataset
from stampcheck.atomic import atomic_path
from stampcheck.dataset import IMAGES_DIR, PREVIEW_PNG, ImageLabels, read_labels
from stampcheck.draw import draw_boxes, font

SIGNATURE = ("stampcheck", "preview")  # the text chunk's key and value


def is_preview(path: Path) -> bool:
    """Whether ``path`` is a preview stampcheck wrote: a PNG file (no link, no pipe) with its text
    chunk, which Pillow reads with the header, before any pixel."""
    path = Path(path)
    if path.is_symlink() or not path.is_file():
        return False
    try:
        with Image.open(path) as img:
            return img.format == "PNG" and img.info.get(SIGNATURE[0]) == SIGNATURE[1]
    except Exception:  # noqa: BLE001 - whatever cannot be read is no preview of ours
        return False


def may_replace(path: Path, dataset: Path) -> bool:
    """Whether a preview may be written to ``path``: nothing there, a preview stampcheck wrote, or
    the preview.png of a dataset compose made (compose's own file, whichever version wrote it)."""

    path = Path(path)
    if not os.path.lexists(path) or is_preview(path):
        return True
    own = path == Path(dataset) / PREVIEW_PNG and is_dataset(Path(dataset))
    return own and path.is_file() and not path.is_symlink()


def write_preview(dataset: Path, out: Path | None = None, n: int = 16, tile: int = 256, seed: int = 0) -> Path:
    """The grid written to ``out`` (default DATASET/preview.png); ValueError, before anything is
    read, when a picture stampcheck did not write is there (:func:`may_replace`)."""
    dataset = Path(dataset)
    out = Path(out) if out else dataset / PREVIEW_PNG
    if not may_replace(out, dataset):
        raise ValueError(f"{out} exists and is no preview stampcheck wrote; it is left as it is: give the "
                         "path of a new .png file with --out")
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
    chunk = PngImagePlugin.PngInfo()
    chunk.add_text(*SIGNATURE)
    with atomic_path(out) as tmp:
        grid.save(tmp, "PNG", pnginfo=chunk)
    return out
