import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pycocotools.coco import COCO

from stampcheck.compose.composer import ComposeConfig, compose_dataset
from stampcheck.compose.looks import Looks, compose_image, ink_colour
from stampcheck.compose.occlude import DEPTH, add_occluder
from stampcheck.compose.preview import write_preview
from stampcheck.compose.stamps import DEFAULT_STAMP, StampError, load_stamp
from stampcheck.dataset import read_labels, yolo_to_box
from stampcheck.images import open_checked
from tests.conftest import photo, write_bad_files, write_odd_good_files

ROOT = Path(__file__).resolve().parents[1]
# Looks that change nothing but the stamp itself, so a diff against the plain background shows
# exactly the stamp's visible pixels.
CLEAN = dict(noise=(0.0, 0.0), brightness=(1.0, 1.0), glare_share=0.0, ink_colours=("#000000",),
             negative_share=0.0, hard_negative_share=0.0, multi_share=0.0, occlude_share=0.0)


def diff_box(img: Image.Image, bg_value=255, threshold=26):
    diff = bg_value - np.asarray(img, dtype=np.int16).min(axis=2)
    ys, xs = np.nonzero(diff >= threshold)
    return (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1) if len(xs) else None


@pytest.mark.parametrize("multiply", [0.0, 1.0])
def test_boxes_are_tight_around_visible_pixels(multiply):
    stamp = load_stamp(DEFAULT_STAMP)
    looks = Looks(**CLEAN, multiply_share=multiply, truncate_share=0.5)
    clipped = 0
    for seed in range(40):
        bg = Image.new("RGB", (300, 220), "white")
        img, boxes, _ = compose_image(bg, [stamp], looks, np.random.default_rng(seed))
        assert len(boxes) == 1
        b = boxes[0]
        expected = diff_box(img)
        assert expected is not None
        assert np.abs(np.array(b.as_tuple()) - np.array(expected)).max() <= 1, (seed, b, expected)
        assert 0 <= b.x0 < b.x1 <= 300 and 0 <= b.y0 < b.y1 <= 220
        clipped += b.x0 == 0 or b.y0 == 0 or b.x1 == 300 or b.y1 == 220
    assert clipped >= 5  # truncated stamps were exercised, and clipped to the image


@pytest.mark.slow
def test_a_stamp_keeps_its_own_colours_half_the_time_and_fills_up_to_0_6_of_the_photo():
    rng = np.random.default_rng(0)
    draws = [ink_colour(Looks().ink_colours, rng) for _ in range(4000)]
    assert 0.46 < draws.count("keep") / len(draws) < 0.54
    assert set(draws) == set(Looks().ink_colours)
    assert {ink_colour(("keep",), rng) for _ in range(50)} == {"keep"}
    assert "keep" not in {ink_colour(("#c0202a", "#1d3a9a"), rng) for _ in range(50)}
    bg = Image.new("RGB", (400, 400), "white")
    looks = replace(Looks(), rotation=0.0, perspective=0.0, truncate_share=0.0, multi_share=0.0, negative_share=0.0)
    sides = []
    for seed in range(60):
        _, boxes, _ = compose_image(bg, [load_stamp(DEFAULT_STAMP)], looks, np.random.default_rng(seed))
        sides += [max(b.x1 - b.x0, b.y1 - b.y0) / 400 for b in boxes]
    assert max(sides) > 0.45 and sum(s > 0.3 for s in sides) >= len(sides) // 5, sorted(sides)


def test_several_stamps_each_boxed():
    stamp = load_stamp(DEFAULT_STAMP)
    looks = Looks(**{**CLEAN, "multi_share": 1.0}, max_stamps=3, scale=(0.1, 0.2), truncate_share=0)
    for seed in range(10):
        img, boxes, _ = compose_image(Image.new("RGB", (400, 300), "white"), [stamp], looks,
                                      np.random.default_rng(seed))
        assert len(boxes) >= 2
        ink = (255 - np.asarray(img, dtype=np.int16).min(axis=2)) >= 27  # 26 +1 grey level of rounding
        covered = np.zeros_like(ink)
        for b in boxes:
            covered[b.y0:b.y1, b.x0:b.x1] = True
            assert ink[b.y0:b.y1, b.x0:b.x1].any()
        assert not (ink & ~covered).any()


