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
from stampcheck.train import verifier_training
from stampcheck.train.learner import TrainConfig, train


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


@pytest.mark.slow
def test_mined_negatives_come_from_stamp_free_images_and_positives_hold_the_stamp(look_alikes, tmp_path):
    """Mining with a real (untrained) detector: every crop labelled 'none' is cut from a stamp-free
    image, every positive overlaps a true box."""
    train(look_alikes, tmp_path / "m", TrainConfig(arch="resnet18", size=64, epochs=1, bs=16, workers=0,
                                                   verifier=False), log=lambda *a: None)
    from stampcheck.engine.torch_engine import Predictor
    from stampcheck.engine.second_look import LookConfig

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


@pytest.fixture(scope="module")
def two_stage(look_alikes, tmp_path_factory):
    """A two-stage model of the look-alike set: the detector for 2 epochs, the verifier for 15."""
    patch = pytest.MonkeyPatch()
    patch.setattr(verifier_training, "EPOCHS", 15)
    out = tmp_path_factory.mktemp("two-stage") / "model"
    try:
        metrics = train(look_alikes, out, TrainConfig(arch="resnet18", size=64, epochs=2, bs=16, workers=0,
                                                      verifier=True),
                        log=lambda *a: None)
    finally:
        patch.undo()
    return out, metrics


def cli(*args, env=None, cwd=None):
    return subprocess.run([sys.executable, "-m", "stampcheck", *map(str, args)], capture_output=True, text=True,
                          env=env, cwd=cwd, timeout=600)


def records(report: Path) -> dict:
    return {Path(r["file"]).name: r for r in map(json.loads, (report / "results.jsonl").read_text().splitlines())}


@pytest.mark.slow
def test_two_stages_beat_one_where_a_look_alike_is_the_only_negative(two_stage):
    out, metrics = two_stage
    one, two = metrics["one_stage"], metrics["final"]
    assert two["accuracy"] >= one["accuracy"] + 0.1, (one, two)
    assert two["precision"] > one["precision"], (one, two)
    config = json.loads((out / "config.json").read_text())
    assert config["verifier"]["threshold"] == two["threshold"] and (out / "verifier.pth").is_file()
    assert 0 < config["verifier"]["candidate_threshold"] <= config["threshold"]
    assert config["valid"] == two and config["verifier"]["one_stage_valid"] == one


@pytest.mark.slow
def test_qa_torch_and_onnx_give_the_same_verdicts_and_onnx_needs_no_torch(two_stage, look_alikes, tmp_path):
    out, _ = two_stage
    r = cli("export", out)
    assert r.returncode == 0, r.stdout + r.stderr
    assert (out / "model.onnx").is_file() and (out / "model.verifier.onnx").is_file()
    torch_run = cli("qa", out, look_alikes / "images", "--out", tmp_path / "torch")
    assert torch_run.returncode in (0, 1) and "second look" in torch_run.stdout, torch_run.stdout + torch_run.stderr
    # the dispatch PC's install: onnxruntime, no torch
    script = ("import sys; sys.modules['torch'] = None; sys.modules['fastai'] = None; "
              "from stampcheck.app.cli import main; sys.argv = ['stampcheck'] + sys.argv[1:]; main()")
    onnx_run = subprocess.run([sys.executable, "-c", script, "qa", str(out), str(look_alikes / "images"),
                               "--engine", "onnx", "--out", str(tmp_path / "onnx")], capture_output=True, text=True,
                              timeout=600)
    assert onnx_run.returncode == torch_run.returncode, onnx_run.stdout + onnx_run.stderr
    a, b = records(tmp_path / "torch"), records(tmp_path / "onnx")
    assert a.keys() == b.keys() and len(a) == 96
    for name in a:
        assert a[name]["has_stamp"] == b[name]["has_stamp"], name
        assert abs(a[name]["score"] - b[name]["score"]) <= 1e-3 and a[name]["detector_score"] is not None


@pytest.mark.slow
def test_a_one_stage_model_folder_still_runs_and_says_so(two_stage, look_alikes, tmp_path):
    """A folder as trained before the verifier (or with --no-verifier): no verifier.pth, no section."""
    import shutil

    out, _ = two_stage
    old = tmp_path / "old"
    old.mkdir()
    for name in ("model.pth", "config.json"):
        shutil.copy(out / name, old / name)
    config = json.loads((old / "config.json").read_text())
    config.pop("verifier")
    (old / "config.json").write_text(json.dumps(config))
    r = cli("qa", old, look_alikes / "images", "--out", tmp_path / "r")
    assert r.returncode in (0, 1) and "Traceback" not in r.stdout + r.stderr, r.stdout + r.stderr
    assert (r.stdout + r.stderr).count("this model has no verifier") == 1 and "one stage" in r.stdout
    assert all(rec["detector_score"] is None for rec in records(tmp_path / "r").values())


