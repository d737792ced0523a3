"""A generator of ink-stamp designs: thousands of distinct seals drawn from one integer.

What makes a stamp a stamp is its layout (rings, bands, text set along arcs or in lines, a few
glyphs) and that it is printed in one ink; what makes one stamp *this* stamp is which of those
and which words. The base detector learns the first from these designs; a user's training learns
the second, with the other designs as its hard negatives.

:func:`seal_design` draws design ``n`` as white-on-transparent RGBA (alpha is the ink); the same
``n`` always gives the same picture. Only Pillow's scalable default font is used, so the pictures
are the same on every machine; variety in lettering comes from size, stroke weight and width.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
from PIL import Image, ImageDraw, ImageFont

SHAPES = ("circle", "circle", "oval", "rect", "rounded", "polygon", "ticket")
SYLLABLES = ["QA", "QC", "OK", "TEST", "ED", "PASS", "INSP", "CERT", "LAB", "CHECK", "LOT", "NR", "APPROV",
             "VERIF", "CONTROL", "QUAL", "FACT", "ORY", "PRO", "DUCT", "ION", "AL", "ER", "AN", "TE", "KO",
             "STA", "MP", "NORD", "SUD", "TECH", "NIK", "BRAND", "MARK", "SEAL", "GMBH", "LTD", "INC", "CO",
             "SA", "AG", "OFFICE", "DEPT", "LINE", "ZONE", "UNIT", "TEAM", "GRADE", "FIRST", "CLASS"]
ALPHABET = "ABCDEFGHIJKLMNOPRSTUVWXYZ"


def _font(size: float) -> ImageFont.FreeTypeFont:
    return _font_px(max(6, int(size)))


@lru_cache(maxsize=None)
def _font_px(size: int) -> ImageFont.FreeTypeFont:
    return ImageFont.load_default(size=size)


def random_word(rng: np.random.Generator) -> str:
    """A word, a date, a lot or line number: what stamps say."""
    kind = rng.random()
    if kind < 0.45:
        return "".join(SYLLABLES[int(i)] for i in rng.integers(len(SYLLABLES), size=int(rng.integers(1, 3))))
    if kind < 0.6:
        return "".join(ALPHABET[int(i)] for i in rng.integers(len(ALPHABET), size=int(rng.integers(2, 7))))
    if kind < 0.75:
        sep = "-./"[int(rng.integers(3))]
        return f"{int(rng.integers(1, 29)):02d}{sep}{int(rng.integers(1, 13)):02d}{sep}{int(rng.integers(2018, 2031))}"
    if kind < 0.9:
        prefix = ["LOT", "NO.", "NR", "BATCH", "L", "#", "QC", ""][int(rng.integers(8))]
        return f"{prefix} {int(rng.integers(1, 10 ** int(rng.integers(2, 6))))}".strip()
    return ["PASSED", "OK", "APPROVED", "INSPECTED", "CHECKED", "TESTED", "REJECTED", "VOID", "COPY",
            "RECEIVED", "PAID", "ORIGINAL", "CONFIDENTIAL", "QUALITY"][int(rng.integers(14))]


def _text_image(text: str, size: float, stroke: int, stretch: float) -> Image.Image:
    """One line of text as an alpha mask (L), stretched horizontally by ``stretch``."""
    f = _font(size)
    left, top, right, bottom = f.getbbox(text, stroke_width=stroke)
    w, h = max(1, right - left), max(1, bottom - top)
    img = Image.new("L", (w + 2, h + 2), 0)
    ImageDraw.Draw(img).text((1 - left, 1 - top), text, fill=255, font=f, stroke_width=stroke, stroke_fill=255)
    if abs(stretch - 1) > 0.05:
        img = img.resize((max(1, int(img.width * stretch)), img.height), Image.BILINEAR)
    return img


def _paste_alpha(canvas: Image.Image, mask: Image.Image, cx: float, cy: float) -> None:
    """Add ink ``mask`` (L) centred at (cx, cy) to the canvas's alpha (max, so strokes merge)."""
    x, y = int(round(cx - mask.width / 2)), int(round(cy - mask.height / 2))
    canvas.paste(255, (x, y, x + mask.width, y + mask.height), mask)  # blending towards full ink


