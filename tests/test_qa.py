import contextlib
import csv
import io
import json
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from stampcheck.compose.composer import ComposeConfig, compose_dataset
from stampcheck.qa.evaluate import coco_ap, coco_detections
from stampcheck.dataset import coco_dict, read_labels
from tests.conftest import photo, write_exif_rotated
from tests.test_train import EASY
from stampcheck.train.learner import TrainConfig, train
from stampcheck.engine.scores import ImageResult, best_threshold, by_stamp_size, summarise
from stampcheck.train.metrics import DetectionMetric, detection_metrics

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    root = tmp_path_factory.mktemp("qa")
    compose_dataset(ComposeConfig(count=24, seed=2, max_size=96, looks=EASY), root / "ds")
    train(root / "ds", root / "model", TrainConfig(verifier=False, arch="resnet18", size=64, epochs=1, bs=8, pretrained=False,
                                                   workers=0))
    return root


@pytest.fixture(scope="module")
def photo_folder(tiny_model):
    folder = tiny_model / "photos"
    folder.mkdir()
    ds = tiny_model / "ds" / "images"
    for f in sorted(ds.iterdir())[:3]:
        shutil.copy(f, folder / f.name)
    (folder / "corrupt.jpg").write_bytes((ds / "000000.jpg").read_bytes()[:300])
    (folder / "notes.txt").write_text("shift 2: line stopped at 14:00")
    photo(5).convert("CMYK").save(folder / "cmyk.jpg")
    upright = photo(6, (300, 200))
    upright.save(folder / "upright.png")
    write_exif_rotated(folder / "rotated.png", upright)
    photo(7, (4000, 3000)).save(folder / "large.jpg", quality=85)
    return folder


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "stampcheck", *map(str, args)], capture_output=True, text=True,
                          cwd=ROOT, timeout=300)


def rows_by_file(report: Path):
    rows = {}
    for r in csv.DictReader(open(report / "results.csv")):
        rows.setdefault(Path(r["file"]).name, []).append(r)
    return rows


@pytest.mark.slow
def test_qa_reports_every_photo_with_statuses_and_exit_codes(tiny_model, photo_folder, tmp_path):
    r = run_cli("qa", tiny_model / "model", photo_folder, "--out", tmp_path / "all", "--threshold", "0", "--workers", "1")
    # threshold 0: every readable photo "has" a stamp, but one could not be read, which is no pass;
    # the shift notes beside the photos are no photo: skipped, and named
    assert r.returncode == 3, r.stdout + r.stderr
    rows = rows_by_file(tmp_path / "all")
    assert set(rows) == {p.name for p in photo_folder.iterdir()} - {"notes.txt"}
    assert "not photos by name or content: 1 (" in r.stderr and "notes.txt" in r.stderr, r.stderr
    assert len(rows["corrupt.jpg"]) == 1 and rows["corrupt.jpg"][0]["status"] == "error" and rows["corrupt.jpg"][0]["error"]
    for name in ("cmyk.jpg", "upright.png", "rotated.png", "large.jpg", "000000.jpg"):
        assert all(row["status"] == "ok" and row["has_stamp"] == "1" for row in rows[name])
    # Boxes are in the photo's own upright pixels: the EXIF-rotated copy gives the same boxes.
    assert [(x["x0"], x["y0"], x["x1"], x["y1"]) for x in rows["rotated.png"]] == \
           [(x["x0"], x["y0"], x["x1"], x["y1"]) for x in rows["upright.png"]]
    sizes = {json.loads(line)["file"].split("/")[-1]: (json.loads(line)["width"], json.loads(line)["height"])
             for line in open(tmp_path / "all" / "results.jsonl")}
    assert sizes["rotated.png"] == (300, 200) and sizes["large.jpg"] == (4000, 3000)
    assert max(float(x["x1"]) for x in rows["large.jpg"]) > 300  # mapped back to full-size pixels

    r = run_cli("qa", tiny_model / "model", photo_folder, "--out", tmp_path / "none", "--threshold", "1")
    assert r.returncode == 1  # no stamp found anywhere
    assert "missing" in r.stdout
    # the console names the first three missing their stamp (sorted as the table is), counts the rest
    readable = sorted(str(p) for p in photo_folder.iterdir() if p.name not in ("notes.txt", "corrupt.jpg"))
    line = next(x for x in r.stderr.splitlines() if x.startswith("missing their stamp"))
    assert line.startswith(f"missing their stamp {len(readable)} ({readable[0]}, {readable[1]}, {readable[2]}; "
                           f"and {len(readable) - 3} more (the report lists them))"), r.stderr
    for args in ((tiny_model / "model", tmp_path / "nope"), (tmp_path / "no-model", photo_folder)):
        r = run_cli("qa", *args, "--out", tmp_path / "x")  # one line, nothing written
        output = r.stdout + r.stderr
        assert r.returncode == 2 and output.startswith("error:") and len(output.strip().splitlines()) == 1, output
        assert not (tmp_path / "x").exists()


