"""Photos in, as the model sees them: read upright and RGB (JPEGs at reduced scale), squished to the
model's input size, read ahead on threads. The same for both back-ends, and for the verifier's crops.
"""

from __future__ import annotations

from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import NamedTuple

import numpy as np
from PIL import Image

from stampcheck.engine.second_look import detail_view
from stampcheck.files import open_regular
from stampcheck.images import ImageLimits, ImageRejected, fit_within, open_checked

# Capped as crawl and compose cap theirs: a 169 MP PNG decodes to 2 GB, so anything over 100 MP is
# refused from its header, unread. JPEGs decode at reduced scale (draft mode), so they may be larger,
# up to Pillow's own bomb limit (179 MP): 108 MP phone photos stay checkable. Either way what is
# decoded may take no more than an 8-bit RGB photo of 100 MP does (300 MB): a 100 MP float TIFF is refused.
PHOTO_LIMITS = ImageLimits(min_side=16, max_pixels=100_000_000, max_aspect=20.0)
JPEG_LIMITS = replace(PHOTO_LIMITS, max_pixels=2 * Image.MAX_IMAGE_PIXELS, max_bytes=PHOTO_LIMITS.byte_limit)
THUMB = 160  # report thumbnails' display size; small enough that JPEG draft decoding still applies
# Draft decoding lands between 1x and 2x of that; up to 1.5x the photo is kept as decoded and the
# page scales it: shrinking 174 px to 160 px cost qa about a tenth of its speed on shop photos.
THUMB_MAX = THUMB * 3 // 2


def _is_jpeg(path: Path) -> bool:
    with open_regular(path) as f:
        return f.read(3) == b"\xff\xd8\xff"


def open_photo(path: Path, size: int) -> Image.Image:
    """A photo upright and RGB, JPEGs decoded at reduced scale (enough for the model and a thumbnail)."""
    draft = max(size, THUMB)
    try:
        return open_checked(path, PHOTO_LIMITS, draft_size=draft)
    except ImageRejected as e:
        if e.reason != "too-large" or not _is_jpeg(path):
            raise
    return open_checked(path, JPEG_LIMITS, draft_size=draft)


def to_input(img: Image.Image, size: int) -> np.ndarray:
    """The model's view of an RGB image: squished to size x size, as in training; uint8 (3, S, S)."""
    small = img.resize((size, size), Image.BILINEAR, reducing_gap=2.0)
    return np.asarray(small).transpose(2, 0, 1)


class Photo(NamedTuple):
    pixels: np.ndarray | None        # to_input's array; None when the photo could not be read
    source_size: tuple[int, int]     # width, height of the photo as stored, upright
    error: str | None
    preview: Image.Image | None
    view: Image.Image | None = None  # the photo at the verifier's detail size, to cut crops from


def read_photo(path: Path, size: int, previews: bool = False, detail: int | None = None) -> Photo:
    """Read one photo for the model (and, with ``detail``, for a verifier's crops); a photo that
    cannot be read is a Photo with an error, never a raise."""
    try:
        img = open_photo(path, max(size, detail or 0))
    except ImageRejected as e:
        return Photo(None, (0, 0), str(e), None)
    except Exception as e:  # whatever else a broken file does, it must not stop the batch
        return Photo(None, (0, 0), f"unreadable: {type(e).__name__}: {e}", None)
    # kept as pixels: the report draws the boxes on it and encodes it once
    thumb = fit_within(img, THUMB_MAX) if previews else None
    view = detail_view(img, detail) if detail else None
    return Photo(to_input(img, size), img.info["source_size"], None, thumb, view)


def _read_ahead(read, files, workers: int, ahead: int):
    """``map(read, files)`` on ``workers`` threads, at most ``ahead`` photos ahead of the consumer.
    Threads suffice: Pillow lets go of the GIL while it decodes and resizes."""
    if not workers:
        yield from map(read, files)
        return
    with ThreadPoolExecutor(workers) as pool:
        pending = deque()
        for f in files:
            pending.append(pool.submit(read, f))
            if len(pending) > ahead:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
