"""Loading stamp artwork: one class per stamp file, alpha kept or keyed out."""

from __future__ import annotations

import hashlib
import io
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from stampcheck.files import NotAFile, read_bytes
from stampcheck.images import ImageLimits

DEFAULT_STAMP = Path(__file__).resolve().parents[1] / "data" / "stamps" / "qc-passed.png"


class StampError(ValueError):
    """A stamp file that cannot be used; the message says why."""


@dataclass(frozen=True)
class Stamp:
    name: str          # the class name, from the file name
    rgba: np.ndarray   # HxWx4 uint8, cropped to its visible pixels
    sha256: str


def load_stamp(path: Path) -> Stamp:
    """Read a stamp image. With a real alpha channel it is used as is; without one, the background
    colour (the median of the border pixels) is keyed out: alpha grows with the distance from it."""
    path = Path(path)
    max_pixels = ImageLimits().max_pixels
    try:
        data = read_bytes(path)  # a FIFO would block the read forever, a folder fail obscurely: refused
    except NotAFile as e:
        raise StampError(f"stamp {e}") from e
    except OSError as e:
        raise StampError(f"stamp {path} cannot be read: {e.strerror or e}") from e
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
            if img.width * img.height > max_pixels:  # a header's claim, checked before decoding it
                raise Image.DecompressionBombError()
            img.load()
    except Image.DecompressionBombError as e:
        raise StampError(f"stamp {path} claims more than {max_pixels} pixels: too large for a stamp "
                         "(or a decompression bomb)") from e
    except Image.UnidentifiedImageError as e:
        raise StampError(f"stamp {path} is not an image in a format Pillow reads (PNG, JPEG, WebP, ...)") from e
    except Exception as e:  # broken files raise anything from OSError to SyntaxError or struct.error
        raise StampError(f"stamp {path} is not a readable image ({e})") from e
    rgba = np.asarray(img.convert("RGBA")).copy()
    has_alpha = "A" in img.getbands() or "transparency" in img.info
    if not has_alpha or rgba[..., 3].min() == 255:
        rgba[..., 3] = key_out_background(rgba[..., :3])
    ys, xs = np.nonzero(rgba[..., 3] > 8)
    if len(xs) == 0:
        raise StampError(f"stamp {path} is fully transparent (or all background): nothing to paste")
    rgba = rgba[ys.min():ys.max() + 1, xs.min():xs.max() + 1]
    return Stamp(name=path.stem, rgba=rgba, sha256=hashlib.sha256(data).hexdigest())


def key_out_background(rgb: np.ndarray, low: float = 30.0, high: float = 90.0) -> np.ndarray:
    """Alpha from colour distance to the border's median colour: 0 below ``low``, 255 above ``high``."""
    border = np.concatenate([rgb[0], rgb[-1], rgb[:, 0], rgb[:, -1]]).astype(np.float32)
    bg = np.median(border, axis=0)
    dist = np.linalg.norm(rgb.astype(np.float32) - bg, axis=-1)
    return (np.clip((dist - low) / (high - low), 0, 1) * 255).astype(np.uint8)
