"""A rubber-stamp impression on a real photo, for bench.field. Its own code, apart from compose, so
that the field set does not measure compose's looks against themselves.

The ink comes from the design's darkness and alpha (paper-white parts print nothing), inked unevenly
(a low-frequency pressure field, a pressure slope across the stamp, tiny dropouts of the rubber),
in one ink colour or in the design's own colours at partial alpha, turned, tilted in perspective,
bled a little, then laid on the photo as ink (multiply: the print shows through) or normally at
partial opacity. The photo as a whole is then blurred, noised and JPEG-encoded, stamped or not.

The label is the tight box of the ink that lands on the photo, x0, y0, x1, y1 (x1/y1 exclusive):
ink thinner than VISIBLE is cut, so every pixel the impression changes lies in it.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageFilter

# Stamp-pad inks: blue, royal blue, red, crimson, violet, black, green
INKS = ((28, 52, 150), (35, 75, 175), (175, 30, 40), (140, 25, 60), (85, 40, 125), (32, 32, 38), (25, 105, 60))
# The stamp's size (long side of its box / the photo's short side): a band is drawn first, then a size
# in it, so large stamps (close-up cameras) are as common as small ones
SIZE_BANDS = ((0.08, 0.2), (0.2, 0.3), (0.3, 0.6))
BAND_MARGIN = 0.01  # sizes are drawn this far inside their band: the box lands within a pixel of the size asked
VISIBLE = 0.06
# Mean RGB change of an impression's well-inked pixels below which it is hard to see at all (dark ink on
# dark print): such a look is drawn again, as an inspector stamps where the stamp shows
MIN_CONTRAST = 45.0
# ... and below this many times the fine texture of the print under it (visual masking: a mark the
# size of lettering vanishes into busy lettering of the same strength)
MIN_OVER_CLUTTER = 1.6


@dataclass(frozen=True)
class Look:
    """One impression's randomness; sizes and offsets are shares, so the look does not depend on pixels."""

    size: float                  # long side of the ink's box / the photo's short side
    angle: float                 # degrees, counter-clockwise
    tilt: tuple[float, ...]      # the 4 corners' offsets (x, y), as shares of the stamp's long side
    ink: tuple[int, int, int] | None  # None: the design's own colours
    opacity: float
    multiply: bool
    fade: float                  # depth of the uneven inking, 0..1
    slope: float                 # pressure lost across the stamp, 0..1
    grain: float                 # share of the rubber that leaves no ink
    bleed: float                 # blur of the impression, in photo pixels
    where: tuple[float, float]   # the box's place in the room the photo leaves it, 0..1 each way
    noise_seed: int


def random_look(rng: np.random.Generator, band: tuple[float, float] | None = None) -> Look:
    lo, hi = band or SIZE_BANDS[rng.integers(len(SIZE_BANDS))]
    tinted = rng.random() < 0.5
    ink = tuple(int(c) for c in np.clip(np.array(INKS[rng.integers(len(INKS))]) + rng.integers(-20, 21, 3), 0, 255))
    spread = rng.uniform(0.0, 0.12)
    return Look(
        size=float(rng.uniform(lo + BAND_MARGIN, hi - BAND_MARGIN)),
        angle=float(rng.uniform(-20, 20) if rng.random() < 0.5 else rng.uniform(-180, 180)),
        tilt=tuple(float(t) for t in rng.uniform(-spread, spread, 8)),
        ink=ink if tinted else None,
        opacity=float(rng.uniform(0.6, 0.95) if tinted else rng.uniform(0.45, 0.9)),
        multiply=bool(rng.random() < 0.5),
        fade=float(rng.uniform(0.1, 0.5)),
        slope=float(rng.uniform(0.0, 0.35)),
        grain=float(rng.uniform(0.0, 0.2)),
        bleed=float(rng.uniform(0.3, 1.0)),
        where=(float(rng.random()), float(rng.random())),
        noise_seed=int(rng.integers(2**32)),
    )


