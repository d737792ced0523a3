"""Outputs the tools users already have can load, and labelled sets as those tools export them:
Ultralytics on compose's yolo/, fastai's load_learner on model.pkl, evaluate on labels.csv / COCO /
YOLO sets, and qa's result files."""

import contextlib
import csv
import importlib.util
import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from urllib.parse import quote

import numpy as np
import pytest
import torch
from PIL import Image

from stampcheck.compose.composer import ComposeConfig, compose_dataset
from stampcheck.compose.looks import Looks
from stampcheck.qa.batch import run_qa
from stampcheck.dataset import DatasetError, read_labels, yolo_lines
from stampcheck.formats import read_labelled_set
from stampcheck.progress import no_progress
from tests.conftest import photo
from tests.test_train import EASY
from stampcheck.train.learner import TrainConfig, train

ROOT = Path(__file__).resolve().parents[1]

# Run in a fresh process, as a user would: Ultralytics reads its settings folder at import.
ULTRALYTICS_CHECK = """
import json, sys
from pathlib import Path
from ultralytics.data.dataset import YOLODataset
from ultralytics.data.utils import check_det_dataset, load_dataset_cache_file

data = check_det_dataset(sys.argv[1])
out = {"names": {str(k): v for k, v in data["names"].items()}, "splits": {}}
for split in ("train", "val"):
    ds = YOLODataset(img_path=data[split], data=data, task="detect", augment=False)
    cache = load_dataset_cache_file(Path(ds.label_files[0]).parent.with_suffix(".cache"))
    out["splits"][split] = {"found_missing_empty_corrupt": [int(v) for v in cache["results"][:4]], "labels": [
        {"file": l["im_file"], "hw": [int(v) for v in l["shape"]], "cls": l["cls"].ravel().tolist(),
         "xywh": l["bboxes"].tolist()} for l in ds.labels]}
Path(sys.argv[2]).write_text(json.dumps(out))
"""


def cli(*args, cwd=ROOT):
    r = subprocess.run([sys.executable, "-m", "stampcheck", *map(str, args)], capture_output=True, text=True,
                       cwd=cwd, timeout=300)
    r.output = r.stdout + r.stderr
    return r


@pytest.fixture(scope="module")
def module_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("formats")


@pytest.fixture(scope="module")
def two_class_dataset(module_dir):
    """Two stamp classes, several stamps on some images, and images without any."""
    seal = photo(3, (120, 80))
    seal.paste((20, 40, 200), (10, 10, 110, 70))
    seal.save(module_dir / "lab-seal.png")
    from stampcheck.compose.stamps import DEFAULT_STAMP
    cfg = ComposeConfig(count=24, seed=7, max_size=128, stamps=[DEFAULT_STAMP, module_dir / "lab-seal.png"],
                        looks=Looks(negative_share=0.3, multi_share=0.4))
    compose_dataset(cfg, module_dir / "two", workers=1)
    return module_dir / "two"


@pytest.fixture(scope="module")
def tiny(module_dir):
    """A one-class model trained for one epoch on 24 composed images, and that dataset."""
    compose_dataset(ComposeConfig(count=24, seed=2, max_size=96, looks=EASY), module_dir / "ds", workers=1)
    train(module_dir / "ds", module_dir / "model", TrainConfig(verifier=False, arch="resnet18", size=64, epochs=1, bs=8,
                                                                pretrained="none", workers=0))
    return module_dir


# ---------------------------------------------------------------- YOLO export, read by Ultralytics

def ultralytics_view(data_yaml: Path, tmp: Path) -> dict:
    if importlib.util.find_spec("ultralytics") is None:
        pytest.skip("ultralytics not installed (pip install -e '.[test]')")
    config = tmp / "ultralytics-config"
    (config / "Ultralytics").mkdir(parents=True, exist_ok=True)
    # check_det_dataset looks for Arial.ttf here and downloads it when missing: give it a font
    import matplotlib
    shutil.copy(Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf",
                config / "Ultralytics" / "Arial.ttf")
    env = {**os.environ, "YOLO_OFFLINE": "1", "YOLO_CONFIG_DIR": str(config)}
    script, result = tmp / "check.py", tmp / "ultralytics.json"
    script.write_text(ULTRALYTICS_CHECK)
    r = subprocess.run([sys.executable, str(script), str(data_yaml), str(result)], capture_output=True, text=True,
                       env=env, cwd=tmp, timeout=180)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return json.loads(result.read_text())


