"""Training speed end to end against the model alone, in one run.

end to end:  fastai's training loop over the DataLoaders (decode, resize, augment, collate,
             forward, backward, step), train phase only
model alone: forward, backward and step on a batch already in memory (same batch, size, precision)

    python -m bench.train [--dataset DIR] [--arch resnet18] [--size 128] [--bs 16] [--batches 30]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
from fastai.callback.core import Callback

from stampcheck.compose.composer import ComposeConfig, compose_dataset
from stampcheck.device import autocast_dtype
from stampcheck.train.detect import plain
from stampcheck.train.learner import TrainConfig, build_learner


class TrainTimer(Callback):
    """Times the train phase of one epoch, skipping the first batches (warm-up)."""

    def __init__(self, skip: int = 3):
        self.skip, self.start, self.images = skip, None, 0

    def after_batch(self):
        if not self.training:
            return
        if self.iter + 1 == self.skip:
            self.start = time.perf_counter()
        elif self.iter + 1 > self.skip:
            self.images += self.xb[0].shape[0]

    def after_train(self):
        if self.dls.device.type == "cuda":
            torch.cuda.synchronize()
        self.seconds = time.perf_counter() - self.start
        raise __import__("fastai.callback.core", fromlist=["CancelFitException"]).CancelFitException()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", type=Path)
    ap.add_argument("--arch", default="resnet18")
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--bs", type=int, default=16)
    ap.add_argument("--batches", type=int, default=30)
    ap.add_argument("--workers", type=int)
    ap.add_argument("--no-mixed-precision", dest="mixed_precision", action="store_false")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-train-"))
    dataset = args.dataset
    if dataset is None:
        dataset = tmp / "ds"
        compose_dataset(ComposeConfig(count=int(args.bs * (args.batches + 4) / 0.8) + 8, seed=0,
                                      max_size=max(160, args.size * 3 // 2)), dataset, workers=2)
    cfg = TrainConfig(arch=args.arch, size=args.size, bs=args.bs, pretrained=False, workers=args.workers,
                      mixed_precision=args.mixed_precision)
    learn, dls, classes, device, _ = build_learner(dataset, tmp / "model", cfg, log=lambda *a: None)
    timer = TrainTimer()
    learn.logger = lambda *a: None  # only the figures below are printed
    with learn.no_bar():
        learn.fit(1, 1e-3, cbs=[timer])
    e2e = timer.images / timer.seconds

    model, loss_func, opt = learn.model, learn.loss_func, learn.opt
    xb, boxes, labels = (plain(t) for t in dls.train.one_batch())
    dtype = autocast_dtype(device, cfg.mixed_precision)  # as the learner trains
    if dtype is not None:
        xb = xb.contiguous(memory_format=torch.channels_last)
    model.train()
    steps = max(10, timer.images // args.bs)
    for i in range(steps + 3):
        if i == 3:
            if device.type == "cuda":
                torch.cuda.synchronize()
            t = time.perf_counter()
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            loss = loss_func(model(xb), boxes, labels)
        loss.backward()
        opt.step()
        opt.zero_grad()
    if device.type == "cuda":
        torch.cuda.synchronize()
    alone = steps * args.bs / (time.perf_counter() - t)
    print(f"device {device}, {args.arch} at {args.size} px, batch {args.bs}, loader workers {dls.train.num_workers}, "
          f"autocast {dtype or 'off (fp32)'}")
    print(f"end to end : {e2e:8.1f} images/s")
    print(f"model alone: {alone:8.1f} images/s")
    print(f"ratio      : {e2e / alone:8.2f}   (goal on a GPU >= 0.80)")


if __name__ == "__main__":
    main()