@pytest.mark.slow
def test_the_python_api_judges_as_qa_does(two_stage, look_alikes, tmp_path):
    from stampcheck.qa.batch import run_qa
    from stampcheck.app.api import Detector

    out, _ = two_stage
    run_qa(out, [str(look_alikes / "images")], tmp_path / "r")
    qa = records(tmp_path / "r")
    detector = Detector(out)
    for name in sorted(qa)[:12]:
        found = detector.predict(look_alikes / "images" / name)
        assert bool(found) == qa[name]["has_stamp"], name
        if found:
            assert abs(found[0].score - qa[name]["detections"][0]["score"]) <= 1e-3


@pytest.mark.slow
def test_the_report_shows_the_crop_the_verifier_saw_beside_the_detectors_score(two_stage, look_alikes, tmp_path):
    from stampcheck.qa.batch import run_qa
    from tests.chromium import Chromium, chromium_path

    if not chromium_path():
        pytest.skip("no Chromium (Debian's chromium package)")
    out, _ = two_stage
    run_qa(out, [str(look_alikes / "images")], tmp_path / "r")
    stamped = [r for r in records(tmp_path / "r").values() if r["has_stamp"]]
    assert stamped
    with Chromium(tmp_path / "profile") as b:
        b.navigate((tmp_path / "r" / "index.html").as_uri())
        b.wait_for("document.querySelectorAll('.card').length > 0")
        b.click("#stamped")
        b.click(".card")
        b.wait_for("document.querySelector('#info .lookcrop') !== null")
        text = b.js("document.getElementById('info').innerText")
        assert "second look: verifier" in text and "detector alone" in text
        crop = b.js("(function () { var s = document.querySelector('#info .lookcrop').style; "
                    "return [s.backgroundImage, s.backgroundSize, s.backgroundPosition]; })()")
        assert "images/" in crop[0] and crop[1].endswith("px") and crop[2].endswith("px")
        b.screenshot(tmp_path / "report.png")


# ---- a two-stage folder built by hand (untrained weights): for what must hold whatever the weights ----

@pytest.fixture(scope="module")
def hand_made(tmp_path_factory) -> Path:
    """config.json, model.pth and verifier.pth as train writes them, from untrained networks."""
    from dataclasses import asdict

    import torch

    from stampcheck.engine.second_look import LookConfig
    from stampcheck.train.model import build_model
    from stampcheck.engine.verifier import from_detector

    out = tmp_path_factory.mktemp("hand-made") / "model"
    out.mkdir()
    detector, _ = build_model("resnet18", 1, pretrained="none")
    torch.save(detector.state_dict(), out / "model.pth")
    torch.save(from_detector(detector, 1).state_dict(), out / "verifier.pth")
    config = {"arch": "resnet18", "size": 64, "classes": ["seal"], "mean": [0.485, 0.456, 0.406],
              "std": [0.229, 0.224, 0.225], "threshold": 0.5, "verifier": asdict(LookConfig())}
    (out / "config.json").write_text(json.dumps(config))
    return out


def quick_cli(*args):
    """The CLI where a hang is the defect: failing in two minutes, not ten."""
    return subprocess.run([sys.executable, "-m", "stampcheck", *map(str, args)], capture_output=True, text=True,
                          timeout=120)


def copy_model(src: Path, dst: Path) -> Path:
    import shutil

    dst.mkdir()
    for name in ("config.json", "model.pth", "verifier.pth"):
        shutil.copy(src / name, dst / name)
    return dst


