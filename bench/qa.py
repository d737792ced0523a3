"""QA speed against its floor, in one run on the same photos.

floor: decode at the same reduced scale (JPEG draft) + resize to the model's input + batched
       forward pass, in one process, nothing else
qa:    `stampcheck qa` as a user runs it (parallel decoding, thumbnails, results.csv/jsonl,
       index.html)
Measured on a folder of real photos and on large (12 MP) JPEGs; each figure is the best of two
runs, the two kinds interleaved, so neither side gets the quieter moment of a shared machine.

    python -m bench.qa [--model DIR] [--photos DIR] [--large 64]
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from compose.composer import ComposeConfig, _no_progress, compose_dataset
from stampcheck.images import find_images, open_checked
from stampcheck.qa import run_qa
from train.learner import TrainConfig, train
from train.predict import PHOTO_LIMITS, Predictor

DEFAULT_PHOTOS = Path(__file__).resolve().parents[2] / "shared" / "data" / "product-photos"


def floor(predictor: Predictor, files: list[Path], bs: int) -> float:
    start = time.perf_counter()
    batch = []
    for f in files:
        batch.append(predictor.to_input(open_checked(f, PHOTO_LIMITS, draft_size=predictor.size)))
        if len(batch) == bs:
            predictor.predict(torch.stack(batch))
            batch = []
    if batch:
        predictor.predict(torch.stack(batch))
    return len(files) / (time.perf_counter() - start)


def qa_speed(model: Path, folder: Path, out: Path, bs: int) -> float:
    start = time.perf_counter()
    summary = run_qa(model, [str(folder)], out, bs=bs, progress=_no_progress)
    return summary.photos / (time.perf_counter() - start)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, help="model folder (default: a tiny one trained here)")
    ap.add_argument("--photos", type=Path, default=DEFAULT_PHOTOS)
    ap.add_argument("--large", type=int, default=64, help="how many 12 MP JPEGs to test")
    ap.add_argument("--bs", type=int, default=32)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-qa-"))
    try:
        model = args.model
        if model is None:
            compose_dataset(ComposeConfig(count=40, seed=0, max_size=160), tmp / "ds")
            model = tmp / "model"
            train(tmp / "ds", model, TrainConfig(arch="resnet18", size=128, epochs=1, bs=8, pretrained=False),
                  log=lambda *a: None)
        predictor = Predictor(model)
        large = tmp / "large"
        large.mkdir()
        rng = np.random.default_rng(0)
        for i in range(args.large):
            small = rng.integers(0, 256, (94, 125, 3), dtype=np.uint8)
            Image.fromarray(small).resize((4000, 3000), Image.BICUBIC).save(large / f"{i}.jpg", quality=90)
        print(f"model {model} ({predictor.config['arch']} at {predictor.size} px) on {predictor.device}")
        for name, folder in (("real photos", args.photos), ("12 MP JPEGs", large)):
            files = find_images([folder])
            # best of two for each, interleaved: the first floor run also warms the page cache
            fl = qa = 0.0
            for _ in range(2):
                fl = max(fl, floor(predictor, files, args.bs))
                qa = max(qa, qa_speed(model, folder, tmp / "report", args.bs))
            print(f"{name:12s} ({len(files)}): floor {fl:7.1f} photos/s, qa {qa:7.1f} photos/s, ratio {qa / fl:5.2f}"
                  "   (goal >= 0.8)")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