# ---- the design's ink ----

def design_ink(stamp: Image.Image) -> tuple[np.ndarray, np.ndarray]:
    """(ink 0..1, colour 0..255 RGB) of a design, cropped to where it has ink."""
    rgba = np.asarray(stamp.convert("RGBA"), dtype=np.float32)
    rgb, alpha = rgba[..., :3], rgba[..., 3] / 255
    darkness = 1 - (rgb @ np.array([0.299, 0.587, 0.114], dtype=np.float32)) / 255
    solid = darkness[alpha > 0.5]
    ref = max(float(np.percentile(solid, 95)) if solid.size else 1.0, 0.05)
    ink = alpha * np.clip(darkness / ref, 0, 1)
    ys, xs = np.nonzero(ink > VISIBLE)
    if not ys.size:
        raise ValueError("the stamp image has no ink (it is transparent or white)")
    crop = np.s_[ys.min():ys.max() + 1, xs.min():xs.max() + 1]
    return ink[crop], rgb[crop]


def smooth_field(rng: np.random.Generator, shape: tuple[int, int], cells: int) -> np.ndarray:
    """Noise varying over about ``cells`` cells along the long side, 0..1, the size of ``shape``."""
    h, w = shape
    grid = rng.random((max(2, round(cells * h / max(h, w))), max(2, round(cells * w / max(h, w)))))
    field = np.asarray(Image.fromarray(grid.astype(np.float32)).resize((w, h), Image.BICUBIC))
    return np.clip((field - field.min()) / max(float(np.ptp(field)), 1e-6), 0, 1)


