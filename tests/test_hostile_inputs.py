"""What users and attackers fed compose, preview, train and evaluate, through the CLI
as they ran it: each must end with one clear line and its documented exit code, never a
traceback, and change no file the command did not write."""

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from stampcheck.compose.composer import ComposeConfig, compose_dataset
from stampcheck.compose.looks import Looks, LooksError
from stampcheck import errors
from stampcheck.dataset import DatasetError, read_labels
from stampcheck.progress import no_progress
from tests.conftest import huge_header_png, photo
from tests.test_train import square_dataset

ROOT = Path(__file__).resolve().parents[1]
# Big clear stamps (as in test_train) so one tiny epoch has something to see.
EASY = Looks(scale=(0.3, 0.45), opacity=(0.9, 1.0), glare_share=0.0, hard_negative_share=0.0, truncate_share=0.0,
             multi_share=0.0, negative_share=0.3, occlude_share=0.0)


def cli(*args, cwd=ROOT, timeout=240) -> subprocess.CompletedProcess:
    r = subprocess.run([sys.executable, "-m", "stampcheck", *map(str, args)], capture_output=True, text=True,
                       cwd=cwd, timeout=timeout)
    r.output = r.stdout + r.stderr
    return r


def refused(r, *words) -> str:
    """Exit 2 with one error line naming ``words``, and no traceback; return that line."""
    assert r.returncode == errors.USAGE, r.output[-3000:]
    assert "Traceback" not in r.output
    lines = [line for line in r.output.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, r.output
    for w in words:
        assert w in lines[0], lines[0]
    return lines[0]


def files(*folders) -> dict:
    """Every file below ``folders`` with the hash of its bytes."""
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest()
            for folder in folders for p in sorted(Path(folder).rglob("*")) if p.is_file()}


@pytest.fixture
def backgrounds(tmp_path) -> Path:
    folder = tmp_path / "bgs" / "images"
    folder.mkdir(parents=True)
    for i in range(3):
        photo(i).save(folder / f"bg{i}.jpg", quality=90)
    return tmp_path / "bgs"


@pytest.mark.slow
@pytest.mark.parametrize("layout", ["out holds the backgrounds", "out inside the backgrounds", "stamp inside out"])
def test_compose_never_writes_where_it_reads(tmp_path, backgrounds, layout):
    stamp = tmp_path / "work" / "seal.png"
    stamp.parent.mkdir()
    Image.new("RGB", (80, 60), "white").save(stamp)
    stamp.with_suffix(".txt").write_text("my notes")
    args = {"out holds the backgrounds": ["--backgrounds", backgrounds / "images", "--out", backgrounds],
            "out inside the backgrounds": ["--backgrounds", backgrounds, "--out", backgrounds / "images" / "ds"],
            "stamp inside out": ["--stamp", stamp, "--out", stamp.parent]}[layout]
    before = files(tmp_path)
    r = cli("compose", *args, "--overwrite", "--count", 4, "--workers", 1)
    refused(r, "overlap")
    assert files(tmp_path) == before and not (backgrounds / "images" / "ds").exists()


@pytest.mark.parametrize("overwrite", [False, True])
def test_compose_refuses_a_folder_that_holds_no_dataset(tmp_path, overwrite):
    out = tmp_path / "mine"
    (out / "images").mkdir(parents=True)
    photo(1).save(out / "images" / "holiday.jpg")
    (out / "labels.csv").write_text("my own labels\n")
    before = files(out)
    r = cli("compose", "--out", out, "--count", 4, "--workers", 1, *(["--overwrite"] if overwrite else []))
    refused(r, "holds no stampcheck dataset")
    assert files(out) == before


