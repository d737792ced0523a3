"""How a stamp can look on a product photo, and the compositing that produces it.

Real stamps are small, tilted, unevenly inked, half see-through on printed cartons and sometimes
under a glossy highlight. A model trained on one clean paste finds none of them, so every one of
those looks is a random range here. All randomness comes from the ``rng`` passed in, so a seed
fixes the output bytes.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from functools import lru_cache

import numpy as np
from PIL import Image, ImageChops, ImageColor, ImageFilter

from stampcheck.compose.draw import random_distractor
from stampcheck.compose.occlude import add_occluder, random_spot
from stampcheck.compose.stamps import Stamp
from stampcheck.dataset import Box

# A pixel is "visible" stamp when the stamp covers at least 10% of it; boxes enclose those pixels.
VISIBLE_ALPHA = 0.1
# A labelled stamp must change its strongest pixels by this many grey levels (90th percentile of
# the change over its box); dark ink on dark print is re-drawn with other looks, up to 3 times.
MIN_CONTRAST = 24.0

# What each look may be: (lowest, highest); a range's low end must not exceed its high end. Beyond
# these a look breaks compositing (a stamp of scale 0, JPEG quality 0) or means nothing (a blur
# wider than any stamp, which PIL also refuses). Scale and brightness exclude 0 itself.
DOMAINS = {"scale": (0.0, 1.5), "rotation": (0.0, 180.0), "perspective": (0.0, 0.4), "opacity": (0.0, 1.0),
           "fade": (0.0, 1.0), "blur": (0.0, 100.0), "noise": (0.0, 128.0), "brightness": (0.0, 4.0),
           "jpeg_quality": (1, 100), "max_stamps": (1, 20)}
ABOVE_LOWEST = {"scale", "brightness"}
WHOLE_NUMBERS = {"jpeg_quality", "max_stamps"}


class LooksError(ValueError):
    """A look outside its domain; the message names the option and what it may be."""


@dataclass(frozen=True)
class Looks:
    """Random ranges for every look; ``(lo, hi)`` pairs are sampled uniformly unless noted."""

    # stamp long side / background short side (log-uniform); a close-up camera fills half the photo
    scale: tuple[float, float] = (0.08, 0.6)
    rotation: float = 40.0                        # degrees, uniform in +-rotation
    perspective: float = 0.15                     # largest corner shift, share of the stamp size
    opacity: tuple[float, float] = (0.5, 1.0)     # ink strength
    fade: tuple[float, float] = (0.0, 0.5)        # uneven ink: share of ink lost in patches
    multiply_share: float = 0.6                   # share of "ink" (multiply) blends, else normal paste
    # "keep" (the stamp's own colours) is drawn half the time when listed: real impressions of a
    # coloured stamp are as often in its colours as in one ink
    ink_colours: tuple[str, ...] = ("keep", "#c0202a", "#1d3a9a", "#55287e", "#262626", "#1a6b39")
    blur: tuple[float, float] = (0.0, 1.2)        # Gaussian radius in output pixels
    noise: tuple[float, float] = (0.0, 6.0)       # sensor noise, std in grey levels
    brightness: tuple[float, float] = (0.75, 1.25)
    glare_share: float = 0.25                     # share of images with a glossy highlight
    jpeg_quality: tuple[int, int] = (65, 95)
    truncate_share: float = 0.1                   # share of stamps cut off at the border
    occlude_share: float = 0.15                   # share of marks (and stamp-free images) partly hidden
    multi_share: float = 0.15                     # share of stamped images with several stamps
    max_stamps: int = 3
    negative_share: float = 0.5                   # share of images without any stamp
    hard_negative_share: float = 0.4              # share of negatives given stamp-like distractors

    def __post_init__(self):
        for f in fields(self):
            _check_look(f.name, getattr(self, f.name))

    def to_dict(self) -> dict:
        return asdict(self)


def ink_colour(colours: tuple[str, ...], rng: np.random.Generator) -> str:
    """One of ``colours``: "keep" half the time when it is listed with others, the rest alike."""
    inks = [c for c in colours if c != "keep"]
    if not inks or (len(inks) < len(colours) and rng.random() < 0.5):
        return "keep"
    return inks[int(rng.integers(len(inks)))]


def _check_look(name: str, value) -> None:
    """Raise LooksError unless ``value`` lies in the domain of the look ``name``."""
    option = "--ink-colour" if name == "ink_colours" else "--" + name.replace("_", "-")
    if name == "ink_colours":
        if not value:
            raise LooksError(f"{option}: give at least one colour (or 'keep')")
        for colour in value:
            if colour != "keep" and not _is_colour(colour):
                raise LooksError(f"{option} {colour}: not a colour; use #rrggbb, a colour name or 'keep'")
        return
    pair = isinstance(value, (tuple, list))
    values = list(value) if pair else [value]
    lowest, highest = DOMAINS.get(name, (0.0, 1.0))  # the looks not listed are shares
    numbers = all(isinstance(v, (int, float)) and math.isfinite(v) for v in values) and len(values) == 1 + pair
    if numbers and (name not in WHOLE_NUMBERS or all(float(v).is_integer() for v in values)):
        lo, hi = values[0], values[-1]
        if (lo > lowest if name in ABOVE_LOWEST else lo >= lowest) and lo <= hi <= highest:
            return
    rule = (f"{lowest:g} {'<' if name in ABOVE_LOWEST else '<='} {'low <= high' if pair else 'value'} <= {highest:g}"
            + (", whole numbers" if name in WHOLE_NUMBERS else ""))
    raise LooksError(f"{option} {' '.join(map(str, values))}: needs {rule}")


def _is_colour(text: str) -> bool:
    try:
        ImageColor.getrgb(text)
        return True
    except ValueError:
        return False


def compose_image(bg: Image.Image, stamps: list[Stamp], looks: Looks, rng: np.random.Generator
                  ) -> tuple[Image.Image, list[Box], bool]:
    """Composite stamps (or none) and distractors onto ``bg``; return image, boxes, hard-negative."""
    canvas = np.array(bg)  # uint8; only the regions under marks and glare are touched in float
    h, w = canvas.shape[:2]
    negative = rng.random() < looks.negative_share
    n_stamps = 0
    if not negative:
        n_stamps = 1 + (int(rng.integers(1, looks.max_stamps)) if looks.max_stamps > 1
                        and rng.random() < looks.multi_share else 0)
    distractors = int(rng.integers(1, 3)) if negative and rng.random() < looks.hard_negative_share else 0
    if not negative and rng.random() < looks.hard_negative_share * 0.3:
        distractors = 1
    boxes: list[Box] = []
    taken: list[tuple[int, int, int, int]] = []
    for k in range(n_stamps + distractors):
        is_stamp = k < n_stamps
        stamp = stamps[int(rng.integers(len(stamps)))] if is_stamp else None
        for _ in range(3):  # a stamp the eye cannot see would be a wrong label: try other looks
            src = stamp.rgba if is_stamp else np.asarray(random_distractor(rng))
            mark, visible = render_mark(src, looks, rng, min(w, h))
            placed = place(mark, visible, (w, h), looks, rng, taken)
            if placed is None:
                break
            x, y, box = placed
            before = canvas[box[1]:box[3], box[0]:box[2]].copy()
            blend(canvas, mark, x, y, multiply=rng.random() < looks.multiply_share)
            if not is_stamp or contrast(before, canvas[box[1]:box[3], box[0]:box[2]]) >= MIN_CONTRAST:
                break
            canvas[box[1]:box[3], box[0]:box[2]] = before
            placed = None
        if placed is None:
            continue
        taken.append(box)
        if rng.random() < looks.occlude_share:
            add_occluder(canvas, box, rng)
        if is_stamp:
            boxes.append(Box(*box, label=stamp.name))
    if not taken and rng.random() < looks.occlude_share:
        add_occluder(canvas, random_spot(w, h, rng), rng)
    if rng.random() < looks.glare_share:
        add_glare(canvas, rng, near=taken[0] if taken else None)
    return finish(Image.fromarray(canvas), looks, rng), boxes, distractors > 0 and not boxes


def render_mark(src: np.ndarray, looks: Looks, rng: np.random.Generator, bg_short: int
                ) -> tuple[np.ndarray, np.ndarray]:
    """Scale, recolour, fade, rotate, tilt, blur and weaken one mark; return (RGBA float, visible)."""
    lo, hi = looks.scale
    long_side = max(10, int(round(bg_short * float(np.exp(rng.uniform(np.log(lo), np.log(hi)))))))
    f = long_side / max(src.shape[:2])
    size = (max(4, round(src.shape[1] * f)), max(4, round(src.shape[0] * f)))
    img = Image.fromarray(src).resize(size, Image.BILINEAR, reducing_gap=2.0)
    arr = np.asarray(img, dtype=np.float32).copy()
    colour = ink_colour(looks.ink_colours, rng)
    if colour != "keep":
        ink = np.array(ImageColor.getrgb(colour), dtype=np.float32)
        arr[..., :3] = np.clip(ink + rng.normal(0, 12, 3), 0, 255)
    fade = rng.uniform(*looks.fade)
    if fade > 0:
        arr[..., 3] *= 1 - fade * _smooth_noise(rng, size)
    img = Image.fromarray(arr.astype(np.uint8), "RGBA")
    img = _warp(img, rng.uniform(-looks.rotation, looks.rotation), looks.perspective, rng)
    radius = rng.uniform(*looks.blur)
    if radius > 0.2:
        img = img.filter(ImageFilter.GaussianBlur(radius))
    arr = np.asarray(img, dtype=np.float32).copy()
    arr[..., 3] *= rng.uniform(*looks.opacity) / 255.0
    visible = arr[..., 3] >= VISIBLE_ALPHA
    if not visible.any():  # faded to nothing: keep the strongest ink so the label stays true
        arr[..., 3] = np.where(arr[..., 3] >= arr[..., 3].max() * 0.5, max(VISIBLE_ALPHA, arr[..., 3].max()), 0)
        visible = arr[..., 3] >= VISIBLE_ALPHA
    return arr, visible


def _smooth_noise(rng: np.random.Generator, size: tuple[int, int]) -> np.ndarray:
    """Patchy 0..1 field: coarse random blobs plus fine speckle, like a dry stamp pad."""
    coarse = rng.random((max(2, size[1] // 8), max(2, size[0] // 8))).astype(np.float32)
    blobs = np.asarray(Image.fromarray((coarse * 255).astype(np.uint8)).resize(size, Image.BICUBIC),
                       dtype=np.float32) / 255.0
    speckle = rng.random((size[1], size[0]), dtype=np.float32)
    return np.clip(blobs * 1.3 - 0.3 + (speckle > 0.85) * 0.6, 0, 1)


def _warp(img: Image.Image, angle: float, tilt: float, rng: np.random.Generator) -> Image.Image:
    """Rotate by ``angle`` degrees and tilt (each corner shifted up to ``tilt`` of the size) in one
    resampling: the corners' destinations define a homography, applied by a single transform."""
    w, h = img.size
    src = np.array([[0, 0], [w, 0], [w, h], [0, h]], dtype=np.float64)
    a = np.deg2rad(angle)
    rot = np.array([[np.cos(a), np.sin(a)], [-np.sin(a), np.cos(a)]])
    dst = (src - [w / 2, h / 2]) @ rot.T
    if tilt > 0:
        dst += rng.uniform(-tilt, tilt, (4, 2)) * np.array([w, h])
    dst -= dst.min(axis=0) - 1
    size = tuple(int(np.ceil(v)) + 1 for v in dst.max(axis=0))
    # PIL maps output pixels back to input ones, so solve for the dst -> src homography.
    rows, rhs = [], []
    for (x, y), (u, v) in zip(dst, src):
        rows.append([x, y, 1, 0, 0, 0, -u * x, -u * y]); rhs.append(u)
        rows.append([0, 0, 0, x, y, 1, -v * x, -v * y]); rhs.append(v)
    coeffs = np.linalg.solve(np.array(rows), np.array(rhs))
    return img.transform(size, Image.PERSPECTIVE, tuple(coeffs), Image.BICUBIC)


