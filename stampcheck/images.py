"""Image checks shared by every stage that reads images someone else made (crawl, compose, qa).

One function, :func:`open_checked`, decides whether bytes are a usable photo and turns them into
an upright 8-bit RGB image; callers only choose the limits.
"""

from __future__ import annotations

import io
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageMode, UnidentifiedImageError

from stampcheck.files import NotAFile, open_regular

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"}


# Camera formats qa cannot decode but must never skip: a photo it cannot read is an error row
CAMERA_SUFFIXES = {".heic", ".heif", ".avif", ".jxl", ".dng", ".cr2", ".cr3", ".crw", ".nef", ".nrw", ".arw",
                   ".orf", ".rw2", ".raf", ".pef", ".srw", ".x3f", ".mrw", ".iiq", ".raw"}
_CAMERA_SIGNATURES = (b"II*\x00", b"MM\x00*", b"IIRO", b"IIRS", b"IIU\x00", b"FUJIFILM", b"FOVb", b"II\x1a\x00",
                      b"\x00MRM", b"IIII", b"\xff\x0a", b"\x00\x00\x00\x0cJXL ")
PHOTO_SUFFIXES = IMAGE_SUFFIXES | CAMERA_SUFFIXES
_SNIFF_BYTES = 1 << 16  # identification reads no further: a 1 GB log is not read through


def may_be_photo(path: Path) -> bool:
    """Whether a file found in a folder is to be checked as a photo: an image or camera suffix, or
    content that starts as an image (the first bytes any format Pillow knows accepts, however short
    the file was cut; a header Pillow identifies; camera raw, HEIC, JPEG XL). An empty file is a
    photo whose writing failed. Only what is none of these, a folder's README, LICENSE or
    labels.csv, is no photo. A file that cannot be read, or is not a regular file, counts as a
    photo: reading it reports why."""
    if path.suffix.lower() in PHOTO_SUFFIXES:
        return True
    try:
        with open_regular(path) as f:  # a pipe put in its place must not block
            head = f.read(_SNIFF_BYTES)
    except OSError:  # NotAFile too
        return True
    if not head or head.startswith(_CAMERA_SIGNATURES) or head[4:8] == b"ftyp":
        return True
    Image.init()
    if any(_accepts(accept, head[:16]) for _, accept in Image.OPEN.values()):
        return True
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            Image.open(io.BytesIO(head))
        return True
    except UnidentifiedImageError:
        return False
    except Exception:  # identified, then refused (a bomb, a broken header): a photo that fails
        return True


def _accepts(accept, prefix: bytes) -> bool:
    """A Pillow format's own test of a file's first bytes (some fail on fewer bytes than they read)."""
    try:
        return bool(accept and accept(prefix))
    except Exception:
        return False