def test_compose_overwrite_removes_only_what_the_dataset_wrote(tmp_path):
    ds = tmp_path / "ds"
    compose_dataset(ComposeConfig(count=5, seed=1, max_size=96), ds)
    ours = {f"{i:06d}.jpg" for i in range(5)}
    assert {p.name for p in (ds / "images").iterdir()} == ours
    (ds / "notes.txt").write_text("keep me")
    photo(7, (120, 90)).save(ds / "images" / "mine.jpg")
    photo(8, (120, 90)).save(ds / "images" / "000099.jpg")  # named like compose's, listed nowhere
    (ds / "yolo" / "mine.txt").write_text("0 0.5 0.5 0.1 0.1\n")
    users = {p: h for p, h in files(ds).items() if Path(p).name in ("notes.txt", "mine.jpg", "000099.jpg", "mine.txt")}
    assert len(users) == 4

    r = cli("compose", "--out", ds, "--count", 3, "--seed", 2, "--max-size", 96, "--workers", 1, "--overwrite")
    assert r.returncode == 0 and "Traceback" not in r.output, r.output[-3000:]
    after = files(ds)
    assert all(after.get(p) == h for p, h in users.items())  # the user's files, byte for byte
    assert {p.name for p in (ds / "images").iterdir()} == {"000000.jpg", "000001.jpg", "000002.jpg", "mine.jpg",
                                                           "000099.jpg"}
    assert sorted(i.file for i in read_labels(ds)) == ["000000.jpg", "000001.jpg", "000002.jpg"]
    assert json.loads((ds / "dataset.json").read_text())["seed"] == 2 and (ds / "preview.png").is_file()


@pytest.mark.slow
def test_bad_looks_are_refused_before_anything_is_written(tmp_path):
    out = tmp_path / "ds"
    for option, values in [("--scale", ("0", ".3")), ("--jpeg-quality", ("0", "200")), ("--scale", ("0.9", "0.1"))]:
        line = refused(cli("compose", "--out", out, "--count", 4, "--workers", 1, option, *values), option)
        assert not out.exists(), line
    r = cli("compose", "--out", out, "--count", 4, "--workers", 1, "--max-size", 96, "--scale", "0.1", "0.9")
    assert r.returncode == 0, r.output[-3000:]  # the corrected run is not refused for an earlier fingerprint


@pytest.mark.parametrize("look, option", [
    (dict(opacity=(2, 3)), "--opacity"), (dict(fade=(2, 3)), "--fade"), (dict(blur=(-3, -1)), "--blur"),
    (dict(noise=(0, float("inf"))), "--noise"), (dict(brightness=(0, 1)), "--brightness"),
    (dict(scale=(float("nan"), 0.3)), "--scale"), (dict(scale=(0.1, 2.0)), "--scale"),
    (dict(glare_share=1.5), "--glare-share"), (dict(max_stamps=0), "--max-stamps"),
    (dict(ink_colours=("nocolour",)), "--ink-colour"), (dict(rotation=-1.0), "--rotation")])
def test_every_look_is_checked_against_its_domain(look, option):
    with pytest.raises(LooksError, match=option):
        Looks(**look)


def test_a_decompression_bomb_stamp_is_refused(tmp_path):
    (tmp_path / "bomb.png").write_bytes(huge_header_png())
    refused(cli("compose", "--stamp", tmp_path / "bomb.png", "--out", tmp_path / "o", "--count", 2), "too large")
    assert not (tmp_path / "o").exists()


def test_labels_outside_images_or_the_image_name_their_rows_unwrapped(tmp_path):
    # a path far longer than 80 columns: the error line must stay one line (no wrapping off a terminal)
    ds = square_dataset(tmp_path / ("long-folder-name-" * 6) / ("deeper-" * 12) / "ds", n=4)
    photo(9, (128, 96)).save(ds / "outside.png")
    with open(ds / "labels.csv", "a") as f:
        f.write("../outside.png,train,x,0,,,,,\n"        # line 6: out of images/
                "0.png,train,b0,1,10,10,inf,40,stamp\n"  # line 7
                "1.png,train,b1,1,nan,10,50,40,stamp\n"  # line 8
                "2.png,train,b2,1,100,10,129,40,stamp\n")  # line 9: past the 128 px width
    r = cli("preview", ds, "--out", tmp_path / "p.png")
    line = refused(r, str(ds / "labels.csv"), "4 bad rows")
    assert len(line) > 200
    for n, why in [(6, "inside images/"), (7, "not finite"), (8, "not finite"), (9, "outside the 128x96 image")]:
        assert any(f"line {n} " in x and why in x for x in r.output.splitlines()), (n, r.output)
    assert not (tmp_path / "p.png").exists()


def test_preview_refuses_to_write_among_the_images(tmp_path):
    ds = square_dataset(tmp_path / "ds", n=4)
    before = files(ds)
    refused(cli("preview", ds, "--out", ds / "images" / "grid.png"), "overlap")
    refused(cli("preview", ds, "--out", ds / "labels.csv"), ".png")
    assert files(ds) == before