def place(mark: np.ndarray, visible: np.ndarray, bg_size: tuple[int, int], looks: Looks,
          rng: np.random.Generator, taken: list[tuple[int, int, int, int]]):
    """Pick the mark's top-left (x, y) and return it with the tight box of its visible pixels
    inside the image, or None when no spot clear of earlier marks was found."""
    W, H = bg_size
    ys, xs = np.nonzero(visible)
    vx0, vy0, vx1, vy1 = xs.min(), ys.min(), xs.max() + 1, ys.max() + 1
    vw, vh = vx1 - vx0, vy1 - vy0
    truncate = rng.random() < looks.truncate_share
    for _ in range(20):
        x = int(rng.integers(-vx0, max(-vx0, W - vx1) + 1))
        y = int(rng.integers(-vy0, max(-vy0, H - vy1) + 1))
        if truncate:  # push it over one edge, cutting 20-60% of its visible extent
            cut = rng.uniform(0.2, 0.6)
            edge = int(rng.integers(4))
            if edge == 0:
                x = -vx0 - int(vw * cut)
            elif edge == 1:
                x = W - vx1 + int(vw * cut)
            elif edge == 2:
                y = -vy0 - int(vh * cut)
            else:
                y = H - vy1 + int(vh * cut)
        box = visible_box(visible, x, y, W, H)
        if box is not None and all(_iou(box, t) < 0.05 for t in taken):
            return x, y, box
    return None