@pytest.mark.slow
def test_an_occluder_hides_part_of_the_stamp_from_one_side_never_all_of_it():
    hidden = []
    for seed in range(100):
        canvas = np.zeros((300, 400, 3), np.uint8)
        canvas[..., 1] = 255  # pure green: far from every skin and cap colour
        box = (150, 100, 150 + 20 + seed % 7 * 20, 100 + 20 + seed % 5 * 25)
        add_occluder(canvas, box, np.random.default_rng(seed))
        covered = np.abs(canvas.astype(int) - [0, 255, 0]).max(axis=2) > 60  # solidly covered, past the soft edge
        x0, y0, x1, y1 = box
        inside = covered[y0:y1, x0:x1]
        assert inside.any(), seed
        # it comes in from one side and stays within DEPTH[1] of the box's extent from it (+2 px of soft edge)
        cols, rows = np.nonzero(inside.any(axis=0))[0], np.nonzero(inside.any(axis=1))[0]
        w, h = x1 - x0, y1 - y0
        near_x, near_y = DEPTH[1] * w + 2, DEPTH[1] * h + 2
        assert (cols.max() + 1 <= near_x or w - cols.min() <= near_x
                or rows.max() + 1 <= near_y or h - rows.min() <= near_y), seed
        hidden.append(inside.mean())
    assert 0.02 < np.mean(hidden) < 0.45 and max(hidden) < 0.5


def test_occluded_stamps_keep_their_labels_and_stamp_free_images_get_occluders_too():
    stamp = load_stamp(DEFAULT_STAMP)
    plain, hidden = Looks(**CLEAN), Looks(**{**CLEAN, "occlude_share": 1.0})
    for seed in range(6):
        bg = Image.new("RGB", (400, 300), "white")
        a, boxes_a, _ = compose_image(bg, [stamp], plain, np.random.default_rng(seed))
        b, boxes_b, _ = compose_image(bg, [stamp], hidden, np.random.default_rng(seed))
        assert boxes_a == boxes_b and len(boxes_b) == 1  # the same stamp, the same box
        assert (np.asarray(a) != np.asarray(b)).any()
        free = Looks(**{**CLEAN, "occlude_share": 1.0, "negative_share": 1.0})
        img, boxes, hard = compose_image(bg, [stamp], free, np.random.default_rng(seed))
        assert boxes == [] and not hard and diff_box(img) is not None


def test_hard_negatives_are_unlabelled_distractors():
    stamp = load_stamp(DEFAULT_STAMP)
    looks = Looks(**{**CLEAN, "negative_share": 1.0, "hard_negative_share": 1.0})
    img, boxes, hard = compose_image(Image.new("RGB", (300, 300), "white"), [stamp], looks,
                                     np.random.default_rng(3))
    assert boxes == [] and hard
    assert diff_box(img) is not None  # something stamp-like was drawn


@pytest.fixture(scope="module")
def small_dataset(tmp_path_factory):
    out = tmp_path_factory.mktemp("ds")
    compose_dataset(ComposeConfig(count=30, seed=5, max_size=256), out, workers=1)
    return out


def test_splits_share_no_background(small_dataset):
    items = read_labels(small_dataset)
    train = {i.background for i in items if i.split == "train"}
    valid = {i.background for i in items if i.split == "valid"}
    assert train and valid and not (train & valid)
    summary = json.loads((small_dataset / "dataset.json").read_text())
    assert summary["images"] == 30 and summary["stamped"] + summary["negatives"] == 30
    assert 0 < summary["stamped"] < 30
    assert summary["stamps"][0]["sha256"]


def test_labels_csv_rows_follow_the_contract(small_dataset):
    rows = list(csv.DictReader((small_dataset / "labels.csv").open()))
    assert list(rows[0]) == ["file", "split", "background", "has_stamp", "x0", "y0", "x1", "y1", "class"]
    for r in rows:
        img = Image.open(small_dataset / "images" / r["file"])
        if r["has_stamp"] == "0":
            assert r["x0"] == r["y0"] == r["x1"] == r["y1"] == ""
        else:
            x0, y0, x1, y1 = (int(r[k]) for k in ("x0", "y0", "x1", "y1"))
            assert 0 <= x0 < x1 <= img.width and 0 <= y0 < y1 <= img.height
    assert max(Image.open(p).size[0] for p in (small_dataset / "images").iterdir()) <= 256


