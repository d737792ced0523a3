"""The QA report at a day's scale (2,000 and 20,000 photos), against floors in the same run.

write:  the report fed photo by photo through stampcheck.qa.report.Report (thumbnail files, row chunks), one
        write at the end as a batch does; floor: the same thumbnails' JPEG encode and file writes
        alone, what any report with thumbnail files must do.
watch:  one write() after a photo at the start and at the end of the day (a watched folder writes
        after every photo): the cost must not grow with the rows already written.
weight: the page and its data, without thumbnails; and the thumbnails.
open:   real headless Chromium, from navigation to the first page of cards rendered (the page's
        performance.now() once the cards are in the DOM and a frame has been drawn), best of
        ``--repeat``; floor: a static page holding the same 100 cards' markup inline.
No model is needed: the photos are cheap PhotoResults with random scores and 16x16 heatmaps.

    python -m bench.report [--sizes 2000 20000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from stampcheck.qa.report import Report, thumbnail_jpeg
from stampcheck.atomic import atomic_write_bytes
from stampcheck.engine.decode import PhotoResult
from tests.chromium import Chromium, chromium_path

FIRST_CARDS = """new Promise(function (done) {
  (function look() {
    if (document.querySelector('.card')) requestAnimationFrame(function () { done(performance.now()); });
    else setTimeout(look, 2);
  })();
})"""


def photos(n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    # a photo's look to JPEG (smooth, not noise): about the size of a shop photo's thumbnail
    preview = Image.fromarray(rng.integers(0, 256, (8, 10, 3), dtype=np.uint8)).resize((160, 120), Image.BICUBIC)
    for i in range(n):
        path = Path(f"/cams/line{i % 4}/cam{i % 3}/20261121-{i:06d}.jpg")
        if i % 97 == 5:
            yield PhotoResult(path, error="truncated: image file is truncated")
            continue
        s = float(rng.beta(0.6, 0.6))
        box = [float(rng.integers(0, 3000)), float(rng.integers(0, 2000)), 0.0, 0.0]
        box[2:] = box[0] + 600, box[1] + 500
        yield PhotoResult(path, 4000, 3000, s, box, [(s, "qc-passed", box)] if s >= 0.5 else [],
                          preview=preview.copy(), heatmap=rng.random((16, 16)).astype(np.float32))


def write_report(out: Path, n: int) -> tuple[float, float, float]:
    """Seconds to write the whole report, and one watch-mode write() near the start and at the end."""
    start = time.perf_counter()
    report = Report(out, 0.5, {"model": "bench", "inputs": ["/cams"], "command": "python -m bench.report"})
    early = late = 0.0
    for k, r in enumerate(photos(n)):
        report.add(r)
        if k in (10, n - 1):
            t = time.perf_counter()
            report.write()
            early, late = (time.perf_counter() - t, late) if k == 10 else (early, time.perf_counter() - t)
    report.write()
    return time.perf_counter() - start, early, late


def write_floor(out: Path, n: int) -> float:
    start = time.perf_counter()
    for k, r in enumerate(photos(n)):
        thumb = thumbnail_jpeg(r, 0.5)
        if thumb:
            atomic_write_bytes(out / f"{k:06d}.jpg", thumb)
    return time.perf_counter() - start


def static_page(out: Path) -> Path:
    """The floor page: 100 cards of the report's own thumbnails, as plain HTML."""
    cards = "".join(f'<div class="card"><img loading="lazy" width="160" src="thumbs/{i:06d}.jpg">'
                    f'<div>missing score 0.49<br>/cams/line0/cam0/20261121-{i:06d}.jpg</div></div>' for i in range(100))
    page = out / "floor.html"
    page.write_text(f"<!doctype html><html><head><meta charset='utf-8'></head><body>{cards}</body></html>")
    return page


def open_ms(browser: Chromium, page: Path, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        browser.navigate("about:blank")
        browser.navigate(page.as_uri())
        browser.wait_for(f"location.href === {json.dumps(page.as_uri())}")
        best = min(best, browser.js(FIRST_CARDS))
    return best


def size_mb(folder: Path, thumbs: bool) -> float:
    return sum(p.stat().st_size for p in folder.rglob("*")
               if p.is_file() and ("thumbs" in p.parts) == thumbs) / 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[2000, 20000])
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for n in args.sizes:
            out = tmp / f"r{n}"
            total, early, late = write_report(out, n)
            floor = write_floor(tmp / f"floor{n}", n)
            print(f"{n} photos: write {total:.2f} s, floor (thumbnails alone) {floor:.2f} s, ratio {floor / total:.2f}; "
                  f"one watch-mode write() at photo 11: {early * 1e3:.2f} ms, at photo {n}: {late * 1e3:.2f} ms")
            print(f"  weight: page + data {size_mb(out, False):.2f} MB, thumbnails {size_mb(out, True):.1f} MB "
                  f"({n} files)")
            if not chromium_path():
                print("  chromium not installed: opening time not measured")
                continue
            with Chromium(tmp / "profile") as browser:
                report_ms = open_ms(browser, out / "index.html", args.repeat)
                floor_ms = open_ms(browser, static_page(out), args.repeat)
            print(f"  open in Chromium to the first page of cards: {report_ms:.0f} ms, floor (100 static cards) "
                  f"{floor_ms:.0f} ms, ratio {floor_ms / report_ms:.2f}")


if __name__ == "__main__":
    main()
