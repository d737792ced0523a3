"""`stampcheck demo`: the whole pipeline offline, sized to finish in about 4 minutes on 2 CPU cores.

compose (built-in stamp and scenes) -> train -> compose a held-out set on scenes the model never
saw (another seed and other scene numbers) -> evaluate it and run qa on its photos.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from stampcheck.compose.composer import ComposeConfig, compose_dataset
from stampcheck.compose.looks import Looks
from stampcheck.compose.preview import write_preview
from stampcheck.atomic import atomic_write_text
from stampcheck.device import cpu_count
from stampcheck.progress import progress_bar


@dataclass(frozen=True)
class DemoPlan:
    train_images: int
    holdout_images: int
    max_size: int
    arch: str
    size: int
    epochs: int
    minutes: float | None  # train to a time budget (the epochs are then chosen by measured speed)
    bs: int
    lr: float
    augment: bool
    looks: Looks
    crop: int | None = None  # train on crop x crop windows of the size x size image


# Training starts from the shipped base detector, which already finds stamps: the demo only has
# to teach it which one is ours, in a fixed time budget on the CPU. Many images seen a few times
# beat few images seen many times, and compositing a few thousand small images costs seconds.
CPU_LOOKS = Looks(scale=(0.2, 0.45), fade=(0.0, 0.2), opacity=(0.85, 1.0), ink_colours=("keep",),
                  hard_negative_share=0.2, multiply_share=0.2, blur=(0.0, 0.5), noise=(0.0, 3.0), glare_share=0.1,
                  rotation=30.0, perspective=0.1, occlude_share=0.0)
# 160 px seen through 128 px windows: boxes as tight as 160 px gives at 128 px's cost per step
# (held-out mean IoU 0.83 against 0.74 at 128 px whole; BENCHMARKS.md).
CPU_PLAN = DemoPlan(train_images=2000, holdout_images=400, max_size=160, arch="resnet18", size=160, epochs=0,
                    minutes=3.5, bs=32, lr=2e-3, augment=False, looks=CPU_LOOKS, crop=128)
GPU_PLAN = DemoPlan(train_images=8000, holdout_images=500, max_size=320, arch="resnet18", size=256, epochs=0,
                    minutes=4.0, bs=64, lr=2e-3, augment=True, looks=Looks())
QUICK_PLAN = DemoPlan(train_images=24, holdout_images=8, max_size=96, arch="resnet18", size=64, epochs=1,
                      minutes=None, bs=8, lr=1e-3, augment=False, looks=CPU_LOOKS)


def run_demo(out: Path, quick: bool = False, log=print) -> dict:
    from stampcheck.qa.batch import run_qa
    from stampcheck.qa.evaluate import evaluate
    from stampcheck.train.learner import TrainConfig, train

    out = Path(out)
    plan = QUICK_PLAN if quick else GPU_PLAN if torch.cuda.is_available() else CPU_PLAN
    start = time.time()
    workers = max(1, min(cpu_count(), 8))
    log(f"[1/4] composing {plan.train_images} training images on built-in scenes")
    compose_dataset(ComposeConfig(count=plan.train_images, seed=0, max_size=plan.max_size, looks=plan.looks,
                                  valid_share=0.12), out / "dataset", workers=workers, progress=progress_bar)
    write_preview(out / "dataset")
    budget = f"for {plan.minutes:g} minutes" if plan.minutes else f"for {plan.epochs} epochs"
    log(f"[2/4] training {plan.arch} at {plan.size} px {budget}, from the base detector")
    train(out / "dataset", out / "model", TrainConfig(arch=plan.arch, size=plan.size, epochs=plan.epochs,
                                                      minutes=plan.minutes, bs=plan.bs, lr=plan.lr, crop=plan.crop,
                                                      augment=plan.augment, pretrained="base"), log=log,
          overwrite=True)  # the demo's own folder: a second demo replaces the first one's model
    log(f"[3/4] composing {plan.holdout_images} held-out photos on scenes the model never saw")
    compose_dataset(ComposeConfig(count=plan.holdout_images, seed=1, max_size=plan.max_size, looks=plan.looks,
                                  builtin_offset=100_000, valid_share=0.0),
                    out / "holdout", workers=workers, progress=progress_bar)
    log("[4/4] evaluating the held-out set and running qa on its photos")
    report = evaluate(out / "model", out / "holdout", out / "holdout-eval", progress=progress_bar)
    qa = run_qa(out / "model", [str(out / "holdout" / "images")], out / "report", progress=progress_bar)
    m = report["metrics"]
    summary = {"held_out_accuracy": m["accuracy"], "held_out_mean_iou": m["mean_iou"], "held_out_iou50": m["iou50"],
               "precision": m["precision"], "recall": m["recall"], "ap50": m["ap50"], "photos": qa.photos,
               "stamped": qa.stamped, "missing": qa.missing, "unreadable": qa.unreadable,
               "seconds": round(time.time() - start, 1),
               "plan": {**plan.__dict__, "looks": plan.looks.to_dict()},
               "device": "cuda" if torch.cuda.is_available() else "cpu"}
    atomic_write_text(out / "demo.json", json.dumps(summary, indent=2))
    log(f"held-out: presence accuracy {m['accuracy']:.3f}, mean IoU {m['mean_iou']:.3f}, "
        f"IoU>=0.5 {m['iou50']:.3f}, AP50 {m['ap50']:.3f} on {qa.photos} photos "
        f"({qa.stamped} stamped, {qa.missing} without stamp found) in {summary['seconds']:.0f} s")
    log(f"report: {out / 'report' / 'index.html'}  model: {out / 'model'}  summary: {out / 'demo.json'}")
    return summary