def test_coco_agrees_with_labels(small_dataset):
    coco = COCO(str(small_dataset / "coco.json"))
    items = {i.file: i for i in read_labels(small_dataset)}
    assert len(coco.getImgIds()) == len(items)
    for img in coco.loadImgs(coco.getImgIds()):
        anns = coco.loadAnns(coco.getAnnIds(imgIds=img["id"]))
        got = sorted((a["bbox"][0], a["bbox"][1], a["bbox"][0] + a["bbox"][2], a["bbox"][1] + a["bbox"][3])
                     for a in anns)
        assert got == sorted(b.as_tuple() for b in items[img["file_name"]].boxes)
        w, h = Image.open(small_dataset / "images" / img["file_name"]).size
        assert (img["width"], img["height"]) == (w, h)
        assert all(a["segmentation"] == [] for a in anns)
    # the keys CVAT's format layer (datumaro) expects, without which it warns once per box
    assert {"info", "licenses"} <= set(coco.dataset)


def test_yolo_round_trips_to_the_same_pixels(small_dataset):
    classes = ["qc-passed"]
    yolo = small_dataset / "yolo"
    for item in read_labels(small_dataset):
        split = {"train": "train", "valid": "val"}[item.split]
        lines = (yolo / "labels" / split / (Path(item.file).stem + ".txt")).read_text().splitlines()
        assert len(lines) == len(item.boxes)  # an empty file for an image without stamp
        w, h = Image.open(small_dataset / "images" / item.file).size
        back = [yolo_to_box(line, w, h, classes) for line in lines]
        assert sorted(b.as_tuple() for b in back) == sorted(b.as_tuple() for b in item.boxes)
        # the image beside it is the dataset's own file, linked, not a second copy
        assert (yolo / "images" / split / item.file).samefile(small_dataset / "images" / item.file)
    # the split lists are CVAT's, relative to the folder (its "data/" prefix): none is absolute
    lists = sorted(p.name for p in yolo.glob("*.txt"))
    assert lists == ["train.txt", "valid.txt"]
    assert all(line.startswith("data/images/") for f in lists for line in (yolo / f).read_text().splitlines())
    assert "path:" not in (yolo / "data.yaml").read_text() and "qc-passed" in (yolo / "data.yaml").read_text()


@pytest.mark.slow
def test_same_seed_same_bytes_with_1_and_2_workers(tmp_path):
    cfg = ComposeConfig(count=12, seed=11, max_size=200)
    compose_dataset(cfg, tmp_path / "a", workers=1)
    compose_dataset(cfg, tmp_path / "b", workers=2)
    names = sorted(p.name for p in (tmp_path / "a" / "images").iterdir())
    assert len(names) == 12
    for n in names:
        assert (tmp_path / "a" / "images" / n).read_bytes() == (tmp_path / "b" / "images" / n).read_bytes()
    assert (tmp_path / "a" / "labels.csv").read_text() == (tmp_path / "b" / "labels.csv").read_text()
    other = compose_dataset(replace(cfg, seed=12), tmp_path / "c", workers=1)
    assert other["images"] == 12
    assert (tmp_path / "c" / "images" / names[0]).read_bytes() != (tmp_path / "a" / "images" / names[0]).read_bytes()


def test_bad_backgrounds_are_reported_not_fatal(tmp_path):
    folder = tmp_path / "bg"
    expected = write_bad_files(folder / "bad")
    good = write_odd_good_files(folder / "odd")
    for i in range(3):
        photo(i).save(folder / f"ok{i}.jpg")
    summary = compose_dataset(ComposeConfig(count=10, seed=1, backgrounds=folder), tmp_path / "out")
    skipped = {Path(s["file"]).name: s["reason"] for s in summary["skipped_backgrounds"]}
    assert skipped == expected
    used = {Path(b["name"]).name for b in summary["backgrounds"]}
    assert used == set(good) | {f"ok{i}.jpg" for i in range(3)}
    assert summary["images"] == 10


def test_odd_images_are_converted_and_upright(tmp_path):
    names = write_odd_good_files(tmp_path)
    for n in names:
        img = open_checked(tmp_path / n)
        assert img.mode == "RGB"
    assert open_checked(tmp_path / "rotated.jpg").size == (320, 200)  # EXIF orientation applied
    grey = np.asarray(open_checked(tmp_path / "grey16.png"))
    assert grey.max() > 128  # 16-bit values scaled, not clipped to white or black


