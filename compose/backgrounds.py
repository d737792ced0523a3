"""Where backgrounds come from: a folder of photos (checked) or product-like scenes drawn by code.

A background is named by a string: a path relative to the folder, or ``builtin:NNNNN`` for a
generated scene. The name is what the dataset's ``background`` column and the splits refer to.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
from PIL import Image, ImageChops, ImageDraw, ImageFilter

from stampcheck.compose.looks import add_noise
from stampcheck.draw import font
from stampcheck.images import ImageLimits, ImageRejected, find_images, fit_within, open_checked

BUILTIN_PREFIX = "builtin:"
WORDS = ["MILK", "JUICE", "Organic", "NET WT 500g", "Best before", "FRESH", "Yoghurt", "Natural",
         "Ingredients:", "sugar, water, oats", "Keep refrigerated", "1 L", "Low fat", "Vitamin D",
         "Product of EU", "Recycle me", "Original", "SINCE 1952", "Apple & Mango", "Protein 3.4g"]


@dataclass
class BackgroundSource:
    """The usable backgrounds and the files that were skipped, with the reason for each."""

    names: list[str]
    root: Path | None
    skipped: list[dict]

    def load(self, name: str, max_size: int | None, limits: ImageLimits) -> Image.Image:
        if name.startswith(BUILTIN_PREFIX):
            return builtin_background(int(name[len(BUILTIN_PREFIX):]), max_size or 640)
        return fit_within(open_checked(self.root / name, limits, draft_size=max_size), max_size)


def scan_folder(root: Path, limits: ImageLimits, progress, imap=map) -> BackgroundSource:
    """Check every image file below ``root`` once; bad ones are listed, never fatal.
    ``progress(total, description)`` is the caller's progress-bar factory; ``imap`` may be a
    process pool's, to check in parallel."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"backgrounds {root} is not a folder" if root.exists() else
                                f"backgrounds folder {root} does not exist")
    files = find_images([root])
    names, skipped = [], []
    with progress(len(files), "checking backgrounds") as advance:
        for f, reason in zip(files, imap(partial(check_background, limits=limits), files)):
            name = f.relative_to(root).as_posix()
            if reason:
                skipped.append({"file": name, **reason})
            else:
                names.append(name)
            advance(1)
    return BackgroundSource(names, root, skipped)


def check_background(path: Path, limits: ImageLimits) -> dict | None:
    """None when usable, else the reason. Decoding at a small draft scale still reads every byte,
    so truncation is caught cheaply."""
    try:
        open_checked(path, limits, draft_size=64)
        return None
    except ImageRejected as e:
        return {"reason": e.reason, "detail": e.detail}


def builtin_source(count: int, offset: int = 0) -> BackgroundSource:
    return BackgroundSource([f"{BUILTIN_PREFIX}{i:05d}" for i in range(offset, offset + count)], None, [])


def builtin_background(index: int, max_size: int = 640) -> Image.Image:
    """A product-like scene drawn from ``index`` alone: shelf, cartons with print, barcodes, logos."""
    rng = np.random.default_rng([7919, index])
    long_side = int(min(max_size, 640))
    aspect = rng.uniform(0.6, 1.6)
    w, h = (long_side, int(long_side / aspect)) if aspect >= 1 else (int(long_side * aspect), long_side)
    img = _gradient(rng, w, h)
    d = ImageDraw.Draw(img)
    if rng.random() < 0.7:  # shelf edges
        for _ in range(int(rng.integers(1, 3))):
            y = int(rng.uniform(0, h))
            d.rectangle((0, y, w, y + int(rng.uniform(0.03, 0.1) * h)), fill=_colour(rng, dark=True))
    for _ in range(int(rng.integers(1, 4))):  # packaging panels
        pw, ph = int(rng.uniform(0.3, 0.9) * w), int(rng.uniform(0.4, 1.0) * h)
        px, py = int(rng.uniform(-0.1, 0.8) * w), int(rng.uniform(-0.1, 0.6) * h)
        d.rounded_rectangle((px, py, px + pw, py + ph), radius=int(rng.uniform(0, 0.05) * w),
                            fill=_colour(rng))
        if rng.random() < 0.5:
            d.rectangle((px, py + ph // 3, px + pw, py + ph // 3 + ph // 6), fill=_colour(rng))
        _print_text(d, rng, px, py, pw, ph)
        if rng.random() < 0.4:
            _barcode(d, rng, px + int(pw * rng.uniform(0.05, 0.6)), py + int(ph * rng.uniform(0.5, 0.8)),
                     int(pw * 0.3), int(ph * 0.15))
        if rng.random() < 0.4:  # a round logo: circles alone must not mean "stamp"
            r = int(rng.uniform(0.05, 0.15) * min(w, h))
            cx, cy = px + int(rng.uniform(0.2, 0.8) * pw), py + int(rng.uniform(0.1, 0.5) * ph)
            d.ellipse((cx - r, cy - r, cx + r, cy + r), fill=_colour(rng),
                      outline=_colour(rng, dark=True), width=max(1, r // 8))
    img = img.filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 1.2)))
    # light falling off towards the corners, then colour noise: in 8 bits, because float maths on
    # every pixel cost as much as drawing the scene (on-the-fly pretraining draws one per image)
    fall = rng.uniform(0.1, 0.4)
    ry = ((np.arange(h, dtype=np.float32) / h - 0.5) ** 2)[:, None]
    rx = ((np.arange(w, dtype=np.float32) / w - 0.5) ** 2)[None, :]
    light = Image.fromarray(((1 - fall * 2 * (rx + ry)) * 255 + 0.5).astype(np.uint8))
    img = ImageChops.multiply(img, Image.merge("RGB", (light, light, light)))
    return add_noise(img, int(round(rng.uniform(1, 5))), rng, colour=True)


def _colour(rng: np.random.Generator, dark: bool = False) -> tuple[int, int, int]:
    base = rng.integers(0, 90, 3) if dark else rng.integers(40, 256, 3)
    return tuple(int(c) for c in base)


def _gradient(rng: np.random.Generator, w: int, h: int) -> Image.Image:
    a, b = np.array(_colour(rng), np.float32), np.array(_colour(rng), np.float32)
    t = np.linspace(0, 1, h if rng.random() < 0.5 else w, dtype=np.float32)
    line = a + (b - a) * t[:, None]
    arr = np.broadcast_to(line[:, None, :], (h, w, 3)) if len(t) == h else np.broadcast_to(line[None], (h, w, 3))
    return Image.fromarray(arr.astype(np.uint8))


def _print_text(d: ImageDraw.ImageDraw, rng: np.random.Generator, px: int, py: int, pw: int, ph: int) -> None:
    y = py + int(ph * rng.uniform(0.05, 0.2))
    for _ in range(int(rng.integers(1, 6))):
        size = int(rng.uniform(0.03, 0.12) * ph) + 6
        word = WORDS[int(rng.integers(len(WORDS)))]
        d.text((px + int(pw * rng.uniform(0.05, 0.3)), y), word, font=font(size),
               fill=_colour(rng, dark=rng.random() < 0.7))
        y += int(size * rng.uniform(1.2, 2.0))


def _barcode(d: ImageDraw.ImageDraw, rng: np.random.Generator, x: int, y: int, w: int, h: int) -> None:
    d.rectangle((x - 3, y - 3, x + w + 3, y + h + 3), fill=(250, 250, 250))
    cx = x
    while cx < x + w:
        bw = int(rng.integers(1, 4))
        if rng.random() < 0.55:
            d.rectangle((cx, y, cx + bw - 1, y + h), fill=(15, 15, 15))
        cx += bw
