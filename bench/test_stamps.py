"""The three test stamps of the transfer benchmark, drawn here and kept out of pretraining: a round
text seal, a rectangular "PASSED" box and a logo-like mark. `python -m bench.test_stamps` redraws
the PNGs in bench/stamps/ (they are committed; the benchmark reads the files)."""

from __future__ import annotations

import math
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

STAMPS = Path(__file__).resolve().parent / "stamps"


def _font(size: int) -> ImageFont.FreeTypeFont:
    return ImageFont.load_default(size=size)


def round_seal(size: int = 320, ink=(30, 50, 160)) -> Image.Image:
    img = Image.new("RGBA", (size, size), ink + (0,))
    d = ImageDraw.Draw(img)
    c = size / 2
    d.ellipse((6, 6, size - 7, size - 7), outline=ink + (255,), width=10)
    d.ellipse((50, 50, size - 51, size - 51), outline=ink + (255,), width=4)
    text, f, r = "ACME DAIRY  QUALITY CONTROL  ", _font(26), c - 30
    for k, ch in enumerate(text):  # evenly round the whole ring
        a = -math.pi / 2 + 2 * math.pi * k / len(text)
        glyph = Image.new("RGBA", (40, 40), ink + (0,))
        ImageDraw.Draw(glyph).text((20, 20), ch, fill=ink + (255,), font=f, anchor="mm")
        glyph = glyph.rotate(-math.degrees(a) - 90, resample=Image.BICUBIC)
        img.alpha_composite(glyph, (int(c + r * math.cos(a) - 20), int(c + r * math.sin(a) - 20)))
    d.text((c, c - 18), "QC", fill=ink + (255,), font=_font(64), anchor="mm")
    d.text((c, c + 38), "No. 17", fill=ink + (255,), font=_font(30), anchor="mm")
    return img


def passed_box(width: int = 360, height: int = 150, ink=(190, 20, 30)) -> Image.Image:
    img = Image.new("RGBA", (width, height), ink + (0,))
    d = ImageDraw.Draw(img)
    d.rectangle((3, 3, width - 4, height - 4), outline=ink + (255,), width=8)
    d.rectangle((16, 16, width - 17, height - 17), outline=ink + (255,), width=3)
    d.text((width / 2, height / 2 - 14), "PASSED", fill=ink + (255,), font=_font(70), anchor="mm",
           stroke_width=2, stroke_fill=ink + (255,))
    d.text((width / 2, height - 34), "INSPECTOR 04  LINE B", fill=ink + (255,), font=_font(20), anchor="mm")
    return img


def logo_mark(size: int = 300, ink=(20, 110, 50)) -> Image.Image:
    img = Image.new("RGBA", (size, size), ink + (0,))
    d = ImageDraw.Draw(img)
    top, left, right = (size / 2, 8), (8, size - 60), (size - 8, size - 60)
    d.polygon([top, right, left], outline=ink + (255,), width=12)
    d.line([(size * 0.3, size * 0.5), (size * 0.45, size * 0.65), (size * 0.72, size * 0.33)],
           fill=ink + (255,), width=22, joint="curve")
    d.text((size / 2, size - 28), "VERIFIED", fill=ink + (255,), font=_font(40), anchor="mm")
    return img


def write_all() -> list[Path]:
    STAMPS.mkdir(exist_ok=True)
    out = []
    for name, img in (("round-seal", round_seal()), ("passed-box", passed_box()), ("logo-mark", logo_mark())):
        path = STAMPS / f"{name}.png"
        img.save(path)
        out.append(path)
    return out


if __name__ == "__main__":
    for p in write_all():
        print(p)