def test_stamp_without_alpha_is_keyed_and_bad_stamps_fail(tmp_path):
    rgb = Image.new("RGB", (100, 100), "white")
    rgb.paste((200, 0, 0), (30, 30, 70, 60))
    rgb.save(tmp_path / "plain.jpg", quality=95)
    s = load_stamp(tmp_path / "plain.jpg")
    assert s.name == "plain"
    h, w = s.rgba.shape[:2]
    assert abs(h - 30) <= 2 and abs(w - 40) <= 2  # cropped to the red patch
    assert s.rgba[..., 3].max() == 255
    (tmp_path / "x.png").write_text("not an image")
    with pytest.raises(StampError, match="not an image in a format"):
        load_stamp(tmp_path / "x.png")
    Image.new("RGBA", (50, 50), (0, 0, 0, 0)).save(tmp_path / "clear.png")
    with pytest.raises(StampError, match="fully transparent"):
        load_stamp(tmp_path / "clear.png")


@pytest.mark.slow
def test_cli_reports_bad_stamp_clearly(tmp_path):
    (tmp_path / "s.png").write_text("nope")
    r = subprocess.run([sys.executable, "-m", "stampcheck", "compose", "--stamp", str(tmp_path / "s.png"),
                        "--out", str(tmp_path / "o"), "--count", "2"], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 2
    assert "not an image in a format" in r.stderr + r.stdout and "BytesIO" not in r.stderr + r.stdout


@pytest.mark.slow
def test_interrupted_run_resumes_to_the_same_bytes(tmp_path):
    args = [sys.executable, "-m", "stampcheck", "compose", "--count", "60", "--seed", "4", "--max-size", "256",
            "--no-preview"]
    clean = subprocess.run(args + ["--out", str(tmp_path / "clean")], capture_output=True, cwd=ROOT)
    assert clean.returncode == 0, clean.stderr
    cut = tmp_path / "cut"
    proc = subprocess.Popen(args + ["--out", str(cut)], cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + 60
    while time.time() < deadline and len(list((cut / "images").glob("*.jpg"))) < 10:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = list((cut / "images").glob("*.jpg"))
    assert 0 < len(done) < 60 and not (cut / "labels.csv").exists()
    for f in done:  # whatever is there under a final name is whole
        Image.open(f).load()
    r = subprocess.run(args + ["--out", str(cut)], capture_output=True, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    assert not list((cut / "images").glob(".*part"))
    for f in (tmp_path / "clean" / "images").iterdir():
        assert (cut / "images" / f.name).read_bytes() == f.read_bytes()
    assert (cut / "labels.csv").read_text() == (tmp_path / "clean" / "labels.csv").read_text()


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_stop_sent_to_the_workers_too_ends_the_run(tmp_path, sig):
    """A service manager's stop (SIGTERM to the process group) or Ctrl-C in a terminal (SIGINT to it)
    reaches compose's worker processes as well: exit 130 with one line, soon, whatever the workers
    were doing, and the next run finishes the same dataset."""
    out = tmp_path / "ds"
    args = [sys.executable, "-m", "stampcheck", "compose", "--count", "2000", "--seed", "4", "--max-size", "256",
            "--workers", "2", "--no-preview", "--out", str(out)]  # many seconds of work: each stop comes mid-run
    for attempt in range(3):  # idle workers wait on the task queue holding its lock: stop them in several states
        # as a terminal starts it: a test run started in the background (&) has Ctrl-C ignored, which
        # its children inherit, and a program started so rightly leaves it ignored
        proc = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                start_new_session=True, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
        deadline = time.time() + 120
        while time.time() < deadline and len(list((out / "images").glob("*.jpg"))) < 20 * (attempt + 1):
            time.sleep(0.02)
        os.killpg(proc.pid, sig)
        try:
            output, _ = proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
            pytest.fail("compose hung after the stop")
        assert proc.returncode == 130, output[-2000:]
        assert output.strip().splitlines()[-1] == "interrupted" and "Traceback" not in output, output[-2000:]
        assert not (out / "labels.csv").exists()
    r = subprocess.run(args, capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0, r.stdout + r.stderr
    assert len(list((out / "images").glob("*.jpg"))) == 2000 and not list((out / "images").glob(".*"))


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="finds the workers in Linux's /proc")
def test_a_worker_killed_alone_is_one_line_and_exit_4(tmp_path):
    """The OOM killer ends one worker: the run says so and stops (exit 4), no hang, no traceback."""
    out = tmp_path / "ds"
    proc = subprocess.Popen([sys.executable, "-m", "stampcheck", "compose", "--count", "3000", "--max-size", "256",
                             "--workers", "2", "--no-preview", "--out", str(out)], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 120
    while time.time() < deadline and len(list((out / "images").glob("*.jpg"))) < 10:
        time.sleep(0.02)
    children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()
    workers = [int(c) for c in children if b"spawn_main" in Path(f"/proc/{c}/cmdline").read_bytes()]
    os.kill(workers[0], signal.SIGKILL)
    output, _ = proc.communicate(timeout=60)
    assert proc.returncode == 4, output[-2000:]
    assert "worker process" in output.strip().splitlines()[-1] and "Traceback" not in output, output[-2000:]


def test_other_parameters_in_same_folder_are_refused(tmp_path):
    compose_dataset(ComposeConfig(count=4, seed=1), tmp_path)
    with pytest.raises(Exception, match="other parameters"):
        compose_dataset(ComposeConfig(count=4, seed=2), tmp_path)
    compose_dataset(ComposeConfig(count=4, seed=2), tmp_path, overwrite=True)


def test_the_tool_files_never_replace_a_users_nor_half_remove_a_dataset(tmp_path):
    from stampcheck.compose.composer import ComposeError

    def tree(folder):
        return {str(p.relative_to(folder)): p.read_bytes() if p.is_file() else None for p in sorted(folder.rglob("*"))}

    cfg = ComposeConfig(count=4, seed=1, max_size=96)
    for odd in ("labels-file", "classes-folder"):
        out = tmp_path / odd
        compose_dataset(cfg, out)
        if odd == "labels-file":
            shutil.rmtree(out / "labels")
            (out / "labels").write_text("the user's")
        else:
            (out / "classes.txt").unlink()
            (out / "classes.txt").mkdir()
            (out / "classes.txt" / "mine").write_text("keep")
        before = tree(out)
        for again in (cfg, ComposeConfig(count=4, seed=2, max_size=96)):  # the same run, and another with --overwrite
            with pytest.raises(ComposeError, match="move it, or choose another --out"):
                compose_dataset(again, out, overwrite=True)
            assert tree(out) == before  # refused before anything changed
    # a dataset made before compose wrote the tool files: the user's classes.txt and labels/ stay
    out = tmp_path / "older"
    compose_dataset(cfg, out)
    summary = json.loads((out / "dataset.json").read_text())
    del summary["tool_files"]
    (out / "dataset.json").write_text(json.dumps(summary))
    (out / "classes.txt").write_text("stamp\nlogo\n")
    before = tree(out)
    with pytest.raises(ComposeError, match="were not written by compose"):
        compose_dataset(ComposeConfig(count=4, seed=2, max_size=96), out, overwrite=True)
    assert tree(out) == before


def test_preview_draws_a_grid(small_dataset, tmp_path):
    out = write_preview(small_dataset, tmp_path / "p.png", n=8)
    img = Image.open(out)
    assert img.size[0] == 4 * 256 and img.size[1] >= 2 * 256


@pytest.mark.skipif(not (Path(__file__).resolve().parents[2] / "shared/data/product-photos").is_dir(),
                    reason="shared product photos absent")
def test_compose_on_real_product_photos(tmp_path):
    from tests.conftest import SHARED_PHOTOS
    summary = compose_dataset(ComposeConfig(count=20, seed=0, backgrounds=SHARED_PHOTOS / "Milk"), tmp_path)
    assert summary["images"] == 20 and not summary["skipped_backgrounds"]
    assert len({b["name"] for b in summary["backgrounds"]}) > 20


@pytest.mark.slow
def test_several_stamp_classes(tmp_path):
    seal = Image.new("RGB", (120, 80), "white")
    seal.paste((20, 40, 200), (10, 10, 110, 70))
    seal.save(tmp_path / "lab-seal.png")
    cfg = ComposeConfig(count=30, seed=3, stamps=[DEFAULT_STAMP, tmp_path / "lab-seal.png"],
                        looks=Looks(negative_share=0.2))
    summary = compose_dataset(cfg, tmp_path / "ds")
    assert summary["classes"] == ["lab-seal", "qc-passed"]
    assert all(n > 0 for n in summary["stamp_instances"].values())
    labels = {b.label for i in read_labels(tmp_path / "ds") for b in i.boxes}
    assert labels == {"lab-seal", "qc-passed"}
    coco = COCO(str(tmp_path / "ds" / "coco.json"))
    assert sorted(c["name"] for c in coco.loadCats(coco.getCatIds())) == ["lab-seal", "qc-passed"]
