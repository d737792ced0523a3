"""Shared test material: real image files, good and bad, written on the fly."""

from __future__ import annotations

import struct
import subprocess
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

SHARED_PHOTOS = Path(__file__).resolve().parents[2] / "shared" / "data" / "product-photos"


def photo(seed: int, size=(320, 240)) -> Image.Image:
    """A busy RGB picture, different for every seed."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (size[1] // 16, size[0] // 16, 3), dtype=np.uint8)
    return Image.fromarray(small).resize(size, Image.BICUBIC)


def huge_header_png() -> bytes:
    """A valid PNG header claiming 60000x60000 pixels: a decompression bomb by its size alone."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", 60000, 60000, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 10)) + chunk(b"IEND", b"")


def write_bad_files(folder: Path) -> dict[str, str]:
    """Write one file of each kind of bad input; return {file name: expected reason}."""
    folder.mkdir(parents=True, exist_ok=True)
    good = folder / "tmp_good.jpg"
    photo(99).save(good, quality=90)
    data = good.read_bytes()
    good.unlink()
    (folder / "truncated.jpg").write_bytes(data[: len(data) // 2])
    (folder / "page.jpg").write_text("<html><body>Not found</body></html>")
    (folder / "empty.jpg").write_bytes(b"")
    Image.new("RGB", (1, 1), "red").save(folder / "tiny.png")
    (folder / "bomb.png").write_bytes(huge_header_png())
    return {"truncated.jpg": "truncated", "page.jpg": "not-an-image", "empty.jpg": "empty",
            "tiny.png": "too-small", "bomb.png": "too-large"}


def write_odd_good_files(folder: Path) -> list[str]:
    """Files that are fine but unusual: CMYK, palette, 16-bit grey, EXIF-rotated; return names."""
    folder.mkdir(parents=True, exist_ok=True)
    photo(1).convert("CMYK").save(folder / "cmyk.jpg")
    photo(2).convert("P", palette=Image.ADAPTIVE).save(folder / "palette.png")
    grey16 = (np.asarray(photo(3).convert("L"), dtype=np.uint16) * 257)
    Image.fromarray(grey16).save(folder / "grey16.png")
    write_exif_rotated(folder / "rotated.jpg", photo(4, (320, 200)))
    return ["cmyk.jpg", "palette.png", "grey16.png", "rotated.jpg"]


def write_exif_rotated(path: Path, upright: Image.Image) -> None:
    """Store ``upright`` as a camera would: pixels turned, EXIF orientation 6 (rotate 90 CW to view)."""
    stored = upright.transpose(Image.ROTATE_90)
    exif = Image.Exif()
    exif[0x0112] = 6
    stored.save(path, exif=exif.tobytes(), quality=92)


@pytest.fixture
def good_photos(tmp_path) -> Path:
    folder = tmp_path / "photos"
    folder.mkdir()
    for i in range(6):
        photo(i + 10).save(folder / f"p{i}.jpg", quality=90)
    return folder


def dead_pid() -> int:
    """The pid of a process that has ended: the writer of a run killed mid-write."""
    p = subprocess.Popen(["true"])
    p.wait()
    return p.pid
