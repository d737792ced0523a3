"""Memory a photo costs to check: bounded by what it decodes to, never a float copy of it per step.

A 16-bit PNG of 100 MP compresses to a few hundred KB and decodes to 200 MB; a float TIFF of
81 MP decodes to 324 MB, past what a photo may (3 bytes a pixel at the pixel limit). Each is
checked by the real commands in a process of its own, whose peak resident memory is measured."""

import json
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from stampcheck import images
from stampcheck.images import ImageLimits, ImageRejected, open_checked, to_rgb8
from tests.conftest import photo
from tests.test_hostile_inputs import model_folder

ROOT = Path(__file__).resolve().parents[1]
MB = 1 << 20
pytestmark = pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="measures peaks as Linux resets them")


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def grey16_png(path: Path, width: int, height: int) -> None:
    """A 16-bit grey PNG, a gradient down its rows, written a row at a time (the test holds no copy)."""
    z = zlib.compressobj(9)
    parts = []
    for y in range(height):
        level = (y * 65535 // max(1, height - 1)).to_bytes(2, "big")
        parts.append(z.compress(b"\0" + level * width))
    parts.append(z.flush())
    ihdr = struct.pack(">IIBBBBB", width, height, 16, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", b"".join(parts))
                     + png_chunk(b"IEND", b""))


def grey_alpha_png(path: Path, width: int, height: int) -> None:
    """An 8-bit grey PNG with an alpha channel (2 bytes a pixel), a gradient of transparency down
    its rows, written a row at a time."""
    z = zlib.compressobj(9)
    parts = [z.compress(b"\0" + bytes((90, y * 255 // max(1, height - 1))) * width) for y in range(height)]
    parts.append(z.flush())
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 4, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", b"".join(parts))
                     + png_chunk(b"IEND", b""))


def float_tiff(path: Path, width: int, height: int, rows: int = 100) -> None:
    """A 32-bit float grey TIFF, deflate-compressed; every strip is the same zeros, stored once."""
    strip = zlib.compress(bytes(rows * width * 4), 9)
    n = -(-height // rows)
    data_at, offsets_at = 8, 8 + len(strip)
    counts_at = offsets_at + 4 * n
    ifd_at = counts_at + 4 * n
    tags = [(256, 4, 1, width), (257, 4, 1, height), (258, 3, 1, 32), (259, 3, 1, 8), (262, 3, 1, 1),
            (273, 4, n, offsets_at), (277, 3, 1, 1), (278, 4, 1, rows), (279, 4, n, counts_at), (339, 3, 1, 3)]
    ifd = struct.pack("<H", len(tags)) + b"".join(struct.pack("<HHII", *t) for t in tags) + struct.pack("<I", 0)
    path.write_bytes(b"II*\x00" + struct.pack("<I", ifd_at) + strip + struct.pack(f"<{n}I", *[data_at] * n)
                     + struct.pack(f"<{n}I", *[len(strip)] * n) + ifd)


# Runs the CLI in this process after its heavy imports, so that the peak past them is the command's
# own: the peak the imports reached on their way is forgotten first (Linux: clear_refs 5), and the
# process's high-water mark read (VmHWM, what ru_maxrss reports unless a thread ended above it).
MEASURE = """
import importlib, json, sys
import stampcheck.app.cli
for name in sys.argv[1].split(","):
    importlib.import_module(name)
def high_water():
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmHWM:"))
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")
base = high_water()
sys.argv = ["stampcheck", *sys.argv[2:]]
try:
    stampcheck.app.cli.main()
except SystemExit as e:
    code = e.code
print("MEMORY " + json.dumps({"code": code, "grew": high_water() - base}))
"""


def measured(modules: list[str], *args) -> tuple[int, int, str]:
    """(exit code, bytes the peak grew by while the command ran, its output)."""
    r = subprocess.run([sys.executable, "-c", MEASURE, ",".join(modules), *map(str, args)], capture_output=True,
                       text=True, cwd=ROOT, timeout=240)
    line = next((x for x in r.stdout.splitlines() if x.startswith("MEMORY ")), None)
    assert line, r.stdout[-3000:] + r.stderr[-3000:]
    m = json.loads(line[7:])
    return m["code"], m["grew"], r.stdout + r.stderr


@pytest.fixture(scope="module")
def big(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("big")
    grey16_png(folder / "grey16-100mp.png", 10000, 10000)
    float_tiff(folder / "float-81mp.tif", 9000, 9000)
    assert (folder / "grey16-100mp.png").stat().st_size < 500_000 and (folder / "float-81mp.tif").stat().st_size < 100_000
    return folder


@pytest.mark.slow
def test_qa_checks_a_16_bit_photo_in_bounded_memory_and_refuses_a_float_one_by_its_bytes(big, tmp_path):
    model = model_folder(tmp_path / "model", ["qc-passed"])
    code, grew, output = measured(["stampcheck.qa.batch", "stampcheck.engine.torch_engine"], "qa", model, big, "--out", tmp_path / "qa",
                                  "--workers", "0")
    assert code == 1, output  # the untrained model finds no stamp: read, judged, missing
    rows = {Path(json.loads(line)["file"]).name: json.loads(line) for line in open(tmp_path / "qa" / "results.jsonl")}
    assert rows["grey16-100mp.png"].get("error") in (None, ""), rows
    assert rows["float-81mp.tif"]["error"].startswith("too-large") and "MB" in rows["float-81mp.tif"]["error"], rows
    # 200 MB decoded and 100 MB at 8 bits; the float64 steps took 3.4 GB
    assert grew < 700 * MB, grew / MB


@pytest.mark.slow
def test_crawl_keeps_a_16_bit_photo_in_bounded_memory(tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    grey16_png(photos / "grey16-80mp.png", 10000, 8000)
    code, grew, output = measured(["stampcheck.crawler.run", "stampcheck.crawler.store"], "crawl", "--from-dir", photos,
                                  "--out", tmp_path / "crawl")
    assert code == 0 and len(list((tmp_path / "crawl" / "images").iterdir())) == 1, output
    # 160 MB decoded, 80 MB at 8 bits, 320 MB as RGB; the float64 steps took 2.1 GB
    assert grew < 900 * MB, grew / MB


def test_high_bit_depth_photos_keep_their_tones():
    """Converted a block of rows at a time, to the values the whole-image conversion gives."""
    rng = np.random.default_rng(0)
    grey16 = rng.integers(0, 65536, (300, 200), dtype=np.uint16)
    floats = rng.uniform(-20, 300, (300, 200)).astype(np.float32)
    ints = rng.integers(-5, 60000, (300, 200)).astype(np.int32)
    for arr, top in ((grey16, 65535.0), (floats, 65535.0), (ints, 65535.0), (np.minimum(floats, 255), 255.0)):
        want = np.clip(arr.astype(np.float64) / top * 255 + 0.5, 0, 255).astype(np.uint8)
        got = np.asarray(to_rgb8(Image.fromarray(arr)))
        assert got.shape == (300, 200, 3) and (got == want[..., None]).all()


def test_decoded_bytes_are_capped_by_the_mode(tmp_path):
    """The same pixels pass as 8-bit RGB and are refused as float, whose pixels take 4 bytes."""
    photo(1, (400, 300)).save(tmp_path / "rgb.png")
    Image.fromarray(np.zeros((300, 400), np.float32)).save(tmp_path / "float.tif")
    limits = ImageLimits(min_side=16, max_pixels=400 * 300)  # 3 bytes a pixel: 360000 bytes
    assert open_checked(tmp_path / "rgb.png", limits).size == (400, 300)
    with pytest.raises(ImageRejected, match="too-large: 400x300 F decodes to 0.48 MB, over the 0.36 MB"):
        open_checked(tmp_path / "float.tif", limits)


@pytest.mark.slow
def test_qa_flattens_a_photo_with_alpha_in_bounded_memory(tmp_path):
    """A grey PNG with alpha of 100 MP decodes to 200 MB; flattened on white as a whole it took
    1.6 GB more (RGBA copy, a white RGBA page, their composite, then RGB)."""
    photos = tmp_path / "photos"
    photos.mkdir()
    grey_alpha_png(photos / "grey-alpha-100mp.png", 10000, 10000)
    model = model_folder(tmp_path / "model", ["qc-passed"])
    code, grew, output = measured(["stampcheck.qa.batch", "stampcheck.engine.torch_engine"], "qa", model, photos, "--out", tmp_path / "qa",
                                  "--workers", "0")
    assert code == 1, output
    row = json.loads(open(tmp_path / "qa" / "results.jsonl").readline())
    assert row.get("error") in (None, "") and row["width"] == 10000, row
    assert grew < 700 * MB, grew / MB


def test_alpha_is_flattened_on_white_as_the_whole_image_would_be(monkeypatch, tmp_path):
    """A block of rows at a time, to the values compositing the whole image on white gives, and
    reduced while flattened (qa's draft size) to those of the whole image flattened, then reduced."""
    monkeypatch.setattr(images, "_BLOCK_PIXELS", 2000)  # 10 rows of 200: many blocks, the last one short
    rng = np.random.default_rng(1)
    rgba = Image.fromarray(rng.integers(0, 256, (300, 200, 4), dtype=np.uint8), "RGBA")
    for img in (rgba, rgba.convert("LA"), rgba.convert("PA"), rgba.convert("P")):
        if img.mode == "P":
            img.info["transparency"] = 0
        whole = Image.alpha_composite(Image.new("RGBA", img.size, (255, 255, 255, 255)), img.convert("RGBA"))
        got = to_rgb8(img)
        assert got.mode == "RGB" and np.array_equal(np.asarray(got), np.asarray(whole.convert("RGB"))), img.mode
        if img.mode == "PA":  # no file format stores it
            continue
        img.save(tmp_path / "alpha.png")
        with Image.open(tmp_path / "alpha.png") as saved:  # as stored (a palette may be rewritten)
            whole = Image.alpha_composite(Image.new("RGBA", img.size, (255, 255, 255, 255)), saved.convert("RGBA"))
        small = open_checked(tmp_path / "alpha.png", ImageLimits(min_side=16), draft_size=64)
        assert np.array_equal(np.asarray(small), np.asarray(whole.convert("RGB").reduce(3))), img.mode