def visible_box(visible: np.ndarray, x: int, y: int, W: int, H: int):
    """Tight box, in image pixels, of the visible mask pasted at (x, y) and clipped to the image."""
    cx0, cy0 = max(0, -x), max(0, -y)
    cx1, cy1 = min(visible.shape[1], W - x), min(visible.shape[0], H - y)
    if cx1 <= cx0 or cy1 <= cy0:
        return None
    ys, xs = np.nonzero(visible[cy0:cy1, cx0:cx1])
    if len(xs) == 0:
        return None
    return (int(x + cx0 + xs.min()), int(y + cy0 + ys.min()), int(x + cx0 + xs.max() + 1),
            int(y + cy0 + ys.max() + 1))


def _iou(a, b) -> float:
    iw = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union else 0.0


def contrast(before: np.ndarray, after: np.ndarray) -> float:
    diff = np.abs(after.astype(np.int16) - before.astype(np.int16)).max(axis=-1)
    return float(np.percentile(diff, 90)) if diff.size else 0.0


def blend(canvas: np.ndarray, mark: np.ndarray, x: int, y: int, multiply: bool) -> None:
    """Blend ``mark`` (RGBA float, alpha 0..1) into ``canvas`` in place at (x, y).

    Normal mode paints the ink over the product; multiply ("ink") mode darkens the product by the
    ink colour, so the print underneath shows through the stamp as it does with real ink."""
    H, W = canvas.shape[:2]
    x0, y0 = max(0, x), max(0, y)
    x1, y1 = min(W, x + mark.shape[1]), min(H, y + mark.shape[0])
    if x1 <= x0 or y1 <= y0:
        return
    m = mark[y0 - y:y1 - y, x0 - x:x1 - x]
    a = m[..., 3:4]
    region = canvas[y0:y1, x0:x1].astype(np.float32)
    top = region * (m[..., :3] / 255.0) if multiply else m[..., :3]
    region += a * (top - region)
    canvas[y0:y1, x0:x1] = np.clip(region + 0.5, 0, 255).astype(np.uint8)


