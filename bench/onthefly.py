"""Does composing on the fly slow training? The same learner (arch, size, batch, precision, loader
workers) trained on images composed inside the data loader (train.synthetic, as `stampcheck
pretrain` does) and on the same kind of images composed beforehand and read from disk (`compose`,
then fastai's DataBlock as `stampcheck train` does), alternated in one run. Neither's preparation is
timed: composing the files, and drawing the seal designs, which pretraining does once before its first
epoch.

    python -m bench.onthefly [--size 128] [--crop N] [--bs 32] [--batches 30] [--rounds 2]

Goal (issue: base detector): on the fly at least 0.9x the images/s of pre-composed files.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from fastai.data.core import DataLoaders

from bench.photos import split_photos
from bench.train import TrainTimer
from stampcheck.compose.composer import ComposeConfig, compose_dataset
from stampcheck.device import cpu_count, pick_device
from stampcheck.progress import no_progress
from stampcheck.train.learner import TrainConfig, build_learner
from stampcheck.train.synthetic import PRETRAIN_LOOKS, Loader, SyntheticStamps, collate, draw_designs, load_backgrounds


def images_per_second(learn) -> float:
    timer = TrainTimer()
    learn.logger = lambda *a: None
    with learn.no_bar():
        learn.fit(1, 1e-3, cbs=[timer])
    return timer.images / timer.seconds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--crop", type=int, default=0, help="train on windows of this many pixels (both pipelines)")
    ap.add_argument("--bs", type=int, default=32)
    ap.add_argument("--batches", type=int, default=30)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--workers", type=int, default=max(1, cpu_count() - 1))
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-onthefly-"))
    count = args.bs * (args.batches + 4)
    use, _ = split_photos()
    folder = tmp / "photos"
    folder.mkdir()
    for f in use[:300]:  # the same backgrounds for both
        (folder / f.name).symlink_to(f)
    side = int(args.size * 1.25)
    compose_dataset(ComposeConfig(count=int(count / 0.8) + 8, seed=0, backgrounds=folder, max_size=side,
                                  looks=PRETRAIN_LOOKS), tmp / "ds", workers=max(1, cpu_count()), progress=no_progress)
    cfg = TrainConfig(arch="resnet18", size=args.size, crop=args.crop, bs=args.bs, pretrained="none",
                      workers=args.workers, augment=False)
    files, *_ = build_learner(tmp / "ds", tmp / "m1", cfg, log=lambda *a: None)
    fly, *_ = build_learner(tmp / "ds", tmp / "m2", cfg, log=lambda *a: None)
    ds = SyntheticStamps(count, args.size, backgrounds=load_backgrounds([folder], side), crop=args.crop or None)
    draw_designs()  # as a pretraining run does before its first epoch (not timed, as composing the files is not)
    kw = dict(batch_size=args.bs, num_workers=args.workers, collate_fn=collate)
    fly.dls = DataLoaders(Loader(ds, drop_last=True, **kw), Loader(ds, **kw), device=pick_device(None))
    rates = {"files": [], "fly": []}
    for _ in range(args.rounds):
        rates["files"].append(images_per_second(files))
        rates["fly"].append(images_per_second(fly))
    best = {k: max(v) for k, v in rates.items()}
    windows = f" on {args.crop} px windows" if args.crop else ""
    print(f"resnet18 at {args.size} px{windows}, batch {args.bs}, {args.workers} loader workers, best of {args.rounds}")
    print(f"pre-composed files : {best['files']:7.1f} images/s")
    print(f"composed on the fly: {best['fly']:7.1f} images/s")
    print(f"ratio              : {best['fly'] / best['files']:7.2f}   (goal >= 0.9)")


if __name__ == "__main__":
    main()