def test_labels_saved_with_a_bom_are_read(tmp_path):
    ds = square_dataset(tmp_path / "ds", n=4)
    (ds / "labels.csv").write_bytes(b"\xef\xbb\xbf" + (ds / "labels.csv").read_bytes())
    assert len(read_labels(ds)) == 4
    # saved by a spreadsheet in a legacy code page: the message names the file, not just a byte
    (ds / "labels.csv").write_bytes((ds / "labels.csv").read_bytes()[3:] + "caf\xe9.jpg,0,,,,\n".encode("cp1252"))
    with pytest.raises(DatasetError, match=r"labels\.csv is not UTF-8"):
        read_labels(ds)


def model_folder(path: Path, classes: list[str]) -> Path:
    """A real (untrained) model folder, as train writes it, without spending a training run."""
    from stampcheck.train.callbacks import save_weights
    from stampcheck.train.model import build_model

    model, _ = build_model("resnet18", len(classes), pretrained=False)
    path.mkdir(parents=True)
    save_weights(model, path, {"arch": "resnet18", "size": 64, "classes": classes, "mean": [0.485, 0.456, 0.406],
                               "std": [0.229, 0.224, 0.225], "threshold": 0.5, "train": {"mixed_precision": False}})
    return path


@pytest.fixture(scope="module")
def composed(tmp_path_factory) -> Path:
    ds = tmp_path_factory.mktemp("composed") / "ds"
    compose_dataset(ComposeConfig(count=16, seed=2, max_size=96, looks=EASY), ds)
    return ds


@pytest.mark.slow
def test_train_refuses_to_replace_a_model_unless_asked(composed, tmp_path):
    out = model_folder(tmp_path / "m", ["qc-passed"])
    (out / "notes.txt").write_text("keep me")
    before = files(out)
    refused(cli("train", composed, "--out", out, "--epochs", 1, "--size", 64, "--no-pretrained"), "--overwrite")
    assert files(out) == before


def test_train_refuses_overlapping_folders(composed, tmp_path):
    from stampcheck.train.learner import TrainConfig, train

    model_folder(tmp_path / "a", ["qc-passed"])
    cfg = dict(arch="resnet18", size=64, epochs=1, bs=8, pretrained=False, workers=0, verifier=False)
    before = files(composed, tmp_path)
    for out, extra in [(composed / "model", {}), (tmp_path / "a", {"init": str(tmp_path / "a")})]:
        with pytest.raises(ValueError, match="overlap"):
            train(composed, out, TrainConfig(**cfg, **extra), overwrite=True)
    assert files(composed, tmp_path) == before and not (composed / "model").exists()


@pytest.mark.slow
def test_train_skips_a_truncated_image_and_replaces_only_its_own_files(composed, tmp_path):
    ds = tmp_path / "ds"
    compose_dataset(ComposeConfig(count=16, seed=2, max_size=96, looks=EASY), ds)
    broken = sorted((ds / "images").iterdir())[3]
    broken.write_bytes(broken.read_bytes()[:400])
    (ds / "labels.csv").write_bytes(b"\xef\xbb\xbf" + (ds / "labels.csv").read_bytes())  # as Excel saves it
    out = model_folder(tmp_path / "m", ["qc-passed"])
    (out / "lr_find.png").write_bytes(b"an earlier run's plot")
    (out / "notes.txt").write_text("keep me")
    data_before, notes = files(ds), files(out / "notes.txt")
    r = cli("train", ds, "--out", out, "--overwrite", "--arch", "resnet18", "--size", 64, "--epochs", 1, "--bs", 8,
            "--no-pretrained", "--workers", 0, "--no-verifier")
    assert r.returncode == 0 and "Traceback" not in r.output, r.output[-3000:]
    assert f"skipped unreadable image images/{broken.name}" in r.output
    assert files(ds) == data_before and files(out / "notes.txt") == notes
    assert not (out / "lr_find.png").exists()  # an earlier run's file would be taken for this model's
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["epochs"] and metrics["final"]["images"] == sum(i.split == "valid" for i in read_labels(ds)
                                                                   if i.file != broken.name)