class ImageRejected(Exception):
    """Why an image cannot be used; ``reason`` is a short stable code, the message says more."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class ImageLimits:
    min_side: int = 64
    # Far above any camera, far below what a crafted header can claim (decompression bombs).
    max_pixels: int = 80_000_000
    max_aspect: float = 6.0
    # What the decoded pixels may take, each at its mode's bytes (16-bit: 2, float: 4); None: an
    # 8-bit RGB photo at max_pixels. A float TIFF of a few hundred KB can hold 100 MP.
    max_bytes: int | None = None

    @property
    def byte_limit(self) -> int:
        return self.max_bytes if self.max_bytes is not None else 3 * self.max_pixels


def open_checked(source: Path | bytes, limits: ImageLimits = ImageLimits(),
                 draft_size: int | None = None) -> Image.Image:
    """Fully decode ``source`` and return it upright, in RGB; raise ImageRejected otherwise.

    ``draft_size`` lets JPEG decode at a reduced scale (a power of two that keeps the short side at
    least that long), much faster when only a few hundred pixels are needed; a 16-bit or float
    photo is reduced as far once at 8 bits. Sizes are checked on the original dimensions, before
    any draft, and the bytes they decode to after it; ``img.info["source_size"]`` keeps them
    (upright), so results can be given in the photo's own pixels.
    """
    if isinstance(source, (str, Path)):
        path = Path(source)
        try:
            fp = open_regular(path)
        except NotAFile as e:
            raise ImageRejected("not-a-file", f"not a regular file ({e.kind})") from e
        except OSError as e:
            raise ImageRejected("unreadable", str(e)) from e
        if os.fstat(fp.fileno()).st_size == 0:
            fp.close()
            raise ImageRejected("empty", "0 bytes")
    else:
        if not source:
            raise ImageRejected("empty", "0 bytes")
        fp = io.BytesIO(source)
    with fp:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            try:
                img = Image.open(fp)
            except Image.DecompressionBombError as e:
                raise ImageRejected("too-large", str(e)) from e
            except UnidentifiedImageError as e:
                raise ImageRejected("not-an-image", "not a recognised image format") from e
            except Exception as e:  # broken headers raise anything from SyntaxError to struct.error
                raise ImageRejected("not-an-image", f"{type(e).__name__}: {e}") from e
            w, h = img.size
            _check_size(w, h, limits)
            try:
                if draft_size and img.format == "JPEG" and min(w, h) > draft_size:
                    k = min(w, h) / draft_size
                    img.draft("RGB", (int(w / k), int(h / k)))
            except Exception as e:
                raise ImageRejected("truncated", f"cannot decode: {e}") from e
            _check_bytes(img, w, h, limits)
            try:
                img.load()
            except Exception as e:
                raise ImageRejected("truncated", f"cannot decode: {e}") from e
            try:
                orientation = img.getexif().get(0x0112, 1)
            except Exception:  # a broken EXIF block should not cost the photo
                orientation = 1
            orientation = orientation if isinstance(orientation, int) else 1
    if img.mode in HIGH_BIT_MODES:  # 8 bits first, then smaller: the decoded image is the only full copy
        img = _grey8(img)
        if draft_size and min(img.size) >= 2 * draft_size:
            img = img.reduce(min(img.size) // draft_size)
    elif draft_size and _has_alpha(img) and min(img.size) >= 2 * draft_size:  # as far, as it turns RGB
        img = _flatten_on_white(img, min(img.size) // draft_size)
    turn = _EXIF_TURNS.get(orientation)
    rgb = to_rgb8(img.transpose(turn) if turn is not None else img)
    rgb.info["source_size"] = (h, w) if orientation in (5, 6, 7, 8) else (w, h)
    return rgb


# EXIF orientation -> the turn that shows the photo upright (as ImageOps.exif_transpose)
_EXIF_TURNS = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180, 4: Image.Transpose.FLIP_TOP_BOTTOM,
               5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE,
               8: Image.Transpose.ROTATE_90}


def mode_bytes(mode: str) -> int:
    """Bytes a pixel of Pillow ``mode`` holds: RGB 3, 16-bit grey 2, float 4."""
    try:
        m = ImageMode.getmode(mode)
    except KeyError:
        return 4
    return len(m.bands) * int(m.typestr[-1])


def _check_bytes(img: Image.Image, w: int, h: int, limits: ImageLimits) -> None:
    need = img.width * img.height * mode_bytes(img.mode)
    if need > limits.byte_limit:
        raise ImageRejected("too-large", f"{w}x{h} {img.mode} decodes to {need / 1e6:.3g} MB, over the "
                                         f"{limits.byte_limit / 1e6:.3g} MB a photo may take")


def _check_size(w: int, h: int, limits: ImageLimits) -> None:
    if w * h > limits.max_pixels:
        raise ImageRejected("too-large", f"{w}x{h} exceeds {limits.max_pixels} pixels")
    if min(w, h) < limits.min_side:
        raise ImageRejected("too-small", f"{w}x{h} is below {limits.min_side} px on the short side")
    if max(w, h) / min(w, h) > limits.max_aspect:
        raise ImageRejected("bad-aspect", f"{w}x{h} is more elongated than {limits.max_aspect}:1")


def to_rgb8(img: Image.Image) -> Image.Image:
    """Any Pillow mode to 8-bit RGB: CMYK, palette, grey, 16-bit or float grey, with alpha flattened on white."""
    if img.mode == "RGB":
        return img
    if img.mode in HIGH_BIT_MODES:
        return _grey8(img).convert("RGB")
    if _has_alpha(img):
        return _flatten_on_white(img)
    return img.convert("RGB")


def _flatten_on_white(img: Image.Image, reduce: int = 1) -> Image.Image:
    """An image with alpha composited on white, then reduced by ``reduce``, a block of rows at a
    time: the result is the only copy besides the decoded image (as a whole, the RGBA copy, a white
    page and their composite made a 100 MP grey PNG with alpha cost 2 GB). Blocks start at
    multiples of ``reduce``, so the result is that of the whole image's."""
    w, h = img.size
    out = Image.new("RGB", (-(-w // reduce), -(-h // reduce)))
    rows = -(-max(1, _BLOCK_PIXELS // max(1, w)) // reduce) * reduce
    for y in range(0, h, rows):
        block = img.crop((0, y, w, min(h, y + rows))).convert("RGBA")
        flat = Image.alpha_composite(Image.new("RGBA", block.size, (255, 255, 255, 255)), block).convert("RGB")
        out.paste(flat.reduce(reduce) if reduce > 1 else flat, (0, y // reduce))
    return out


def _has_alpha(img: Image.Image) -> bool:
    return img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info)


HIGH_BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I", "F")
_BLOCK_PIXELS = 1 << 20  # converted to 8 bits this many pixels at a time: a few MB, whatever the photo


def _grey8(img: Image.Image) -> Image.Image:
    """A 16-bit, 32-bit integer or float grey image at 8 bits, a block of rows at a time: no copy of
    the whole image at more bits than it has (float64 copies made a 100 MP 16-bit PNG cost 3.4 GB).
    16-bit spans 0..65535; any other, 0..255 when no value is above 255, else 0..65535."""
    w, h = img.size
    top = 65535 if img.mode.startswith("I;16") or (img.getextrema()[1] or 0) > 255 else 255
    out = np.empty((h, w), np.uint8)
    rows = max(1, _BLOCK_PIXELS // max(1, w))
    for y in range(0, h, rows):
        block = np.asarray(img.crop((0, y, w, min(h, y + rows))))
        if img.mode.startswith("I;16"):  # whole numbers: round(v * 255 / 65535) exactly
            out[y:y + rows] = (block.astype(np.uint32) * 255 + 32767) // 65535
        else:
            scaled = np.clip(block.astype(np.float64) / top * 255.0 + 0.5, 0, 255)
            out[y:y + rows] = np.nan_to_num(scaled, nan=0.0)
    return Image.fromarray(out, "L")


def fit_within(img: Image.Image, max_size: int | None) -> Image.Image:
    """Downscale so the long side is at most ``max_size``; never upscale."""
    if not max_size or max(img.size) <= max_size:
        return img
    scale = max_size / max(img.size)
    size = (max(1, round(img.width * scale)), max(1, round(img.height * scale)))
    return img.resize(size, Image.BILINEAR, reducing_gap=2.0)


def jpeg_bytes(img: Image.Image, quality: int = 90, subsampling: int = -1) -> bytes:
    """JPEG-encode; ``subsampling=0`` (4:4:4) keeps thin coloured lines (drawn boxes) their colour."""
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=int(quality), subsampling=subsampling)
    return buf.getvalue()


def find_images(paths: list[Path]) -> list[Path]:
    """Files among ``paths``; folders are searched recursively for image suffixes. Sorted, unique."""
    found: set[Path] = set()
    for p in map(Path, paths):
        if p.is_dir():
            found.update(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)
        elif p.is_file():
            found.add(p)
    return sorted(found)