def assert_ultralytics_sees_our_labels(view: dict, dataset: Path) -> None:
    items = read_labels(dataset)
    classes = json.loads((dataset / "dataset.json").read_text())["classes"]
    assert view["names"] == {str(i): n for i, n in enumerate(classes)}
    for split, ours in (("train", "train"), ("val", "valid")):
        mine = {i.file: i for i in items if i.split == ours}
        seen = view["splits"][split]
        stamped = sum(i.has_stamp for i in mine.values())
        # every label file found (none missing, none corrupt); images without stamp have an empty one
        assert seen["found_missing_empty_corrupt"] == [len(mine), 0, len(mine) - stamped, 0]
        assert sorted(Path(lab["file"]).name for lab in seen["labels"]) == sorted(mine)
        for lab in seen["labels"]:
            item = mine[Path(lab["file"]).name]
            h, w = lab["hw"]
            assert (w, h) == (item.width, item.height)
            got = sorted((classes[int(c)], (cx - bw / 2) * w, (cy - bh / 2) * h, (cx + bw / 2) * w, (cy + bh / 2) * h)
                         for c, (cx, cy, bw, bh) in zip(lab["cls"], lab["xywh"]))
            want = sorted((b.label, *b.as_tuple()) for b in item.boxes)
            assert len(got) == len(want)
            for g, t in zip(got, want):
                assert g[0] == t[0] and all(abs(a - b) < 0.5 for a, b in zip(g[1:], t[1:])), (g, t)


@pytest.mark.slow
def test_ultralytics_finds_every_label_and_the_moved_dataset_still_loads(two_class_dataset, tmp_path):
    moved = tmp_path / "elsewhere" / "two"
    shutil.copytree(two_class_dataset, moved)  # a copy: the module's dataset stays where it is
    assert not any(p.is_symlink() for p in (two_class_dataset / "yolo").rglob("*"))
    assert_ultralytics_sees_our_labels(ultralytics_view(two_class_dataset / "yolo" / "data.yaml", tmp_path),
                                       two_class_dataset)
    target = tmp_path / "moved-again"
    os.rename(moved, target)  # paths are relative to data.yaml: nothing points back to the old place
    view = ultralytics_view(target / "yolo" / "data.yaml", tmp_path)
    assert_ultralytics_sees_our_labels(view, target)
    assert all(str(target) in lab["file"] for s in view["splits"].values() for lab in s["labels"])


def test_label_studio_and_cvat_open_a_composed_dataset_as_it_is(two_class_dataset):
    """Label Studio's `import yolo` (classes.txt, flat images/ and labels/) and CVAT's YOLO 1.1
    (obj.data, obj.names, the subset lists, each label beside its image), read back by our readers of
    those formats: the same boxes as labels.csv, and no image copied."""
    from stampcheck.yolo import read_darknet, read_yolo

    ds = two_class_dataset
    truth = {i.file: sorted((b.label, *b.as_tuple()) for b in i.boxes) for i in read_labels(ds)}
    classes = json.loads((ds / "dataset.json").read_text())["classes"]
    assert (ds / "classes.txt").read_text().split("\n")[:-1] == classes == (ds / "yolo" / "obj.names").read_text().split()
    assert "train = data/train.txt" in (ds / "yolo" / "obj.data").read_text()
    for found in (read_yolo(ds), read_darknet(ds / "yolo" / "obj.data")):
        assert len(found.items) == len(truth) and not found.notes
        for item in found.items:
            got = sorted((b.label, *b.as_tuple()) for b in item.boxes)
            want = truth[Path(item.file).name]
            assert [g[0] for g in got] == [w[0] for w in want], item.file
            assert all(abs(a - b) <= 1 for g, w in zip(got, want) for a, b in zip(g[1:], w[1:])), item.file
    listed = (ds / "yolo" / "train.txt").read_text().split() + (ds / "yolo" / "valid.txt").read_text().split()
    assert sorted(Path(x).name for x in listed) == sorted(truth) and all(x.startswith("data/images/") for x in listed)
    jpgs = [p for p in ds.rglob("*.jpg") if p.parent.name != "images" or p.parent.parent != ds]
    assert all(os.path.samefile(p, ds / "images" / p.name) for p in jpgs)  # links, not copies