@pytest.mark.slow
def test_export_never_replaces_a_file_of_someone_elses_where_the_verifiers_graph_goes(hand_made, tmp_path):
    import os

    model = copy_model(hand_made, tmp_path / "m")
    notes = model / "model.verifier.onnx"
    notes.write_text("my notes")
    r = quick_cli("export", model)
    assert r.returncode == 2 and "model.verifier.onnx exists and is not an earlier stampcheck export" in r.stderr, \
        r.stdout + r.stderr
    assert notes.read_text() == "my notes" and not (model / "model.onnx").exists()
    # named pipes there are never opened (that would block) nor replaced
    os.mkfifo(tmp_path / "x.verifier.onnx")
    r = quick_cli("export", model, "--out", tmp_path / "x.onnx")
    assert r.returncode == 2 and (tmp_path / "x.verifier.onnx").is_fifo() and not (tmp_path / "x.onnx").exists()
    os.mkfifo(tmp_path / "y.onnx")
    r = quick_cli("export", model, "--out", tmp_path / "y.onnx")
    assert r.returncode == 2 and "y.onnx exists and is not an earlier stampcheck export" in r.stderr
    assert "Traceback" not in r.stdout + r.stderr


class RunsCode:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


@pytest.mark.slow
def test_a_verifier_pth_that_is_a_pipe_or_runs_code_is_one_line_and_never_read_as_code(hand_made, tmp_path):
    import os

    import torch

    from stampcheck.engine.config import ModelError
    from stampcheck.engine.verifier import load_verifier

    model = copy_model(hand_made, tmp_path / "m")
    config = json.loads((model / "config.json").read_text())
    torch.save({"w": RunsCode(tmp_path / "ran")}, model / "verifier.pth")
    with pytest.raises(ModelError, match="verifier.pth is not a torch weights file") as e:
        load_verifier(model, config)
    assert not (tmp_path / "ran").exists() and "--no-verifier" not in str(e.value)
    (model / "verifier.pth").unlink()
    os.mkfifo(model / "verifier.pth")
    Image.new("RGB", (64, 64), (200, 200, 200)).save(tmp_path / "p.png")
    r = quick_cli("qa", model, tmp_path / "p.png", "--out", tmp_path / "r")
    assert r.returncode == 2 and "verifier.pth is not a regular file (a named pipe)" in r.stderr, r.stdout + r.stderr
    assert "Traceback" not in r.stdout + r.stderr and not (tmp_path / "r").exists()


@pytest.mark.slow
def test_the_onnx_engine_holds_the_verifiers_graph_to_its_config_and_never_opens_a_pipe(hand_made, tmp_path):
    import os
    import shutil

    import onnx

    from stampcheck.engine.config import ModelError
    from stampcheck.engine.onnx import OnnxModel
    from stampcheck.train.export import export

    model = copy_model(hand_made, tmp_path / "m")
    export(model)
    usb = tmp_path / "usb"
    usb.mkdir()
    # another verifier size in the detector's metadata (the digest it was made from unchanged)
    detector = onnx.load(str(model / "model.onnx"))
    for prop in detector.metadata_props:
        if prop.key == "stampcheck":
            meta = json.loads(prop.value)
            meta["config"]["verifier"]["size"] = 128
            prop.value = json.dumps(meta)
    onnx.save(detector, str(usb / "model.onnx"))
    shutil.copy(model / "model.verifier.onnx", usb / "model.verifier.onnx")
    with pytest.raises(ModelError, match=r"model.verifier.onnx: its graph takes crops .* says 128 px crops"):
        OnnxModel(usb)
    shutil.copy(model / "model.onnx", usb / "model.onnx")
    OnnxModel(usb)  # as exported: both files agree
    (usb / "model.verifier.onnx").unlink()
    with pytest.raises(ModelError, match="its verifier .*model.verifier.onnx is not beside it"):
        OnnxModel(usb)
    os.mkfifo(usb / "model.verifier.onnx")
    Image.new("RGB", (64, 64), (200, 200, 200)).save(tmp_path / "p.png")
    r = quick_cli("qa", usb, tmp_path / "p.png", "--engine", "onnx", "--out", tmp_path / "r")
    assert r.returncode == 2 and "model.verifier.onnx is not a regular file" in r.stderr, r.stdout + r.stderr


def test_the_detail_size_train_chooses_is_one_the_config_check_accepts(tmp_path):
    """Crops are cut at the training images' long side; images longer or shorter than a config may
    ask for must not make a model that no command can load."""
    from dataclasses import asdict

    from stampcheck.engine.config import verifier_problem
    from stampcheck.engine.second_look import LookConfig

    (tmp_path / "images").mkdir()
    for name, size in (("long.png", (9000, 40)), ("small.png", (20, 18))):
        Image.new("RGB", size).save(tmp_path / "images" / name)
    for name in ("long.png", "small.png"):
        detail = verifier_training._detail_size(tmp_path, [ImageLabels(name, "train", "b")])
        assert verifier_problem(asdict(LookConfig(detail=detail))) is None, (name, detail)
