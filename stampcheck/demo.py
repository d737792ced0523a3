"""`stampcheck demo`: the whole pipeline offline, sized to finish in about 5 minutes.

compose (built-in stamp and scenes) -> train -> compose a held-out set on scenes the model never
saw (another seed and other scene numbers) -> evaluate it and run qa on its photos.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from compose.composer import ComposeConfig, compose_dataset
from compose.preview import write_preview
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
    bs: int
    lr: float


# Sized on 2 CPU cores (about 3.5 minutes of training) and on one H100 for the GPU plan.
CPU_PLAN = DemoPlan(train_images=800, holdout_images=200, max_size=192, arch="resnet18", size=128, epochs=8,
                    bs=16, lr=3e-3)
GPU_PLAN = DemoPlan(train_images=6000, holdout_images=500, max_size=320, arch="resnet34", size=224, epochs=12,
                    bs=64, lr=3e-3)
QUICK_PLAN = DemoPlan(train_images=24, holdout_images=8, max_size=96, arch="resnet18", size=64, epochs=1, bs=8,
                      lr=3e-3)


def run_demo(out: Path, quick: bool = False, log=print) -> dict:
    from stampcheck.evaluate import evaluate
    from stampcheck.qa import run_qa
    from train.learner import TrainConfig, train

    out = Path(out)
    plan = QUICK_PLAN if quick else GPU_PLAN if torch.cuda.is_available() else CPU_PLAN
    start = time.time()
    workers = max(1, min(cpu_count(), 8))
    log(f"[1/4] composing {plan.train_images} training images on built-in scenes")
    compose_dataset(ComposeConfig(count=plan.train_images, seed=0, max_size=plan.max_size),
                    out / "dataset", workers=workers, progress=progress_bar)
    write_preview(out / "dataset")
    log(f"[2/4] training {plan.arch} at {plan.size} px for {plan.epochs} epochs")
    train(out / "dataset", out / "model", TrainConfig(arch=plan.arch, size=plan.size, epochs=plan.epochs,
                                                      bs=plan.bs, lr=plan.lr, pretrained=False), log=log)
    log(f"[3/4] composing {plan.holdout_images} held-out photos on scenes the model never saw")
    compose_dataset(ComposeConfig(count=plan.holdout_images, seed=1, max_size=plan.max_size,
                                  builtin_offset=100_000, valid_share=0.0),
                    out / "holdout", workers=workers, progress=progress_bar)
    log("[4/4] evaluating the held-out set and running qa on its photos")
    report = evaluate(out / "model", out / "holdout", out / "holdout-eval", progress=progress_bar)
    qa = run_qa(out / "model", [str(out / "holdout" / "images")], out / "report", progress=progress_bar)
    m = report["metrics"]
    summary = {"held_out_accuracy": m["accuracy"], "held_out_mean_iou": m["mean_iou"], "held_out_iou50": m["iou50"],
               "precision": m["precision"], "recall": m["recall"], "ap50": m["ap50"], "photos": qa.photos,
               "stamped": qa.stamped, "missing": qa.missing, "unreadable": qa.unreadable,
               "seconds": round(time.time() - start, 1), "plan": plan.__dict__,
               "device": "cuda" if torch.cuda.is_available() else "cpu"}
    atomic_write_text(out / "demo.json", json.dumps(summary, indent=2))
    log(f"held-out: presence accuracy {m['accuracy']:.3f}, mean IoU {m['mean_iou']:.3f}, "
        f"IoU>=0.5 {m['iou50']:.3f}, AP50 {m['ap50']:.3f} on {qa.photos} photos "
        f"({qa.stamped} stamped, {qa.missing} without stamp found) in {summary['seconds']:.0f} s")
    log(f"report: {out / 'report' / 'index.html'}  model: {out / 'model'}  summary: {out / 'demo.json'}")
    return summary