def test_compose_overwrite_replaces_its_yolo_files_and_keeps_the_users(tmp_path):
    ds = tmp_path / "ds"
    compose_dataset(ComposeConfig(count=6, seed=1, max_size=96), ds, workers=1)
    (ds / "yolo" / "labels" / "train" / "mine.txt").write_text("0 0.5 0.5 0.1 0.1\n")
    (ds / "yolo" / "labels" / "train.cache").write_bytes(b"Ultralytics' own cache")
    compose_dataset(ComposeConfig(count=3, seed=2, max_size=96), ds, workers=1, overwrite=True)
    items = read_labels(ds)
    assert sorted(p.name for p in (ds / "yolo" / "images").rglob("*.jpg")) == sorted(i.file for i in items)
    labels = sorted(p.name for p in (ds / "yolo" / "labels").rglob("*.txt"))
    assert labels == sorted(["mine.txt"] + [i.file.replace(".jpg", ".txt") for i in items])
    # the tools' label files follow the images: those of the first run's other images are gone
    assert sorted(p.name for p in (ds / "labels").iterdir()) == sorted(i.file.replace(".jpg", ".txt") for i in items)
    assert sorted(p.name for p in (ds / "yolo" / "images").rglob("*.txt")) == sorted(p.name for p in (ds / "labels").iterdir())
    assert (ds / "yolo" / "labels" / "train.cache").read_bytes() == b"Ultralytics' own cache"


# ---------------------------------------------------------------- fastai: model.pkl

@pytest.mark.slow
def test_model_pkl_predicts_and_gets_preds_as_fastai_users_expect(tiny):
    from fastai.learner import load_learner

    from stampcheck.train.detect import detect

    files = sorted((tiny / "ds" / "images").iterdir())[:5]
    config = json.loads((tiny / "model" / "config.json").read_text())
    learn = load_learner(tiny / "model" / "model.pkl")
    # fastai's pipeline squishes to the size the model predicts at, and decodes at its threshold: config.json's
    size = config["size"]
    assert learn.loss_func.threshold == config["threshold"]
    preds, targets = learn.get_preds(dl=learn.dls.test_dl(files))
    side = size // 16
    assert targets is None and preds.shape == (5, 1 + 4, side, side)  # the raw outputs, one per photo
    # a path as a string, a PIL image or a numpy array, as a stock fastai learner takes them
    photo = Image.open(files[0]).convert("RGB")
    for x in (str(files[0]), photo, np.asarray(photo), photo.convert("RGBA")):
        assert torch.allclose(learn.predict(x)[2], preds[0], atol=1e-4), type(x)
    assert learn.get_preds(dl=learn.dls.test_dl([str(f) for f in files]))[0].shape == preds.shape
    for threshold in (config["threshold"], 0.01):  # the model's own, and one that keeps boxes to compare
        learn.loss_func.threshold = threshold
        (boxes, labelled), decoded, raw = learn.predict(files[0])  # as for any fastai BBox learner
        assert torch.allclose(raw, preds[0], atol=1e-4)
        scores, classes, expected = detect(preds[:1], 1, threshold)[0]["dets"]
        assert list(labelled.lbl) == ["qc-passed"] * len(scores) and torch.equal(labelled.bbox, boxes)
        # pixels of the size x size image the model sees, best first
        pixels = (expected.clamp(-1, 1) + 1) / 2 * size
        assert torch.allclose(torch.as_tensor(boxes).float().view(-1, 4), pixels, atol=1e-3)
    assert len(scores) > 0


# ---------------------------------------------------------------- evaluate on the formats people have