def _arc_text(canvas: Image.Image, text: str, cx: float, cy: float, rx: float, ry: float, centre_angle: float,
              size: float, stroke: int, top: bool) -> None:
    """Letters set along an ellipse, centred on ``centre_angle`` (radians, 0 = right, y down);
    on the top arc they read clockwise, on the bottom arc counter-clockwise, upright either way."""
    f = _font(size)
    widths = [max(1.0, f.getlength(ch)) * 1.08 for ch in text]
    r_mean = (rx + ry) / 2
    span = sum(widths) / r_mean
    a = centre_angle - span / 2 if top else centre_angle + span / 2
    for ch, w in zip(text, widths):
        step = w / r_mean
        mid = a + step / 2 if top else a - step / 2
        x, y = cx + rx * math.cos(mid), cy + ry * math.sin(mid)
        if ch.strip():
            glyph = _text_image(ch, size, stroke, 1.0)
            angle = -math.degrees(mid) - 90 if top else -math.degrees(mid) + 90
            _paste_alpha(canvas, glyph.rotate(angle, resample=Image.BICUBIC, expand=True), x, y)
        a = a + step if top else a - step


def _lines(canvas: Image.Image, words: list[str], cx: float, cy: float, box_w: float, box_h: float,
           stroke: int, stretch: float) -> None:
    """Lines of text fitted into a box_w x box_h area centred at (cx, cy)."""
    n = len(words)
    size = box_h / n / 1.25
    images = [_text_image(w, size, stroke, stretch) for w in words]
    widest = max(i.width for i in images)
    if widest > box_w:
        images = [i.resize((max(1, int(i.width * box_w / widest)), max(1, int(i.height * box_w / widest))),
                           Image.BILINEAR) for i in images]
    total = sum(i.height for i in images) * 1.2
    y = cy - total / 2
    for img in images:
        _paste_alpha(canvas, img, cx, y + img.height * 0.6)
        y += img.height * 1.2


def _star(d: ImageDraw.ImageDraw, cx: float, cy: float, r: float, points: int = 5) -> None:
    pts = [(cx + math.cos(-math.pi / 2 + k * math.pi / points) * (r if k % 2 == 0 else r * 0.45),
            cy + math.sin(-math.pi / 2 + k * math.pi / points) * (r if k % 2 == 0 else r * 0.45))
           for k in range(points * 2)]
    d.polygon(pts, fill=255)


def _glyph(d: ImageDraw.ImageDraw, rng: np.random.Generator, cx: float, cy: float, r: float, stroke: int) -> None:
    """A small emblem: star, check mark, cross, dot ring, crown-like zigzag or a hatched disc."""
    kind = int(rng.integers(6))
    if kind == 0:
        _star(d, cx, cy, r, int(rng.integers(5, 8)))
    elif kind == 1:
        d.line([(cx - r, cy), (cx - r * 0.3, cy + r * 0.7), (cx + r, cy - r * 0.8)], fill=255, width=stroke * 2)
    elif kind == 2:
        d.line([(cx - r, cy - r), (cx + r, cy + r)], fill=255, width=stroke * 2)
        d.line([(cx - r, cy + r), (cx + r, cy - r)], fill=255, width=stroke * 2)
    elif kind == 3:
        for k in range(8):
            a = k * math.pi / 4
            px, py = cx + math.cos(a) * r, cy + math.sin(a) * r
            d.ellipse((px - stroke, py - stroke, px + stroke, py + stroke), fill=255)
    elif kind == 4:
        pts = [(cx - r, cy + r * 0.6), (cx - r, cy - r * 0.4), (cx - r / 2, cy), (cx, cy - r * 0.8),
               (cx + r / 2, cy), (cx + r, cy - r * 0.4), (cx + r, cy + r * 0.6)]
        d.polygon(pts, fill=255)
    else:
        d.ellipse((cx - r, cy - r, cx + r, cy + r), outline=255, width=stroke)
        for k in range(-3, 4):
            off = k * r / 3.5
            half = math.sqrt(max(0.0, r * r - off * off))
            d.line([(cx + off - half * 0.5, cy - half), (cx + off + half * 0.5, cy + half)], fill=255, width=1)