def uneven(ink: np.ndarray, look: Look) -> np.ndarray:
    """The ink a real impression leaves: patchy where the pad or pressure was thin, with dropouts."""
    rng = np.random.default_rng(look.noise_seed)
    h, w = ink.shape
    patches = smooth_field(rng, (h, w), 5)
    direction = rng.uniform(0, 2 * np.pi)
    ys, xs = np.mgrid[0:h, 0:w] / max(h, w)
    slope = xs * np.cos(direction) + ys * np.sin(direction)
    slope = (slope - slope.min()) / max(float(np.ptp(slope)), 1e-6)
    pressure = (1 - look.fade * patches) * (1 - look.slope * slope)
    # dropouts a few design pixels wide: grains of the rubber, dust on the product
    coarse = rng.random((max(1, h // 3), max(1, w // 3))).astype(np.float32)
    grains = np.asarray(Image.fromarray(coarse).resize((w, h), Image.NEAREST)) < look.grain
    return ink * pressure * np.where(grains, 0.2, 1.0)


# ---- geometry ----

def homography(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """The 3x3 projective map taking the 4 points ``src`` to ``dst``."""
    rows, rhs = [], []
    for (x, y), (u, v) in zip(src, dst):
        rows += [[x, y, 1, 0, 0, 0, -u * x, -u * y], [0, 0, 0, x, y, 1, -v * x, -v * y]]
        rhs += [u, v]
    return np.append(np.linalg.solve(np.array(rows, float), np.array(rhs, float)), 1).reshape(3, 3)


def warp(layers: np.ndarray, matrix: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``layers`` (C, H, W) mapped by ``matrix`` (source pixels -> output pixels, pixel centres at
    +0.5) onto a (C, size[1], size[0]) canvas, sampled bilinearly; nothing outside the source."""
    c, h, w = layers.shape
    out_w, out_h = size
    ys, xs = np.mgrid[0:out_h, 0:out_w] + 0.5
    p = np.linalg.inv(matrix) @ np.stack([xs.ravel(), ys.ravel(), np.ones(xs.size)])
    u, v = p[0] / p[2] - 0.5 + 1, p[1] / p[2] - 0.5 + 1  # +1: the zero border padded on below
    padded = np.pad(layers, ((0, 0), (1, 1), (1, 1)))
    inside = (u >= 0) & (v >= 0) & (u <= w + 1) & (v <= h + 1)
    u, v = np.clip(u, 0, w + 1), np.clip(v, 0, h + 1)
    x0, y0 = np.minimum(u.astype(int), w), np.minimum(v.astype(int), h)
    fx, fy = u - x0, v - y0
    top = padded[:, y0, x0] * (1 - fx) + padded[:, y0, x0 + 1] * fx
    bottom = padded[:, y0 + 1, x0] * (1 - fx) + padded[:, y0 + 1, x0 + 1] * fx
    return ((top * (1 - fy) + bottom * fy) * inside).reshape(c, out_h, out_w)


def gaussian_blur(a: np.ndarray, sigma: float) -> np.ndarray:
    """Separable Gaussian blur of a (H, W) array, zero outside."""
    if sigma <= 0:
        return a
    r = max(1, int(np.ceil(3 * sigma)))
    k = np.exp(-0.5 * (np.arange(-r, r + 1) / sigma) ** 2)
    k /= k.sum()
    a = np.apply_along_axis(np.convolve, 0, a, k, mode="same")
    return np.apply_along_axis(np.convolve, 1, a, k, mode="same")


def impression(ink: np.ndarray, colour: np.ndarray, look: Look, scale: float) -> tuple[np.ndarray, np.ndarray]:
    """(alpha (H, W), colour (H, W, 3)) of the impression at ``scale`` photo pixels per design pixel,
    on a canvas with room for its turn, tilt and bleed; alpha already cut below VISIBLE."""
    h, w = ink.shape
    sw, sh = max(1, round(w * scale)), max(1, round(h * scale))
    # resized first (antialiased), so the warp below never shrinks much and does not alias
    premult = [ink] + [ink * colour[..., k] for k in range(3)]
    layers = np.stack([np.asarray(Image.fromarray(p.astype(np.float32)).resize((sw, sh), Image.BILINEAR))
                       for p in premult])
    corners = np.array([[0, 0], [sw, 0], [sw, sh], [0, sh]], float)
    t = np.radians(look.angle)
    turn = np.array([[np.cos(t), np.sin(t)], [-np.sin(t), np.cos(t)]])  # counter-clockwise on screen
    dst = (corners - [sw / 2, sh / 2]) @ turn.T + np.array(look.tilt).reshape(4, 2) * max(sw, sh)
    pad = int(np.ceil(3 * look.bleed)) + 2
    dst -= dst.min(0) - pad
    canvas = tuple(int(np.ceil(v)) + pad for v in dst.max(0))
    warped = warp(layers, homography(corners, dst), canvas)
    alpha = gaussian_blur(warped[0], look.bleed)
    rgb = np.stack([gaussian_blur(warped[k], look.bleed) for k in (1, 2, 3)], -1)
    rgb = rgb / np.maximum(alpha, 1e-6)[..., None]
    if look.ink is not None:
        rgb = np.broadcast_to(np.array(look.ink, np.float32), rgb.shape)
    alpha = np.clip(alpha, 0, 1) * look.opacity
    return np.where(alpha >= VISIBLE, alpha, 0.0), np.clip(rgb, 0, 255)


def tight_box(alpha: np.ndarray) -> tuple[int, int, int, int]:
    ys, xs = np.nonzero(alpha)
    return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1


def sized_impression(stamp: Image.Image, look: Look, target: float):
    """The impression whose ink box's long side is ``target`` photo pixels (to a pixel or so):
    (alpha, colour, box in the canvas). Turning and tilting change the box, so it is measured and
    the scale corrected."""
    ink, colour = design_ink(stamp)
    ink = uneven(ink, look)
    scale = target / max(ink.shape)
    for _ in range(4):
        alpha, rgb = impression(ink, colour, look, scale)
        box = tight_box(alpha)
        side = max(box[2] - box[0], box[3] - box[1])
        if abs(side - target) <= 1:
            break
        scale *= target / side
    return alpha, rgb, box


# ---- onto the photo ----

def stamp_photo(photo: Image.Image, stamp: Image.Image,
                look: Look) -> tuple[Image.Image, tuple[int, int, int, int], float]:
    """``photo`` (RGB) with the impression of ``stamp`` (RGBA), the ink's box in its pixels, and how
    far the impression's well-inked pixels moved from the photo's (mean RGB distance, 0..441)."""
    w, h = photo.size
    alpha, rgb, (bx0, by0, bx1, by1) = sized_impression(stamp, look, look.size * min(w, h))
    bw, bh = min(bx1 - bx0, w), min(by1 - by0, h)
    x0, y0 = round(look.where[0] * (w - bw)), round(look.where[1] * (h - bh))
    a = alpha[by0:by0 + bh, bx0:bx0 + bw, None]
    ink = rgb[by0:by0 + bh, bx0:bx0 + bw]
    out = np.asarray(photo, dtype=np.float32).copy()
    under = out[y0:y0 + bh, x0:x0 + bw]
    before = under.copy()
    under[:] = under * (1 - a + a * ink / 255) if look.multiply else under * (1 - a) + a * ink
    inked = a[..., 0] >= 0.5 * a.max()
    contrast = float(np.linalg.norm(under - before, axis=-1)[inked].mean())
    box = tight_box(alpha[by0:by0 + bh, bx0:bx0 + bw])  # the ink within the photo, if the photo cut it
    return (Image.fromarray(np.round(out).astype(np.uint8)), (x0 + box[0], y0 + box[1], x0 + box[2], y0 + box[3]),
            contrast)


def visible_stamp(photo: Image.Image, stamp: Image.Image, rng: np.random.Generator, band: tuple[float, float],
                  tries: int = 12) -> tuple[Image.Image, tuple[int, int, int, int], Look, float]:
    """stamp_photo with a random look of a size in ``band``, drawn again until the impression shows
    (at most ``tries`` times, the last one kept): (photo, box, look, contrast)."""
    for _ in range(tries):
        look = random_look(rng, band)
        stamped, box, contrast = stamp_photo(photo, stamp, look)
        if contrast >= max(MIN_CONTRAST, MIN_OVER_CLUTTER * clutter(photo, box)):
            break
    return stamped, box, look, contrast


def clutter(photo: Image.Image, box: tuple[int, int, int, int]) -> float:
    """RMS of the photo's fine detail (what a 2 px blur takes away) inside ``box``, in RGB distance."""
    region = photo.crop((box[0] - 6, box[1] - 6, box[2] + 6, box[3] + 6))  # the margin keeps the blur's edges out
    sharp = np.asarray(region, dtype=np.float32)[6:-6, 6:-6]
    soft = np.asarray(region.filter(ImageFilter.GaussianBlur(2)), dtype=np.float32)[6:-6, 6:-6]
    return float(np.sqrt(((sharp - soft) ** 2).sum(-1).mean()))


def finish(photo: Image.Image, rng: np.random.Generator) -> bytes:
    """The camera and the upload: a little blur, sensor noise, JPEG; applied to every field photo
    alike, so no step of it tells a stamped photo from a stamp-free one."""
    if rng.random() < 0.6:
        photo = photo.filter(ImageFilter.GaussianBlur(float(rng.uniform(0.3, 1.2))))
    sigma = float(rng.uniform(0, 5))
    arr = np.asarray(photo, dtype=np.float32) + rng.normal(0, sigma, (photo.height, photo.width, 3))
    buf = io.BytesIO()
    Image.fromarray(np.clip(np.round(arr), 0, 255).astype(np.uint8)).save(
        buf, "JPEG", quality=int(rng.integers(55, 96)))
    return buf.getvalue()