def hand_labelled(src: Path, dst: Path) -> Path:
    """``src``'s labels as a person writes them: file,has_stamp,x0,y0,x1,y1 (no class, split or
    background), plus a photo in images/ that no row names."""
    shutil.copytree(src / "images", dst / "images")
    shutil.copy(src / "images" / "000000.jpg", dst / "images" / "not-labelled-yet.jpg")
    with open(dst / "labels.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["file", "has_stamp", "x0", "y0", "x1", "y1"])
        for item in read_labels(src):
            for b in item.boxes or [None]:
                w.writerow([item.file, 1, *b.as_tuple()] if b else [item.file, 0, "", "", "", ""])
    return dst


def coco_export(src: Path, dst: Path) -> Path:
    """``src``'s labels as CVAT exports COCO: annotations/instances_default.json with float boxes
    and a class name of the user's own, the images apart."""
    data = json.loads((src / "coco.json").read_text())
    data["categories"] = [{"id": 7, "name": "Stamp", "supercategory": ""}]
    for a in data["annotations"]:
        a["category_id"], a["bbox"] = 7, [v + 0.2 for v in a["bbox"][:2]] + a["bbox"][2:]
    (dst / "annotations").mkdir(parents=True)
    (dst / "annotations" / "instances_default.json").write_text(json.dumps(data))
    return dst / "annotations" / "instances_default.json"


def voc_export(src: Path, dst: Path, images: str = "JPEGImages") -> Path:
    """``src``'s labels as CVAT exports Pascal VOC 1.1 (JPEGImages/, Annotations/, ImageSets/Main/,
    labelmap.txt), or Label Studio (``images`` "images", no ImageSets), written by hand to the format."""
    shutil.copytree(src / "images", dst / images)
    (dst / "Annotations").mkdir(parents=True)
    items = read_labels(src)
    for item in items:
        objects = "".join(
            f"<object><name>Stamp</name><pose>Unspecified</pose><truncated>0</truncated><difficult>0</difficult>"
            f"<bndbox><xmin>{b.x0:.2f}</xmin><ymin>{b.y0:.2f}</ymin><xmax>{b.x1:.2f}</xmax><ymax>{b.y1:.2f}</ymax>"
            f"</bndbox></object>" for b in item.boxes)
        (dst / "Annotations" / item.file.replace(".jpg", ".xml")).write_text(
            f'<?xml version="1.0" encoding="utf-8"?>\n<annotation><folder></folder><filename>{item.file}</filename>'
            f"<source><database>Unknown</database></source><size><width>{item.width}</width>"
            f"<height>{item.height}</height><depth>3</depth></size><segmented>0</segmented>{objects}</annotation>")
    if images == "JPEGImages":
        (dst / "ImageSets" / "Main").mkdir(parents=True)
        (dst / "ImageSets" / "Main" / "default.txt").write_text("".join(i.file[:-4] + "\n" for i in items))
        (dst / "labelmap.txt").write_text("# label:color_rgb:parts:actions\nbackground:0,0,0::\nStamp:250,50,83::\n")
    return dst


def darknet_export(src: Path, dst: Path) -> Path:
    """``src``'s labels as CVAT exports "YOLO 1.1" with images: obj.data, obj.names, train.txt and
    obj_train_data/ holding each image and its label."""
    (dst / "obj_train_data").mkdir(parents=True)
    classes = json.loads((src / "dataset.json").read_text())["classes"]
    for item in read_labels(src):
        shutil.copy(src / "images" / item.file, dst / "obj_train_data" / item.file)
        (dst / "obj_train_data" / item.file.replace(".jpg", ".txt")).write_text(yolo_lines(item, classes))
    (dst / "obj.names").write_text("Stamp\n")
    (dst / "obj.data").write_text("classes = 1\ntrain = data/train.txt\nnames = data/obj.names\nbackup = backup/\n")
    (dst / "train.txt").write_text("".join(f"data/obj_train_data/{f.name}\n"
                                           for f in sorted((dst / "obj_train_data").glob("*.jpg"))))
    return dst


@pytest.mark.slow
def test_evaluate_gives_the_same_figures_from_labels_csv_coco_and_yolo(tiny, tmp_path):
    ds = tiny / "ds"
    runs = {
        "labels.csv": [hand_labelled(ds, tmp_path / "hand")],
        "COCO": [coco_export(ds, tmp_path / "cvat"), "--images", ds / "images"],
        "YOLO": [ds / "yolo"],
        "YOLO 1.1": [darknet_export(ds, tmp_path / "cvat-yolo") / "obj.data"],
        "Pascal VOC": [voc_export(ds, tmp_path / "cvat-voc")],
    }
    started = {kind: subprocess.Popen(  # side by side: most of each run is Python loading torch
        [sys.executable, "-m", "stampcheck", "evaluate", str(tiny / "model"), *map(str, args), "--out",
         str(tmp_path / f"eval-{kind}"), "--workers", "0", "--device", "cpu"], cwd=ROOT, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT) for kind, args in runs.items()}
    metrics = {}
    for kind, proc in started.items():
        output, _ = proc.communicate(timeout=300)
        assert proc.returncode == 0 and "Traceback" not in output, output[-3000:]
        out = tmp_path / f"eval-{kind}"
        report = json.loads((out / "metrics.json").read_text())
        assert report["format"] == kind
        if kind == "labels.csv":  # the photo no row names is left out, and said so
            assert report["unlabelled"] == ["not-labelled-yet.jpg"]
            assert "not-labelled-yet.jpg" in output and "not evaluated" in output
        metrics[kind] = report["metrics"]
    for kind in ("COCO", "YOLO", "YOLO 1.1", "Pascal VOC"):  # the same photos and boxes, read five ways
        for key in ("images", "stamped", "accuracy", "precision", "recall"):
            assert metrics[kind][key] == metrics["labels.csv"][key], (kind, key)
        assert metrics[kind]["mean_iou"] == pytest.approx(metrics["labels.csv"]["mean_iou"], abs=0.02)
    assert metrics["YOLO"]["images"] == 24


@pytest.mark.slow
def test_bad_labels_are_named_before_the_model_loads(tiny, tmp_path):
    yolo = tmp_path / "yolo"
    shutil.copytree(tiny / "ds" / "yolo", yolo)
    label = next(p for p in sorted((yolo / "labels" / "train").iterdir()) if p.read_text())
    label.write_text("0 0.5 0.5 1.7 0.2\n")
    r = cli("evaluate", tiny / "model", yolo / "data.yaml")
    assert r.returncode == 2 and f"labels/train/{label.name} line 1" in r.output and "0..1" in r.output, r.output
    with pytest.raises(DatasetError, match="none of its 24 images .*--images"):  # a CVAT export: its images are elsewhere
        read_labelled_set(coco_export(tiny / "ds", tmp_path / "c"))
    # a VOC file from outside that expands entities (a billion laughs) is refused, never expanded
    voc = voc_export(tiny / "ds", tmp_path / "voc")
    bomb = ('<?xml version="1.0"?><!DOCTYPE a [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">'
            '<!ENTITY c "&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;">]><annotation><filename>000001.jpg</filename>'
            '<object><name>&c;</name></object></annotation>')
    (voc / "Annotations" / "000001.xml").write_text(bomb)
    r = cli("evaluate", tiny / "model", voc)
    assert r.returncode == 2 and "Annotations/000001.xml: not a readable VOC annotation" in r.output, r.output
    assert "Traceback" not in r.output
    (tmp_path / "c" / "annotations" / "instances_default.json").write_text('{"images": [{"id": 1}]}')
    with pytest.raises(DatasetError, match="without 'file_name'"):
        read_labelled_set(tmp_path / "c" / "annotations" / "instances_default.json")


def test_labelled_sets_are_found_where_the_tools_export_them(tiny, tmp_path):
    ds = tiny / "ds"
    truth = {i.file: sorted(b.as_tuple() for b in i.boxes) for i in read_labels(ds)}
    # Label Studio, COCO: result.json beside images/, file names "images/NAME"
    ls = tmp_path / "label-studio"
    shutil.copytree(ds / "images", ls / "images")
    data = json.loads((ds / "coco.json").read_text())
    for im in data["images"]:
        im["file_name"] = "images/" + im["file_name"]
    (ls / "result.json").write_text(json.dumps(data))
    # Roboflow, YOLO: data.yaml with ../valid/images, folders valid/images and valid/labels
    rf = tmp_path / "roboflow"
    shutil.copytree(ds / "yolo" / "images" / "val", rf / "valid" / "images")
    shutil.copytree(ds / "yolo" / "labels" / "val", rf / "valid" / "labels")
    (rf / "data.yaml").write_text("train: ../valid/images\nval: ../valid/images\nnc: 1\nnames: ['stamp']\n")
    # Label Studio, YOLO: images/, labels/, classes.txt and no data.yaml
    lsy = tmp_path / "label-studio-yolo"
    shutil.copytree(ds / "images", lsy / "images")
    (lsy / "labels").mkdir()
    for f in (ds / "yolo" / "labels").rglob("*.txt"):
        shutil.copy(f, lsy / "labels" / f.name)
    (lsy / "classes.txt").write_text("stamp\n")
    n_valid = sum(i.split == "valid" for i in read_labels(ds))
    # Label Studio, Pascal VOC: Annotations/ and images/; CVAT's: JPEGImages/, given as its Annotations/ folder
    lsv, cvv = voc_export(ds, tmp_path / "ls-voc", images="images"), voc_export(ds, tmp_path / "cvat-voc")
    for path, kind, n in ((ls, "COCO", 24), (ls / "result.json", "COCO", 24), (rf, "YOLO", n_valid),
                          (lsy, "YOLO", 24), (lsv, "Pascal VOC", 24), (cvv / "Annotations", "Pascal VOC", 24),
                          (darknet_export(ds, tmp_path / "cvat-yolo"), "YOLO 1.1", 24)):
        found = read_labelled_set(path)
        assert found.kind == kind and len(found.items) == n and not found.notes
        for item in found.items:
            assert sorted(b.as_tuple() for b in item.boxes) == truth[Path(item.file).name], (path, item.file)
    # as in Ultralytics, a photo without a label file has no stamp; the notes say how many
    stamped = next(f for f, boxes in truth.items() if boxes)
    (lsy / "labels" / stamped.replace(".jpg", ".txt")).unlink()
    found = read_labelled_set(lsy)
    assert found.notes and found.notes[0].startswith("1 of 24 images have no label file")
    assert not next(i for i in found.items if i.file.endswith(stamped)).boxes
    with pytest.raises(DatasetError, match="not a labelled set"):
        read_labelled_set(ds / "images")


def test_coco_file_names_as_cvat_label_studio_and_windows_write_them(tiny, tmp_path):
    ds = tiny / "ds"
    truth = {i.file: sorted(b.as_tuple() for b in i.boxes) for i in read_labels(ds)}
    data = json.loads((ds / "coco.json").read_text())

    def export(folder: Path, json_path: str, name, images: str) -> Path:
        shutil.copytree(ds / "images", folder / images)
        written = json.loads(json.dumps(data))
        for im in written["images"]:
            im["file_name"] = name(im["file_name"])
        (folder / json_path).parent.mkdir(parents=True, exist_ok=True)
        (folder / json_path).write_text(json.dumps(written))
        return folder / json_path

    # CVAT "COCO 1.0": annotations/instances_default.json, the images in images/default/
    cvat = export(tmp_path / "cvat", "annotations/instances_default.json", lambda n: n, "images/default")
    # Label Studio >= 1.16 "COCO with images": paths into its own media folder
    studio = export(tmp_path / "studio", "result.json", lambda n: f"../../label-studio/media/upload/1/{n}", "images")
    # written on Windows
    windows = export(tmp_path / "windows", "result.json", lambda n: "images\\" + n, "images")
    for path, images, by_base in ((cvat, None, True), (tmp_path / "cvat", None, True), (cvat, tmp_path / "cvat" / "images", True),
                                  (cvat, tmp_path / "cvat" / "images" / "default", False), (studio, None, True),
                                  (windows, None, False)):
        found = read_labelled_set(path, images)
        assert len(found.items) == 24, path
        for item in found.items:
            assert (found.root / item.file).is_file()
            assert sorted(b.as_tuple() for b in item.boxes) == truth[Path(item.file).name], (path, item.file)
        # which rule matched is said: the file names were found by their base name
        assert bool(found.notes) == by_base and all("by their base name" in n for n in found.notes), found.notes
    # two labels that come to one photo (one as written, one by base name): refused, both named
    twice = json.loads((tmp_path / "windows" / "result.json").read_text())
    twice["images"].append({**twice["images"][0], "id": 9999, "file_name": "../../upload/2/000000.jpg"})
    (tmp_path / "windows" / "twice.json").write_text(json.dumps(twice))
    with pytest.raises(DatasetError, match=r"image ../../upload/2/000000.jpg \(id 9999\) and image .*000000.jpg .*are both"):
        read_labelled_set(tmp_path / "windows" / "twice.json")
    voc = voc_export(ds, tmp_path / "voc-twice")
    shutil.copy(voc / "Annotations" / "000000.xml", voc / "Annotations" / "copy.xml")
    with pytest.raises(DatasetError, match="Annotations/copy.xml and Annotations/000000.xml are both 000000.jpg"):
        read_labelled_set(voc)
    # two images of one base name: which one is meant cannot be known, and the photo is named
    (tmp_path / "cvat" / "images" / "other").mkdir()
    shutil.copy(tmp_path / "cvat" / "images" / "default" / "000003.jpg", tmp_path / "cvat" / "images" / "other")
    with pytest.raises(DatasetError, match=r"image 000003.jpg: not found in .*\(not there as written; 2 images there share its base name\)"):
        read_labelled_set(cvat)


# ---------------------------------------------------------------- qa's result files

def test_qa_results_one_jsonl_record_per_photo_and_csv_rows_per_stamp(tiny, tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    for f in sorted((tiny / "ds" / "images").iterdir())[:4]:
        shutil.copy(f, photos / f.name)
    (photos / "broken.jpg").write_bytes(b"not a photo")
    summary = run_qa(tiny / "model", [str(photos)], tmp_path / "qa", threshold=0.01, workers=0, device="cpu",
                     progress=no_progress)
    assert (summary.stamped, summary.unreadable) == (4, 1)  # every readable photo stamped at 0.01
    records = [json.loads(line) for line in open(tmp_path / "qa" / "results.jsonl")]
    assert [Path(x["file"]).name for x in records] == sorted(p.name for p in photos.iterdir())
    broken = next(x for x in records if x["file"].endswith("broken.jpg"))
    assert broken["status"] == "error" and broken["error"]
    assert all(broken[k] is None for k in ("has_stamp", "score", "width", "height", "detections"))
    rows = list(csv.DictReader(open(tmp_path / "qa" / "results.csv", newline="")))
    assert list(rows[0]) == ["file", "status", "has_stamp", "score", "class", "x0", "y0", "x1", "y1", "error"]
    for x in records:
        mine = [row for row in rows if row["file"] == x["file"]]
        if x["status"] == "error":
            assert len(mine) == 1 and mine[0]["score"] == mine[0]["class"] == "" and x["error"] is not None
            continue
        assert x["error"] is None and x["has_stamp"] is True and x["detections"]
        assert [(d["class"], d["score"], d["box"]) for d in x["detections"]] == \
               [(row["class"], float(row["score"]), [int(row[k]) for k in ("x0", "y0", "x1", "y1")]) for row in mine]
        assert all(d["class"] == "qc-passed" for d in x["detections"])
        scores = [d["score"] for d in x["detections"]]
        assert scores == sorted(scores, reverse=True) and x["score"] == scores[0]
    # the same verdicts for other tools: a COCO set and COCO results (pycocotools loads both), and
    # Label Studio tasks with the stamps as predictions, in percent of the photo
    from pycocotools.coco import COCO
    read = [x for x in records if x["status"] == "ok"]
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO(str(tmp_path / "qa" / "coco.json"))
        found = coco.loadRes(str(tmp_path / "qa" / "coco_detections.json"))
    assert len(coco.getImgIds()) == len(read) == len(found.getImgIds())
    for x, image in zip(read, coco.loadImgs(coco.getImgIds())):
        assert Path(image["file_name"]) == Path(x["file"]).resolve() and (image["width"], image["height"]) == (x["width"], x["height"])
        for anns in (coco.loadAnns(coco.getAnnIds(imgIds=image["id"])), found.loadAnns(found.getAnnIds(imgIds=image["id"]))):
            assert [(a["score"], [a["bbox"][0], a["bbox"][1], a["bbox"][0] + a["bbox"][2], a["bbox"][1] + a["bbox"][3]])
                    for a in anns] == [(d["score"], d["box"]) for d in x["detections"]]
    tasks = json.loads((tmp_path / "qa" / "label-studio.json").read_text())
    assert len(tasks) == len(read)
    for x, task in zip(read, tasks):
        assert task["data"]["image"] == "/data/local-files/?d=" + quote(str(Path(x["file"]).resolve()).lstrip("/"))
        (prediction,) = task["predictions"]
        assert prediction["score"] == x["score"]
        for d, region in zip(x["detections"], prediction["result"], strict=True):
            v = region["value"]
            assert region["type"] == "rectanglelabels" and v["rectanglelabels"] == [d["class"]]
            back = [v["x"] * x["width"] / 100, v["y"] * x["height"] / 100, (v["x"] + v["width"]) * x["width"] / 100,
                    (v["y"] + v["height"]) * x["height"] / 100]
            assert np.allclose(back, d["box"], atol=1e-6)
