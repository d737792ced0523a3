"""Quality with real product photos as backgrounds: compose on ../shared/data/product-photos with
the default looks (small, tilted, faded, multiply-blended, glare...), train, print valid metrics.

Whole backgrounds go to one split, so the valid photos are shelves the model never saw.
With ImageNet weights (a GPU machine with a cache, or --weights) one step is enough. From scratch
on a CPU the full range of looks gives too little signal to start learning, so --warmup-epochs
first trains on clearly inked stamps on the same backgrounds and then goes on from that model
(`stampcheck train --init`) with the full looks: a two-step curriculum.

    python -m bench.quality [--photos DIR] [--images 12000] [--arch resnet18] [--size 192]
                            [--crop 128] [--epochs 10] [--warmup-epochs 8] [--out DIR]

Training on 128 px windows of the 192 px view (`--crop`) gives small stamps the pixels of 192 px
at the training cost of 128 px (`--crop 0`: whole images).
"""

from __future__ import annotations

import argparse
import json
import time
from functools import partial
from pathlib import Path

from stampcheck.compose.composer import ComposeConfig, compose_dataset
from stampcheck.compose.looks import Looks
from stampcheck.device import cpu_count
from stampcheck.progress import no_progress
from stampcheck.train.learner import TrainConfig, train

log = partial(print, flush=True)  # epoch lines show up in a redirected log as they come
DEFAULT_PHOTOS = Path(__file__).resolve().parents[2] / "shared" / "data" / "product-photos"
# The warm-up looks: the same stamp and scenes, larger and clearly inked.
CLEAR = Looks(scale=(0.15, 0.4), opacity=(0.85, 1.0), fade=(0.0, 0.2), blur=(0.0, 0.5), noise=(0.0, 3.0),
              multiply_share=0.3, glare_share=0.1, hard_negative_share=0.2)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--photos", type=Path, default=DEFAULT_PHOTOS)
    ap.add_argument("--images", type=int, default=12000)
    ap.add_argument("--max-size", type=int, default=192)
    ap.add_argument("--arch", default="resnet18")
    ap.add_argument("--size", type=int, default=192)
    ap.add_argument("--crop", type=int, default=128, help="train on crop x crop windows of the size x size image")
    ap.add_argument("--bs", type=int, default=16)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--warmup-epochs", type=int, default=8, help="0: no curriculum (use with pretrained weights)")
    ap.add_argument("--weights", type=Path)
    ap.add_argument("--augment", action="store_true", help="fastai batch augmentations on top of the looks")
    ap.add_argument("--out", type=Path, default=Path("data/bench-quality"))
    args = ap.parse_args()
    workers = max(1, min(cpu_count(), 8))
    start = time.time()
    common = dict(arch=args.arch, size=args.size, crop=args.crop or None, bs=args.bs, lr=args.lr, augment=args.augment,
                  pretrained=args.weights is None, weights=str(args.weights) if args.weights else None)
    init = None
    if args.warmup_epochs:
        compose_dataset(ComposeConfig(count=args.images // 2, seed=10, backgrounds=args.photos,
                                      max_size=args.max_size, looks=CLEAR), args.out / "clear",
                        workers=workers, progress=no_progress)
        warm = train(args.out / "clear", args.out / "model-clear",
                     TrainConfig(epochs=args.warmup_epochs, **common), log=log)
        print("warm-up (clear stamps), valid:", json.dumps(warm["final"]), flush=True)
        init = str(args.out / "model-clear")
        common = {**common, "weights": None}
    compose_dataset(ComposeConfig(count=args.images, seed=0, backgrounds=args.photos, max_size=args.max_size),
                    args.out / "full", workers=workers, progress=no_progress)
    full = train(args.out / "full", args.out / "model", TrainConfig(epochs=args.epochs, init=init, **common), log=log)
    f = full["final"]
    print(f"default looks on {args.photos.name} backgrounds, {args.arch} {args.size} px, {args.epochs} epochs "
          f"(+{args.warmup_epochs} warm-up), {time.time() - start:.0f} s")
    print(f"valid: presence accuracy {f['accuracy']:.3f}, precision {f['precision']:.3f}, recall {f['recall']:.3f}, "
          f"mean IoU {f['mean_iou']:.3f}, IoU>=0.5 {f['iou50']:.3f}  (aim: accuracy >= 0.99, mean IoU >= 0.85)")


if __name__ == "__main__":
    main()
