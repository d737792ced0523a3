"""The second look, trained for real on a tiny set: what it learns from, and what it buys."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from stampcheck.dataset import ImageLabels, read_labels
from tests.conftest import photo
from train import verifier_training
from train.learner import TrainConfig, train


def ring(draw: ImageDraw.ImageDraw, box, ink, cross: bool) -> None:
    draw.ellipse(box, outline=ink, width=3)
    if cross:  # our stamp: the ring with a cross inside; the look-alike is the bare ring
        x0, y0, x1, y1 = box
        p = (x1 - x0) * 0.28
        draw.line((x0 + p, y0 + p, x1 - p, y1 - p), fill=ink, width=1)
        draw.line((x0 + p, y1 - p, x1 - p, y0 + p), fill=ink, width=1)


def look_alike_set(root: Path, n: int = 96, valid: int = 32, side: int = 160) -> Path:
    """Every image carries one ring: stamped images the crossed ring (labelled), stamp-free ones the
    bare ring, the only negative. At the detector's 64 px the cross is a pixel or two wide; on the
    verifier's crop it is plain (the detector sees the 160 px image at 64 px)."""
    (root / "images").mkdir(parents=True)
    rng = np.random.default_rng(0)
    rows = []
    for i in range(n):
        img = photo(1000 + i, (side, side))
        d = ImageDraw.Draw(img)
        r = int(rng.integers(14, 22))
        x0, y0 = (int(v) for v in rng.integers(4, side - 2 * r - 4, 2))
        box = (x0, y0, x0 + 2 * r, y0 + 2 * r)
        stamped = i % 2 == 0
        ring(d, box, (20, 30, 150), cross=stamped)
        img.save(root / "images" / f"{i:03d}.png")
        split = "valid" if i >= n - valid else "train"
        row = {"file": f"{i:03d}.png", "split": split, "background": f"b{i}", "has_stamp": int(stamped),
               "x0": "", "y0": "", "x1": "", "y1": "", "class": ""}
        if stamped:
            row.update(x0=box[0], y0=box[1], x1=box[2] + 1, y1=box[3] + 1, **{"class": "crossed"})
        rows.append(row)
    with open(root / "labels.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return root


@pytest.fixture(scope="module")
def look_alikes(tmp_path_factory) -> Path:
    return look_alike_set(tmp_path_factory.mktemp("look-alikes") / "ds")


def test_mined_negatives_come_from_stamp_free_images_and_positives_hold_the_stamp(look_alikes, tmp_path):
    """Mining with a real (untrained) detector: every crop labelled 'none' is cut from a stamp-free
    image, every positive overlaps a true box."""
    train(look_alikes, tmp_path / "m", TrainConfig(arch="resnet18", size=64, epochs=1, bs=16, workers=0,
                                                   verifier=False), log=lambda *a: None)
    from train.predict import Predictor
    from stampcheck.second_look import LookConfig

    items = [i for i in read_labels(look_alikes) if i.split == "train"]
    look = LookConfig(detail=160)
    crops, labels, photos = verifier_training.mine(Predictor(tmp_path / "m", verifier=False), look_alikes, items,
                                                    look, ["crossed"], seed=0, training=True)
    assert len(crops) == len(labels) and crops.shape[1:] == (3, 96, 96)
    assert set(labels.tolist()) == {0, 1}
    # which image each crop came from: candidates name their crop; jitters and random windows follow
    # in order, so walk the photos again
    by_image = []
    for item, p in zip(items, photos):
        n_jit = len(item.boxes) * verifier_training.JITTERS
        n_rand = 0 if item.has_stamp else 1
        by_image += [item] * (len(p["candidates"]) + n_jit + n_rand)
    assert len(by_image) == len(labels)
    for item, label in zip(by_image, labels):
        if label == 0:
            assert not item.has_stamp
        else:
            assert item.has_stamp


def test_two_stages_beat_one_where_a_look_alike_is_the_only_negative(look_alikes, tmp_path, monkeypatch):
    monkeypatch.setattr(verifier_training, "EPOCHS", 6)
    metrics = train(look_alikes, tmp_path / "m", TrainConfig(arch="resnet18", size=64, epochs=2, bs=16, workers=0),
                    log=lambda *a: None)
    one, two = metrics["one_stage"], metrics["final"]
    assert two["accuracy"] >= one["accuracy"] + 0.15, (one, two)
    assert two["accuracy"] >= 0.8
    config = json.loads((tmp_path / "m" / "config.json").read_text())
    assert config["verifier"]["threshold"] == two["threshold"] and (tmp_path / "m" / "verifier.pth").is_file()
    assert 0 < config["verifier"]["candidate_threshold"] <= config["threshold"]
