"""The end of a training run: the best epoch reloaded, the size it predicts at and its threshold chosen
on valid, the second look added when asked, and model.pkl, metrics.json and the plots written."""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch
from fastai.learner import Learner

from stampcheck.atomic import atomic_path, atomic_write_json
from stampcheck.train.callbacks import MONITOR, unwrap
from stampcheck.train.config import TrainConfig
from stampcheck.train.data import ImagePath, predict_at
from stampcheck.train.plots import plot_curves, plot_samples
from stampcheck.train.views import choose_view

LEARNER_NAME = "model.pkl"  # fastai's export of the finished learner


def add_verifier(out: Path, dataset: Path, dls, classes: list[str], device, seconds: float | None,
                 cfg: TrainConfig, log=print) -> dict:
    """Train the second look on the finished detector in ``out`` and record it in config.json (how
    photos are judged: stampcheck.engine.torch_engine reads it) and metrics.json (both stages' valid figures)."""
    from stampcheck.train.verifier_training import train_verifier

    figures = train_verifier(out, dataset, list(dls.train.items), list(dls.valid.items), classes, device, seconds,
                             cfg.mixed_precision, cfg.seed, log)
    if figures is None:
        return json.loads((out / "metrics.json").read_text())
    config = json.loads((out / "config.json").read_text())
    config["verifier"] = {**figures["look"], "one_stage_valid": config.get("valid")}
    config["valid"] = figures["valid"]
    atomic_write_json(out / "config.json", config)
    metrics = json.loads((out / "metrics.json").read_text())
    metrics["verifier"] = figures
    metrics["one_stage"] = metrics["final"]
    metrics["final"] = figures["valid"]
    atomic_write_json(out / "metrics.json", metrics)
    return metrics


def finish(learn: Learner, out: Path, dataset: Path, classes: list[str], dls, device, train_seconds: float,
           interrupted: bool, log=print) -> dict:
    """Reload the best epoch, choose on valid the size it predicts at and the threshold, export, plot
    and write metrics."""
    config = json.loads((out / "config.json").read_text())
    model = unwrap(learn.model)
    model.load_state_dict(torch.load(out / "model.pth", map_location=device, weights_only=True))
    items = list(dls.valid.items)
    view = choose_view(out, config["train"]["size"], items, [ImagePath(dataset)(i) for i in items], MONITOR, device,
                       config["train"]["bs"], log)
    trained_threshold = view["views"][0]["threshold"]  # the training size is the first view
    config["size"], config["threshold"], config["valid"] = view["size"], view["threshold"], view["metrics"]
    final = view["metrics"]
    atomic_write_json(out / "config.json", config)
    history = [dict(zip(learn.recorder.metric_names[1:-1], [_num(v) for v in row]))
               for row in learn.recorder.values]
    metrics = {"final": final, "best_epoch": config.get("best_epoch"), "epochs": history,
               "monitor": MONITOR, "train_seconds": round(train_seconds, 1), "interrupted": interrupted,
               "device": str(device), "views": view["views"]}
    atomic_write_json(out / "metrics.json", metrics)
    plot_curves(history, out / "curves.png")
    plot_samples(model, dls.valid, len(classes), device, trained_threshold, out / "samples.png")
    learn.model = model
    export_learner(learn, config, out / LEARNER_NAME)
    log(f"valid: accuracy {final['accuracy']:.3f}, mean IoU {final['mean_iou']:.3f}, "
        f"IoU>=0.5 {final['iou50']:.3f} at {config['size']} px, threshold {config['threshold']:.2f} -> {out}")
    return metrics


def export_learner(learn: Learner, config: dict, path: Path) -> None:
    """Write ``learn`` as fastai's export (model.pkl), atomically, so that ``learn.predict`` judges as
    qa's detector does: at config.json's size and threshold (StampLoss.decodes)."""
    learn.loss_func.threshold = config["threshold"]
    predict_at(learn.dls, config["size"])
    with atomic_path(path) as tmp:
        learn.export(tmp)


def _num(v):
    v = float(v) if v is not None else float("nan")
    return None if math.isnan(v) else v