def _outline(d: ImageDraw.ImageDraw, shape: str, box, width: int, sides: int, radius: float, ink: int = 255) -> None:
    x0, y0, x1, y1 = box
    if x1 - x0 < 2 * width or y1 - y0 < 2 * width:
        return
    if shape in ("circle", "oval"):
        d.ellipse(box, outline=ink, width=width)
    elif shape == "rect":
        d.rectangle(box, outline=ink, width=width)
    elif shape in ("rounded", "ticket"):
        r = max(0, int(min(radius, (x1 - x0) / 2 - width, (y1 - y0) / 2 - width)))
        d.rounded_rectangle(box, radius=r, outline=ink, width=width)
    else:
        cx, cy, r = (x0 + x1) / 2, (y0 + y1) / 2, (x1 - x0) / 2
        pts = [(cx + r * math.cos(-math.pi / 2 + k * 2 * math.pi / sides),
                cy + r * math.sin(-math.pi / 2 + k * 2 * math.pi / sides)) for k in range(sides)]
        d.polygon(pts, outline=ink, width=width)


def seal_design(n: int, size: int = 128) -> Image.Image:
    """Design ``n`` as an RGBA image, black ink (compose recolours it), cropped to its ink."""
    rng = np.random.default_rng([90210, n])
    shape = SHAPES[int(rng.integers(len(SHAPES)))]
    aspect = 1.0 if shape in ("circle", "polygon") else float(rng.uniform(1.25, 2.6))
    if shape != "ticket" and shape not in ("circle", "polygon") and rng.random() < 0.3:
        aspect = 1 / aspect if shape == "oval" else aspect  # upright ovals exist; boxes stay wide
    w, h = (size, int(size / aspect)) if aspect >= 1 else (int(size * aspect), size)
    pad = 4
    canvas = Image.new("L", (w + 2 * pad, h + 2 * pad), 0)
    d = ImageDraw.Draw(canvas)
    bold = rng.random() < 0.4
    unit = min(w, h)
    stroke = max(2, int(unit * (rng.uniform(0.055, 0.085) if bold else rng.uniform(0.03, 0.05))))
    text_stroke = int(rng.integers(1, 3)) if bold else int(rng.integers(0, 2))
    stretch = float(rng.uniform(0.75, 1.25))
    sides = int(rng.integers(5, 9))
    radius = unit * float(rng.uniform(0.1, 0.35))
    x0, y0, x1, y1 = pad, pad, pad + w - 1, pad + h - 1
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    solid = rng.random() < 0.12
    if solid:  # a filled seal with the text knocked out of the ink
        _outline(d, shape, (x0, y0, x1, y1), max(2, unit // 2), sides, radius)
    rings = int(rng.integers(2, 4)) if solid else int(rng.integers(1, 4))
    gap = stroke + unit * float(rng.uniform(0.02, 0.06))
    inner = [x0, y0, x1, y1]
    for k in range(rings):
        m = k * gap
        # a solid seal shows its inner rings as lines knocked out of the ink
        _outline(d, shape, (x0 + m, y0 + m, x1 - m, y1 - m), stroke if k != 1 else max(1, stroke // 2),
                 sides, radius - m, ink=0 if solid and k else 255)
        inner = [x0 + m, y0 + m, x1 - m, y1 - m]
    ink, paper = (0, 255) if solid else (255, 0)
    arc_band = 0.0
    if shape in ("circle", "oval", "polygon") and rng.random() < 0.75:
        # text along the top (and often the bottom) arc, inside the outer rings
        band = unit * float(rng.uniform(0.12, 0.18))
        rx, ry = (inner[2] - inner[0]) / 2 - band * 0.75, (inner[3] - inner[1]) / 2 - band * 0.75
        text_layer = Image.new("L", canvas.size, 0)
        _arc_text(text_layer, random_word(rng) + " " * int(rng.integers(0, 2)) + random_word(rng), cx, cy, rx, ry,
                  -math.pi / 2, band * 0.8, text_stroke, top=True)
        if rng.random() < 0.7:
            _arc_text(text_layer, random_word(rng), cx, cy, rx, ry, math.pi / 2, band * 0.8, text_stroke, top=False)
        _apply(canvas, text_layer, ink)
        arc_band = band * 1.6
        if rng.random() < 0.6:  # an inner ring closing the text band
            m = arc_band
            if shape != "polygon" and inner[2] - inner[0] > 2 * m + stroke and inner[3] - inner[1] > 2 * m + stroke:
                d.ellipse((inner[0] + m, inner[1] + m, inner[2] - m, inner[3] - m), outline=ink,
                          width=max(1, stroke // 2))
    centre = ImageDraw.Draw(canvas)
    iw = (inner[2] - inner[0]) - 2 * arc_band
    ih = (inner[3] - inner[1]) - 2 * arc_band
    if shape in ("circle", "oval", "polygon"):
        iw, ih = iw * 0.7, ih * 0.7  # the square inside a round outline
    else:
        iw, ih = iw * 0.88, ih * 0.8
    iw, ih = max(iw, unit * 0.25), max(ih, unit * 0.2)  # rings and arcs can leave little room inside
    layout = rng.random()
    layer = Image.new("L", canvas.size, 0)
    ld = ImageDraw.Draw(layer)
    if layout < 0.55:
        words = [random_word(rng) for _ in range(int(rng.integers(1, 4)))]
        _lines(layer, words, cx, cy, iw, ih * 0.85, text_stroke, stretch)
    elif layout < 0.75:
        _glyph(ld, rng, cx, cy, min(iw, ih) * 0.38, stroke)
    else:  # a band across the middle with one word, emblems above and below
        bh = ih * 0.36
        if rng.random() < 0.5:
            ld.rectangle((cx - iw / 2, cy - bh / 2, cx + iw / 2, cy + bh / 2), outline=255, width=max(1, stroke // 2))
        _lines(layer, [random_word(rng)], cx, cy, iw * 0.9, bh * 0.8, text_stroke, stretch)
        for sy in (-1, 1):
            if rng.random() < 0.7:
                for sx in ((-0.25, 0.0, 0.25) if rng.random() < 0.4 else (0.0,)):
                    _star(ld, cx + sx * iw, cy + sy * ih * 0.34, ih * 0.08)
    _apply(canvas, layer, ink)
    if shape in ("circle", "oval") and arc_band and rng.random() < 0.5:  # stars between the arcs
        rx, ry = (inner[2] - inner[0]) / 2 - arc_band / 2, (inner[3] - inner[1]) / 2 - arc_band / 2
        for a in (0.0, math.pi):
            _star(centre, cx + rx * math.cos(a), cy + ry * math.sin(a), arc_band * 0.25)
    alpha = np.asarray(canvas)
    ys, xs = np.nonzero(alpha > 8)
    if len(xs) == 0:  # cannot happen with an outline, but a design must never be empty
        alpha = np.full((8, 8), 255, np.uint8)
        ys, xs = np.nonzero(alpha)
    alpha = alpha[ys.min():ys.max() + 1, xs.min():xs.max() + 1]
    rgba = np.zeros(alpha.shape + (4,), np.uint8)
    rgba[..., 3] = alpha
    return Image.fromarray(rgba, "RGBA")


def _apply(canvas: Image.Image, layer: Image.Image, ink: int) -> None:
    """Ink a layer's strokes into the canvas: add them, or knock them out of a solid seal."""
    a, m = np.asarray(canvas).astype(np.int16), np.asarray(layer).astype(np.int16)
    out = np.maximum(a, m) if ink == 255 else np.minimum(a, 255 - m)
    canvas.paste(Image.fromarray(out.astype(np.uint8)))
