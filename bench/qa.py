"""QA speed against its floor, in one run on the same photos, with each engine.

floor:    decode at the same reduced scale (JPEG draft) + resize to the model's input + batched
          forward pass of the torch model, in one process, nothing else
qa torch: `stampcheck qa` as a user runs it (decoding, thumbnails, results.csv/jsonl, index.html)
qa onnx:  the same with `--engine onnx`: the model's `stampcheck export` run by onnxruntime
Measured on a folder of real photos and on large (12 MP) JPEGs; each figure is the best of
``--repeat`` runs, the three kinds interleaved, so none gets the quieter moment of a shared machine.

    python -m bench.qa [--model DIR] [--photos DIR] [--large 64] [--repeat 2]
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from stampcheck.compose.composer import ComposeConfig, compose_dataset
from stampcheck.qa.batch import run_qa
from stampcheck.images import find_images, open_checked
from stampcheck.progress import no_progress
from stampcheck.engine.photos import PHOTO_LIMITS, to_input
from stampcheck.train.export import export
from stampcheck.train.learner import TrainConfig, train
from stampcheck.engine.torch_engine import Predictor

DEFAULT_PHOTOS = Path(__file__).resolve().parents[2] / "shared" / "data" / "product-photos"


def tiny_model(tmp: Path) -> Path:
    """A model trained here in seconds (one epoch, from scratch): the speed of qa, not its quality."""
    compose_dataset(ComposeConfig(count=40, seed=0, max_size=160), tmp / "ds")
    train(tmp / "ds", tmp / "model", TrainConfig(arch="resnet18", size=128, epochs=1, bs=8, pretrained="none"),
          log=lambda *a: None)
    return tmp / "model"


def floor(predictor: Predictor, files: list[Path], bs: int) -> float:
    start = time.perf_counter()
    for i in range(0, len(files), bs):
        predictor.run(np.stack([to_input(open_checked(f, PHOTO_LIMITS, draft_size=predictor.size), predictor.size)
                                for f in files[i:i + bs]]))
    return len(files) / (time.perf_counter() - start)


def qa_speed(model: Path, folder: Path, out: Path, bs: int, engine: str) -> float:
    start = time.perf_counter()
    summary = run_qa(model, [str(folder)], out, bs=bs, progress=no_progress, engine=engine)
    return summary.photos / (time.perf_counter() - start)


def one_stage_copy(model: Path, tmp: Path) -> Path | None:
    """The model folder without its verifier (a one-stage model, as `train --no-verifier` leaves), or
    None when it has none: qa's speed with and without the second look on the same detector."""
    config = json.loads((model / "config.json").read_text())
    if "verifier" not in config:
        return None
    copy = tmp / "one-stage"
    shutil.copytree(model, copy, ignore=shutil.ignore_patterns("verifier.pth", "*.onnx", "model.pkl"))
    config.pop("verifier")
    (copy / "config.json").write_text(json.dumps(config))
    return copy


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, help="model folder (default: a tiny one trained here)")
    ap.add_argument("--photos", type=Path, default=DEFAULT_PHOTOS)
    ap.add_argument("--large", type=int, default=64, help="how many 12 MP JPEGs to test")
    ap.add_argument("--bs", type=int, default=32)
    ap.add_argument("--repeat", type=int, default=2, help="runs of each kind; the best counts")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-qa-"))
    try:
        model = args.model or tiny_model(tmp)
        onnx_file, _ = export(model, "onnx", tmp / "onnx" / "model.onnx")  # never written into --model
        one_stage = one_stage_copy(model, tmp)
        predictor = Predictor(model)
        large = tmp / "large"
        large.mkdir()
        rng = np.random.default_rng(0)
        for i in range(args.large):
            small = rng.integers(0, 256, (94, 125, 3), dtype=np.uint8)
            Image.fromarray(small).resize((4000, 3000), Image.BICUBIC).save(large / f"{i}.jpg", quality=90)
        print(f"model {model} ({predictor.config['arch']} at {predictor.size} px); torch on {predictor.device}"
              f"{' with ' + str(predictor.dtype) if predictor.dtype else ''}, onnxruntime fp32")
        for name, folder in (("real photos", args.photos), ("12 MP JPEGs", large)):
            files = find_images([folder])
            # interleaved: the first floor run also warms the page cache
            fl = qa = ox = one = 0.0
            for _ in range(args.repeat):
                fl = max(fl, floor(predictor, files, args.bs))
                qa = max(qa, qa_speed(model, folder, tmp / "report", args.bs, "torch"))
                ox = max(ox, qa_speed(onnx_file, folder, tmp / "report", args.bs, "onnx"))
                if one_stage:
                    one = max(one, qa_speed(one_stage, folder, tmp / "report", args.bs, "torch"))
            print(f"{name:12s} ({len(files)}): floor {fl:6.1f} photos/s, qa torch {qa:6.1f} (ratio {qa / fl:4.2f}), "
                  f"qa onnx {ox:6.1f} (ratio {ox / fl:4.2f}, {ox / qa:4.2f}x torch)   (goal: ratios >= 0.83)"
                  + (f"; its detector alone in qa {one:6.1f}: two stages at {qa / one:4.2f}x (goal >= 0.8)"
                     if one_stage else ""))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