def test_summarise_matches_hand_computed_case():
    results = [ImageResult(True, 0.9, 0.8), ImageResult(True, 0.4, 0.6), ImageResult(True, 0.7, 0.3),
               ImageResult(False, 0.2, 0.0), ImageResult(False, 0.6, 0.0)]
    m = summarise(results, 0.5)
    # predicted: T F T F T; truth: T T T F F -> TP 2, FP 1, FN 1, TN 1
    assert m["accuracy"] == pytest.approx(3 / 5)
    assert m["precision"] == pytest.approx(2 / 3) and m["recall"] == pytest.approx(2 / 3)
    assert m["f1"] == pytest.approx(2 / 3)
    assert m["mean_iou"] == pytest.approx((0.8 + 0.6 + 0.3) / 3)
    assert m["iou50"] == pytest.approx(2 / 3)
    assert m["correct"] == pytest.approx(2 / 5)  # image 1 (hit, IoU .8) and image 4 (true negative)
    best = best_threshold(results)
    # accuracy 4/5 for thresholds in (0.2, 0.4] and (0.6, 0.7], 3/5 elsewhere: more than one standard
    # error (0.18) below, so only the 4/5 thresholds count, and the strictest of them wins
    assert best == pytest.approx(0.7) and summarise(results, best)["accuracy"] == pytest.approx(4 / 5)


def test_threshold_takes_the_strictest_the_valid_set_cannot_tell_from_the_best():
    """One faint stamp at 0.15 among 200 images: catching it is one image of accuracy, within one
    standard error of the best, so the threshold stays high rather than dropping to 0.15, where real
    photos the valid set lacks would pass the gate. A hundred such stamps are not noise: then the
    threshold goes down to them."""
    clear = [ImageResult(True, 0.97, 0.9)] * 95 + [ImageResult(True, 0.02, 0.0)] * 4 \
        + [ImageResult(False, 0.01, 0.0)] * 100
    one_faint = clear + [ImageResult(True, 0.15, 0.8)]
    assert summarise(one_faint, 0.15)["accuracy"] > summarise(one_faint, 0.95)["accuracy"]  # the single best
    assert best_threshold(one_faint) == pytest.approx(0.95)
    many_faint = clear + [ImageResult(True, 0.15, 0.8)] * 100
    assert best_threshold(many_faint) == pytest.approx(0.15)
    assert best_threshold([]) == 0.5  # an epoch without valid images
    # a classifier's threshold: of those the set cannot tell apart, the nearest its decision point
    assert best_threshold(one_faint, prefer=0.5) == pytest.approx(0.5)
    assert best_threshold(many_faint, prefer=0.5) == pytest.approx(0.15)  # 0.5 is not among them


def test_epoch_metrics_judge_each_epoch_at_its_own_best_threshold():
    """A model whose stamps all score 0.1 and whose empty images score 0.02 separates them
    perfectly: the epoch's metrics say so, and name the threshold, instead of 'nothing found'."""
    metrics = detection_metrics(1)
    metrics[0].reset()
    shared = metrics[0].shared
    shared.results = [ImageResult(True, 0.1, 0.9)] * 5 + [ImageResult(False, 0.02, 0.0)] * 5
    values = {m.name: m.value for m in metrics}
    assert values["accuracy"] == 1.0 and values["recall"] == 1.0 and values["correct"] == 1.0, values
    assert 0.02 < values["threshold"] <= 0.1
    assert summarise(shared.results, 0.5)["recall"] == 0.0  # what a fixed 0.5 would have logged
    metrics[0].reset()  # the next epoch starts empty and chooses again
    shared.results = [ImageResult(True, 0.9, 0.9), ImageResult(False, 0.2, 0.0)]
    assert 0.2 < metrics[-1].value <= 0.9
    # a model.pkl exported before the metrics shared their results still loads and validates
    old = DetectionMetric.__new__(DetectionMetric)
    old.__dict__.update(key="recall", n_classes=1, threshold=0.5, results=[])
    old = pickle.loads(pickle.dumps(old))
    old.reset()
    old.shared.results = [ImageResult(True, 0.1, 0.9), ImageResult(False, 0.02, 0.0)]
    assert old.collects and old.value == 1.0


def test_coco_ap_is_one_for_perfect_and_lower_for_shifted(tiny_model):
    items = [i for i in read_labels(tiny_model / "ds") if i.boxes]
    for i in items:
        i.width, i.height = 96, 96
    gt = coco_dict(items, ["qc-passed"])
    perfect = [[(0.9, b.label, list(b.as_tuple())) for b in i.boxes] for i in items]
    assert coco_ap(gt, coco_detections(perfect, ["qc-passed"]))["ap50"] == pytest.approx(1.0)
    shifted = [[(0.9, b.label, [b.x0 + b.width, b.y0, b.x1 + b.width, b.y1]) for b in i.boxes] for i in items]
    assert coco_ap(gt, coco_detections(shifted, ["qc-passed"]))["ap50"] < 0.2


