"""qa --watch latency: from a 12 MP JPEG written (closed) in the watched folder to its row in
results.jsonl, against its floor, in one run on the same photos.

watch: `stampcheck qa MODEL --watch DIR` as a user runs it (a subprocess); photos written one at a
       time, each after the previous one's row, with a pause between, as a camera would
floor: decode (JPEG draft, as qa) + resize + forward pass of the same photo, in this process, alone

    python -m bench.watch [--model DIR] [--photos 24] [--pause 0.5]
"""

from __future__ import annotations

import argparse
import io
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from bench.qa import tiny_model
from stampcheck.engine.photos import read_photo
from stampcheck.engine.torch_engine import Predictor

ROOT = Path(__file__).resolve().parents[1]


def twelve_mp(seed: int) -> bytes:
    small = np.random.default_rng(seed).integers(0, 256, (94, 125, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(small).resize((4000, 3000), Image.BICUBIC).save(buf, "JPEG", quality=90)
    return buf.getvalue()


def rows(jsonl: Path) -> int:
    try:
        return jsonl.read_bytes().count(b"\n")
    except FileNotFoundError:
        return 0


def wait_rows(jsonl: Path, n: int, proc: subprocess.Popen, timeout: float = 120) -> float:
    """The time the n-th row appeared (polled every 5 ms)."""
    end = time.monotonic() + timeout
    while rows(jsonl) < n:
        if proc.poll() is not None or time.monotonic() > end:
            raise SystemExit(f"the watch stopped or stalled: {proc.communicate()[0] if proc.poll() is not None else ''}")
        time.sleep(0.005)
    return time.monotonic()


def summary(name: str, seconds: list[float]) -> str:
    s = sorted(seconds)
    return (f"{name}: median {statistics.median(s):.3f} s, p90 {s[int(0.9 * (len(s) - 1))]:.3f} s, "
            f"max {s[-1]:.3f} s ({len(s)} photos)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, help="model folder (default: a tiny one trained here)")
    ap.add_argument("--photos", type=int, default=24)
    ap.add_argument("--pause", type=float, default=0.5, help="seconds between a row and the next photo")
    ap.add_argument("--engine", default="torch")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-watch-"))
    try:
        run(args, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def run(args, tmp: Path) -> None:
    model = args.model or tiny_model(tmp)
    if args.engine == "onnx":
        from stampcheck.train.export import export

        model, _ = export(model, "onnx", tmp / "onnx" / "model.onnx")
    photos = [twelve_mp(i) for i in range(args.photos + 1)]
    folder, out = tmp / "camera", tmp / "report"
    folder.mkdir()
    jsonl = out / "results.jsonl"
    proc = subprocess.Popen([sys.executable, "-m", "stampcheck", "qa", str(model), "--watch", str(folder),
                             "--out", str(out), "--engine", args.engine], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    latencies = []
    try:
        for k, data in enumerate(photos):
            with open(folder / f"{k:04d}.jpg", "wb") as f:
                f.write(data)
            written = time.monotonic()  # closed: from here the photo is the watch's
            seen = wait_rows(jsonl, k + 1, proc)
            if k:  # the first waits for the model to load
                latencies.append(seen - written)
            time.sleep(args.pause)
    finally:
        proc.terminate()
        proc.communicate(timeout=60)
    predictor = Predictor(model) if args.engine == "torch" else None
    if predictor is None:
        from stampcheck.engine.onnx import OnnxModel

        predictor = OnnxModel(model)
    floor = []
    for k in range(1, len(photos)):
        start = time.monotonic()
        photo = read_photo(folder / f"{k:04d}.jpg", predictor.size)
        predictor.run(photo.pixels[None])
        floor.append(time.monotonic() - start)
    print(f"model {model} ({predictor.size} px, engine {args.engine}); 12 MP JPEGs of "
          f"{statistics.mean(map(len, photos)) / 1e6:.1f} MB")
    print(summary("watch: written -> row", latencies))
    print(summary("floor: decode + forward", floor))
    print(f"ratio (median latency / median floor): {statistics.median(latencies) / statistics.median(floor):.2f}")


if __name__ == "__main__":
    main()
