"""Does the base detector make a stamp it never saw learnable in minutes? For each test stamp
(bench/stamps/, kept out of pretraining): compose on the shared product photos with the default
looks (the ~200 photos of bench.photos's kept-out side are used by nothing but the flag check),
train with `--minutes M` from the base and from scratch in the same run, and report valid
accuracy, precision, recall, mean IoU, recall by stamp size, and the share of the kept-out real
photos (no stamp on any) that the model flags.

    python -m bench.transfer [--minutes 15] [--images 3000] [--stamps round-seal,passed-box,logo-mark]
                             [--starts base,none] [--size S] [--crop C] [--lr LR] [--out data/bench/transfer]

Goals (issue: base detector), from the base within 15 minutes on 2 CPU cores: accuracy >= 0.95 and
mean IoU >= 0.80 on valid for every test stamp; at most 1% of the kept-out photos flagged.
"""

from __future__ import annotations

import argparse
import json
import time
from functools import partial
from pathlib import Path

from bench.photos import PHOTOS, link_folder, split_photos
from stampcheck.compose.composer import ComposeConfig, compose_dataset
from stampcheck.qa.evaluate import evaluate
from stampcheck.atomic import atomic_write_text
from stampcheck.device import cpu_count
from stampcheck.progress import no_progress
from stampcheck.train.learner import TrainConfig, train
from stampcheck.engine.run import predict_photos
from stampcheck.engine.torch_engine import Predictor

STAMPS = Path(__file__).resolve().parent / "stamps"
log = partial(print, flush=True)


def flagged_share(model: Path, photos: list[Path]) -> float:
    """Share of stamp-free real photos the model calls stamped (at its own threshold)."""
    p = Predictor(model)
    results = [r for r in predict_photos(p, photos) if not r.error]
    return sum(r.score >= p.threshold for r in results) / max(1, len(results))


def run_stamp(stamp: Path, args, backgrounds: Path, kept_out: list[Path]) -> list[dict]:
    root = args.out / stamp.stem
    compose_dataset(ComposeConfig(count=args.images, seed=0, stamps=[stamp], backgrounds=backgrounds,
                                  max_size=args.max_size), root / "dataset",
                    workers=max(1, min(cpu_count(), 8)), progress=no_progress)
    rows = []
    for start in args.starts:
        model = root / f"model-{start}"
        t0 = time.time()
        m = train(root / "dataset", model, TrainConfig(minutes=args.minutes, pretrained=start, workers=args.workers,
                                                       size=args.size, crop=args.crop, lr=args.lr),
                  log=log, overwrite=True)
        seconds = time.time() - t0
        ev = evaluate(model, root / "dataset", split="valid", progress=no_progress)["metrics"]
        row = {"stamp": stamp.stem, "start": start, "seconds": round(seconds), "epochs": len(m["epochs"]),
               **{k: ev[k] for k in ("accuracy", "precision", "recall", "mean_iou", "iou50", "ap50")},
               "by_size": {r["size"]: round(r["recall"], 3) for r in ev["by_stamp_size"]},
               "flagged_kept_out": flagged_share(model, kept_out)}
        log(json.dumps(row))
        rows.append(row)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=15.0)
    ap.add_argument("--images", type=int, default=3000)
    ap.add_argument("--max-size", type=int, default=320)
    ap.add_argument("--stamps", default="round-seal,passed-box,logo-mark")
    ap.add_argument("--starts", default="base,none", help="--pretrained values to compare")
    ap.add_argument("--workers", type=int, default=None)
    ap.add_argument("--size", type=int, default=None, help="train's --size (default: train's, for the device)")
    ap.add_argument("--crop", type=int, default=None, help="train's --crop (0: whole images)")
    ap.add_argument("--lr", type=float, default=None, help="train's --lr")
    ap.add_argument("--out", type=Path, default=Path("data/bench/transfer"))
    args = ap.parse_args()
    args.starts = args.starts.split(",")
    use, kept_out = split_photos()
    backgrounds = link_folder(use, PHOTOS, args.out / "photos")
    rows = []
    for name in args.stamps.split(","):
        rows += run_stamp(STAMPS / f"{name}.png", args, backgrounds, kept_out)
    atomic_write_text(args.out / "transfer.json", json.dumps(rows, indent=2))
    print("\n| stamp | start | epochs | accuracy | precision | recall | mean IoU | AP50 | recall by size | "
          "kept-out flagged |\n|---|---|---:|---:|---:|---:|---:|---:|---|---:|")
    for r in rows:
        sizes = " / ".join(f"{v:.2f}" for v in r["by_size"].values())
        print(f"| {r['stamp']} | {r['start']} | {r['epochs']} | {r['accuracy']:.3f} | {r['precision']:.3f} | "
              f"{r['recall']:.3f} | {r['mean_iou']:.3f} | {r['ap50']:.3f} | {sizes} | {r['flagged_kept_out']:.3f} |")
    print(f"({args.minutes:g} min of training each, {args.images} composed images, "
          f"{len(kept_out)} kept-out real photos)")


if __name__ == "__main__":
    main()