@pytest.mark.slow
def test_evaluate_checks_classes_against_the_model(composed, tmp_path):
    from stampcheck.qa.evaluate import evaluate

    before = files(composed)
    two = model_folder(tmp_path / "two", ["lab-seal", "other-seal"])
    refused(cli("evaluate", two, composed), "qc-passed", "lab-seal")
    with pytest.raises(ValueError, match="overlap"):
        evaluate(two, composed, out=composed / "eval")
    # a one-class model takes any class name as its own
    one = model_folder(tmp_path / "one", ["seal"])
    report = evaluate(one, composed, out=tmp_path / "eval", device="cpu", workers=0, progress=no_progress)
    assert report["metrics"]["images"] == len(read_labels(composed)) and np.isfinite(report["metrics"]["ap50"])
    assert files(composed) == before



# Found by trying the safety fixes as an attacker would: outputs written over a user's files.

@pytest.mark.slow
def test_report_folders_of_other_owners_are_refused_and_untouched(composed, tmp_path):
    model = model_folder(tmp_path / "model", ["qc-passed"])
    site = tmp_path / "site"
    site.mkdir()
    (site / "index.html").write_text("<h1>my website</h1>")
    (site / "results.csv").write_text("a,b\n")
    trained = model_folder(tmp_path / "trained", ["qc-passed"])
    (trained / "metrics.json").write_text('{"my": "metrics"}')
    before = files(site, trained, composed, model)
    photo = composed / "images" / "000000.jpg"
    refused(cli("qa", model, photo, "--out", site), "did not write")
    refused(cli("evaluate", model, composed, "--out", trained), "did not write")
    refused(cli("qa", model, photo, "--out", trained), "did not write")  # a model folder is no report folder
    assert files(site, trained, composed, model) == before
    # its own folder again is fine, and a report folder is refused to the other command
    assert cli("qa", model, photo, "--out", tmp_path / "rep").returncode in (0, 1)
    assert cli("qa", model, photo, "--out", tmp_path / "rep").returncode in (0, 1)
    refused(cli("evaluate", model, composed, "--out", tmp_path / "rep"), "did not write")


@pytest.mark.slow
def test_links_out_of_the_tools_folders_are_refused(composed, tmp_path):
    user = tmp_path / "frames"
    user.mkdir()
    for i in range(3):
        (user / f"00000{i}.jpg").write_bytes((composed / "images" / "000000.jpg").read_bytes())
    ds = tmp_path / "d"
    shutil.copytree(composed, ds)
    shutil.rmtree(ds / "images")
    (ds / "images").symlink_to(user)
    rep = tmp_path / "rep"
    rep.mkdir()
    (rep / "annotated").symlink_to(user)
    (rep / ".stampcheck").write_text("qa\n")
    model = model_folder(tmp_path / "model", ["qc-passed"])
    before = files(user)
    refused(cli("compose", "--count", 3, "--max-size", 64, "--out", ds, "--workers", 1, "--overwrite"), "link")
    refused(cli("qa", model, composed / "images" / "000001.jpg", "--out", rep, "--annotate"), "link")
    assert files(user) == before


def test_preview_never_replaces_an_existing_picture_and_fifo_stamps_are_refused(composed, tmp_path):
    pic = tmp_path / "mine.png"
    pic.write_bytes((composed / "images" / "000000.jpg").read_bytes())
    before = files(tmp_path)
    refused(cli("preview", composed, "--out", pic), "exists")
    os.mkfifo(tmp_path / "fifo.png")
    refused(cli("compose", "--stamp", tmp_path / "fifo.png", "--count", 4, "--out", tmp_path / "c", timeout=60),
            "not a regular file")
    assert {k: v for k, v in files(tmp_path).items()} == before


@pytest.mark.slow
def test_devices_this_machine_lacks_are_usage_errors(composed, tmp_path):
    model = model_folder(tmp_path / "model", ["qc-passed"])
    photo = composed / "images" / "000000.jpg"
    refused(cli("qa", model, photo, "--out", tmp_path / "r", "--device", "bogus"), "bogus")
    if not __import__("torch").cuda.is_available():
        refused(cli("evaluate", model, composed, "--device", "cuda"), "no CUDA GPU")


@pytest.mark.slow
def test_evaluate_on_a_set_whose_every_image_is_unreadable_says_so(tmp_path):
    ds = tmp_path / "ds"
    (ds / "images").mkdir(parents=True)
    (ds / "images" / "a.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    (ds / "labels.csv").write_text("file,split,background,has_stamp,x0,y0,x1,y1,class\na.jpg,valid,b,0,,,,,\n")
    model = model_folder(tmp_path / "model", ["qc-passed"])
    refused(cli("evaluate", model, ds), "could be read")