def add_glare(canvas: np.ndarray, rng: np.random.Generator, near=None) -> None:
    """A soft elliptical highlight, as on glossy cartons; sometimes over a stamp."""
    H, W = canvas.shape[:2]
    if near is not None and rng.random() < 0.5:
        cx, cy = (near[0] + near[2]) / 2, (near[1] + near[3]) / 2
    else:
        cx, cy = rng.uniform(0, W), rng.uniform(0, H)
    rx, ry = rng.uniform(0.05, 0.3) * W, rng.uniform(0.03, 0.2) * H
    x0, x1 = int(max(0, cx - 2 * rx)), int(min(W, cx + 2 * rx))
    y0, y1 = int(max(0, cy - 2 * ry)), int(min(H, cy + 2 * ry))
    if x1 <= x0 or y1 <= y0:
        return
    xx = (np.arange(x0, x1, dtype=np.float32) - cx) / rx
    yy = (np.arange(y0, y1, dtype=np.float32) - cy) / ry
    g = np.exp(-(yy[:, None] ** 2 + xx[None, :] ** 2)) * rng.uniform(0.3, 0.8)
    region = canvas[y0:y1, x0:x1].astype(np.float32)
    region += g[..., None] * (255.0 - region)
    canvas[y0:y1, x0:x1] = np.clip(region + 0.5, 0, 255).astype(np.uint8)


def finish(img: Image.Image, looks: Looks, rng: np.random.Generator) -> Image.Image:
    """Camera-like global changes: brightness, then sensor noise. Done with 8-bit lookup tables and
    a pre-drawn noise texture, because float maths on every pixel costs more than the rest of
    compositing together."""
    b = rng.uniform(*looks.brightness)
    if abs(b - 1.0) > 1e-3:
        lut = np.clip(np.arange(256) * b + 0.5, 0, 255).astype(np.uint8).tolist()
        img = img.point(lut * 3)
    return add_noise(img, int(round(rng.uniform(*looks.noise))), rng)


def add_noise(img: Image.Image, sigma: int, rng: np.random.Generator, colour: bool = False) -> Image.Image:
    """Gaussian noise of ``sigma`` levels on an RGB image: grey (a sensor's) or, with ``colour``, its
    own in each channel; random crops of a pre-drawn texture, which costs a tenth of drawing it."""
    if sigma <= 0:
        return img
    tex = _noise_texture(sigma)
    w, h = img.size
    reps = (-(-h // tex.shape[0]), -(-w // tex.shape[1]))
    if reps != (1, 1):
        tex = np.tile(tex, reps)
    bands = []
    for _ in range(3 if colour else 1):
        y, x = int(rng.integers(tex.shape[0] - h + 1)), int(rng.integers(tex.shape[1] - w + 1))
        bands.append(Image.fromarray(tex[y:y + h, x:x + w]))
    noise = Image.merge("RGB", bands * (3 // len(bands)))
    return ImageChops.add(img, noise, scale=1.0, offset=-128)


@lru_cache(maxsize=None)
def _noise_texture(sigma: int) -> np.ndarray:
    """Grey Gaussian noise around 128, drawn once per level from a fixed seed (so output stays
    reproducible); images take random crops of it."""
    rng = np.random.default_rng([4099, sigma])
    return np.clip(128 + rng.standard_normal((768, 768), dtype=np.float32) * sigma + 0.5, 0, 255).astype(np.uint8)