def test_by_stamp_size_groups_stamped_images_by_their_largest_stamp():
    results = [ImageResult(True, 0.9, 0.8), ImageResult(True, 0.3, 0.1), ImageResult(True, 0.8, 0.6),
               ImageResult(True, 0.7, 0.9), ImageResult(False, 0.9, 0.0)]
    sizes = [0.05, 0.11, 0.25, 0.5, 0.0]  # the unstamped image counts in no group
    rows = by_stamp_size(results, sizes, 0.5)
    assert [r["size"] for r in rows] == ["0.00-0.12", "0.20-0.30", ">=0.30"]  # empty groups are left out
    assert [r["stamped"] for r in rows] == [2, 1, 1]
    assert rows[0]["recall"] == pytest.approx(0.5) and rows[0]["mean_iou"] == pytest.approx(0.45)
    assert rows[0]["iou50"] == pytest.approx(0.5) and rows[2]["mean_iou"] == pytest.approx(0.9)


@pytest.mark.slow
def test_evaluate_writes_metrics_and_curve(tiny_model, tmp_path):
    r = run_cli("evaluate", tiny_model / "model", tiny_model / "ds", "--out", tmp_path, "--workers", "0")
    assert r.returncode == 0, r.stdout + r.stderr
    report = json.loads((tmp_path / "metrics.json").read_text())
    m = report["metrics"]
    assert m["images"] == 24 and 0 <= m["accuracy"] <= 1 and "ap50" in m and len(report["sweep"]) > 10
    assert sum(row["stamped"] for row in m["by_stamp_size"]) == m["stamped"]
    assert "of the short side" in r.stdout
    assert (tmp_path / "pr_curve.png").stat().st_size > 1000
    # the labels and every detection down to a low score as COCO files: pycocotools' own evaluation
    # of them gives evaluate's AP
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(tmp_path / "coco_gt.json"))
        ev = COCOeval(gt, gt.loadRes(str(tmp_path / "coco_detections.json")), "bbox")
        ev.evaluate(); ev.accumulate(); ev.summarize()
    dets = json.loads((tmp_path / "coco_detections.json").read_text())
    threshold = json.loads((tiny_model / "model" / "config.json").read_text())["threshold"]
    assert min(d["score"] for d in dets) < threshold  # not only those over the threshold: AP needs them all
    assert (round(ev.stats[0], 3), round(ev.stats[1], 3)) == (round(m["ap"], 3), round(m["ap50"], 3))
    assert ev.stats[1] > 0


@pytest.mark.slow
def test_demo_runs_end_to_end_in_quick_mode_beside_a_users_own_train_qa_and_compose(tmp_path):
    """Run from a notebook's folder holding train.py, qa.py and compose.py of the user's own (Python puts
    the working folder first on its path): the demo, fastai's load_learner + predict on its model.pkl,
    and qa never import them; a model.pkl fastai cannot load is written anew by export --format fastai."""
    for name in ("train.py", "qa.py", "compose.py"):
        (tmp_path / name).write_text(f"raise SystemExit('the user\'s own {name} was imported')\n")

    def run(*args):
        return subprocess.run([sys.executable, *map(str, args)], capture_output=True, text=True, cwd=tmp_path,
                              timeout=300)

    r = run("-m", "stampcheck", "demo", "--quick", "--out", "demo")
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    out = tmp_path / "demo"
    summary = json.loads((out / "demo.json").read_text())
    assert summary["photos"] == 8 and 0 <= summary["held_out_accuracy"] <= 1
    assert (out / "report" / "index.html").exists() and (out / "model" / "model.pkl").exists()
    assert "held-out" in r.stdout
    photo(3).save(tmp_path / "photo.jpg")
    predict = ("import json, warnings; warnings.simplefilter('ignore'); from fastai.learner import load_learner; "
               "l = load_learner('demo/model/model.pkl'); print(json.dumps(l.predict('photo.jpg')[2].tolist()))")
    r = run("-c", predict)
    assert r.returncode == 0, r.stderr[-2000:]
    raw = json.loads(r.stdout.splitlines()[-1])
    r = run("-m", "stampcheck", "qa", "demo/model", "photo.jpg", "--out", "qa")
    assert r.returncode in (0, 1) and (tmp_path / "qa" / "results.csv").exists(), r.stdout[-2000:] + r.stderr[-2000:]
    (out / "model" / "model.pkl").write_bytes(b"not a pickle fastai can load")
    r = run("-m", "stampcheck", "export", "demo/model", "--format", "fastai")
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    r = run("-c", predict)
    assert r.returncode == 0 and json.loads(r.stdout.splitlines()[-1]) == raw, r.stderr[-2000:]
    mine = tmp_path / "mine.pkl"
    mine.write_bytes(b"the user's")
    r = run("-m", "stampcheck", "export", "demo/model", "--format", "fastai", "--out", mine)
    assert r.returncode == 2 and mine.read_bytes() == b"the user's", r.stdout + r.stderr
