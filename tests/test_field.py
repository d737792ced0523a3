"""bench.field: the field set's own stamp renderer, its labels, its scoring, and the round things kept
out of training."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from bench.field import FIELD_JSON, STAMPS, main, render, score_field, write_field
from bench.impression import SIZE_BANDS, random_look, stamp_photo
from bench.photos import round_things, split_photos
from stampcheck.compose.composer import ComposeConfig, compose_dataset
from stampcheck.compose.looks import Looks
from stampcheck.formats import read_labelled_set
from tests.conftest import SHARED_PHOTOS, photo
from stampcheck.train.learner import TrainConfig, train

TEST_STAMPS = ("round-seal", "passed-box", "logo-mark")
GREY = 200  # lighter than every ink, so every inked pixel changes it


def test_the_box_is_the_tight_box_of_the_ink():
    for name in TEST_STAMPS:
        stamp = Image.open(STAMPS / f"{name}.png")
        for seed in range(5):
            look = random_look(np.random.default_rng(seed))
            grey = Image.new("RGB", (400, 300), (GREY,) * 3)
            out, box, _ = stamp_photo(grey, stamp, look)
            ys, xs = np.nonzero(np.abs(np.asarray(out, dtype=int) - GREY).max(-1))
            assert (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1) == box, (name, seed, look)


def test_sizes_fall_in_the_band_asked_for():
    stamp = Image.open(STAMPS / "passed-box.png")  # not round: its box grows the most when turned
    rng = np.random.default_rng(3)
    for lo, hi in SIZE_BANDS:
        for _ in range(4):
            look = random_look(rng, (lo, hi))
            _, (x0, y0, x1, y1), _ = stamp_photo(Image.new("RGB", (360, 300), (GREY,) * 3), stamp, look)
            size = max(x1 - x0, y1 - y0) / 300
            assert lo <= size < hi and abs(size - look.size) * 300 <= 1.5, (look.size, size)


def test_same_seed_same_bytes_and_a_stamp_free_photo_is_the_same_whatever_the_stamp(tmp_path):
    photo(5, (420, 320)).save(tmp_path / "shelf.jpg", quality=92)
    seal, box_stamp = Image.open(STAMPS / "round-seal.png"), Image.open(STAMPS / "passed-box.png")
    stamped = {"file": "kept-out/000.jpg", "source": "shelf.jpg", "group": "kept-out", "band": 1}
    first, box, look = render(stamped, 7, seal, 0, tmp_path)
    assert render(stamped, 7, seal, 0, tmp_path) == (first, box, look)
    assert render(stamped, 7, seal, 1, tmp_path)[0] != first
    free = {**stamped, "band": None}
    assert render(free, 7, seal, 0, tmp_path)[0] == render(free, 7, box_stamp, 0, tmp_path)[0]
    assert render(free, 7, seal, 0, tmp_path)[1:] == (None, None)


def small_field(tmp_path):
    """A field set of 4 photos written by bench.field (the real one is 258 photos of the shared set)."""
    root = tmp_path / "photos"
    root.mkdir()
    for i in range(4):
        photo(20 + i, (400 - 20 * i, 300)).save(root / f"p{i}.jpg", quality=92)
    entries = [{"file": "kept-out/000.jpg", "source": "p0.jpg", "group": "kept-out", "band": 2},
               {"file": "kept-out/001.jpg", "source": "p1.jpg", "group": "kept-out", "band": None},
               {"file": "kept-out/002.jpg", "source": "p2.jpg", "group": "kept-out", "band": 0},
               {"file": "round-things/000.jpg", "source": "p3.jpg", "group": "round-things", "band": None}]
    folder = tmp_path / "field"
    write_field(folder, STAMPS / "round-seal.png", 0, entries, {"recipe": "test"}, root, log=lambda m: None)
    return folder


def test_the_field_set_is_a_labelled_set_evaluate_reads(tmp_path):
    folder = small_field(tmp_path)
    read = read_labelled_set(folder)
    assert read.kind == "labels.csv" and not read.unlabelled
    meta = {e["file"]: e for e in json.loads((folder / FIELD_JSON).read_text())["photos"]}
    assert [i.has_stamp for i in read.items] == [True, False, True, False]
    for item in read.items:
        assert item.background == meta[item.file]["source"]
        with Image.open(read.root / item.file) as img:
            assert img.format == "JPEG" and (item.width, item.height) == img.size
        if item.boxes:
            b = item.boxes[0]
            assert b.label == "round-seal" and 0 <= b.x0 < b.x1 <= item.width and 0 <= b.y0 < b.y1 <= item.height
            size = max(b.width, b.height) / min(item.width, item.height)
            assert size == pytest.approx(meta[item.file]["look"]["size"], abs=1e-3)


@pytest.mark.slow
def test_scores_are_evaluates_and_groups_are_counted(tmp_path):
    from stampcheck.qa.evaluate import evaluate

    folder = small_field(tmp_path)
    easy = Looks(scale=(0.3, 0.5), opacity=(0.9, 1.0), fade=(0.0, 0.1), blur=(0.0, 0.3))
    compose_dataset(ComposeConfig(count=16, seed=1, max_size=96, looks=easy), tmp_path / "ds")
    train(tmp_path / "ds", tmp_path / "model", TrainConfig(arch="resnet18", size=64, epochs=1, bs=8, pretrained="none",
                                                           workers=0, verifier=False), log=lambda *a: None)
    s = score_field(tmp_path / "model", folder)
    ev = evaluate(tmp_path / "model", folder)["metrics"]
    for key in ("accuracy", "precision", "recall", "mean_iou"):
        assert s[key] == pytest.approx(ev[key]), key
    flagged = {p["file"]: p["score"] >= s["threshold"] for p in s["photos"]}
    assert s["round_things"] == {"photos": 1, "flagged": int(flagged["round-things/000.jpg"])}
    assert s["stamp_free_kept_out"]["flagged"] == int(flagged["kept-out/001.jpg"])
    assert [b["stamped"] for b in s["by_size"]] == [1, 1] and s["photos_per_second"] > 0


def test_a_stamp_that_is_not_there_is_one_line_and_exit_2(tmp_path, capsys):
    assert main(["--stamp", "no-such-seal", "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "no-such-seal" in err and "round-seal" in err
    assert not (tmp_path / "out").exists()


@pytest.mark.skipif(not SHARED_PHOTOS.is_dir(), reason="needs ../shared/data/product-photos")
def test_round_things_are_kept_out_of_training():
    use, kept = split_photos()
    rounds = round_things()
    assert len(rounds) >= 40 and all(p.is_file() for p in rounds)
    assert not set(rounds) & set(use) and not set(rounds) & set(kept) and len(kept) == 200
