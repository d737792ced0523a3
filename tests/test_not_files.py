"""A named pipe, a folder or a device where a file is expected: never opened as one, so no command
waits for a writer that never comes. Each case runs under a timeout: a reader that blocked would
fail the test instead of hanging the suite."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from stampcheck import errors
from stampcheck.dataset import DatasetError, read_labels, upright_size
from stampcheck.files import NotAFile, open_regular, read_bytes, read_text
from stampcheck.images import ImageRejected, open_checked
from stampcheck.engine.config import ModelError
from stampcheck.engine.onnx import OnnxModel
from tests.conftest import photo
from tests.test_train import square_dataset

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.timeout(120)


def cli(*args, timeout=90) -> subprocess.CompletedProcess:
    r = subprocess.run([sys.executable, "-m", "stampcheck", *map(str, args)], capture_output=True, text=True,
                       cwd=ROOT, timeout=timeout)
    r.output = r.stdout + r.stderr
    return r


def refused(r, *words) -> None:
    """Exit 2, one error line (and under it only the problems it lists, indented), no traceback, naming ``words``."""
    out = r.output.strip()
    lines = out.splitlines()
    assert r.returncode == errors.USAGE and out.startswith("error:"), out[-2000:]
    assert all(line.startswith("  ") for line in lines[1:]) and "Traceback" not in out, out[-2000:]
    for w in words:
        assert w in out, out


@pytest.mark.timeout(20)
def test_only_regular_files_are_opened(tmp_path):
    os.mkfifo(tmp_path / "pipe")
    (tmp_path / "link").symlink_to(tmp_path / "pipe")
    (tmp_path / "text").write_text("a\r\nb")
    for path, kind in ((tmp_path / "pipe", "a named pipe"), (tmp_path / "link", "a named pipe"),
                       (tmp_path, "a folder"), (Path(os.devnull), "a device")):
        with pytest.raises(NotAFile, match="not a regular file") as e:
            open_regular(path)
        assert e.value.kind == kind and isinstance(e.value, OSError)
    assert read_bytes(tmp_path / "text") == b"a\r\nb" and read_text(tmp_path / "text") == "a\nb"
    with pytest.raises(FileNotFoundError):
        read_bytes(tmp_path / "gone")
    # a photo's header and a photo
    assert upright_size(tmp_path / "pipe") is None
    # a dataset's labels.csv, an ONNX model (onnxruntime would open it itself)
    (tmp_path / "ds").mkdir()
    os.mkfifo(tmp_path / "ds" / "labels.csv")
    with pytest.raises(DatasetError, match="labels.csv is not a regular file"):
        read_labels(tmp_path / "ds")
    os.mkfifo(tmp_path / "model.onnx")
    with pytest.raises(ModelError, match="model.onnx is not a regular file"):
        OnnxModel(tmp_path)
    with pytest.raises(ImageRejected) as e:
        open_checked(tmp_path / "pipe")
    assert e.value.reason == "not-a-file"


def coco(folder: Path, names: list[str]) -> Path:
    """A COCO JSON listing ``names`` (each 320x240, unlabelled) beside it."""
    data = {"images": [{"id": i + 1, "file_name": n, "width": 320, "height": 240} for i, n in enumerate(names)],
            "annotations": [], "categories": [{"id": 1, "name": "stamp"}]}
    (folder / "coco.json").write_text(json.dumps(data))
    return folder / "coco.json"


@pytest.mark.slow
def test_evaluate_refuses_pipes_named_as_images_or_label_files(tmp_path):
    """evaluate reads the labelled set before the model: a model folder is not even needed to be refused."""
    photo(1).save(tmp_path / "a.jpg")
    os.mkfifo(tmp_path / "b.jpg")
    refused(cli("evaluate", tmp_path / "model", coco(tmp_path, ["a.jpg", "b.jpg"])), "b.jpg", "not a regular file")
    os.mkfifo(tmp_path / "pipe.json")
    refused(cli("evaluate", tmp_path / "model", tmp_path / "pipe.json"), "not a regular file")
    # YOLO: an image listed in a split's .txt list, and a label file
    yolo = tmp_path / "yolo"
    (yolo / "images").mkdir(parents=True)
    (yolo / "labels").mkdir()
    photo(2).save(yolo / "images" / "c.jpg")
    os.mkfifo(yolo / "images" / "d.jpg")
    (yolo / "val.txt").write_text("images/c.jpg\nimages/d.jpg\n")
    (yolo / "data.yaml").write_text("val: val.txt\nnames: [stamp]\n")
    refused(cli("evaluate", tmp_path / "model", yolo / "data.yaml"), "d.jpg", "not a regular file")
    (yolo / "val.txt").write_text("images/c.jpg\n")
    os.mkfifo(yolo / "labels" / "c.txt")
    refused(cli("evaluate", tmp_path / "model", yolo / "data.yaml"), "c.txt", "not a regular file")
    # labels.csv naming one
    ds = square_dataset(tmp_path / "ds", n=2)
    (ds / "images" / "1.png").unlink()
    os.mkfifo(ds / "images" / "1.png")
    refused(cli("evaluate", tmp_path / "model", ds), "images/1.png is not a regular file")


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    return square_dataset(tmp_path_factory.mktemp("squares") / "ds")


@pytest.mark.slow
def test_train_refuses_weights_that_are_no_torch_file(dataset, tmp_path):
    """A named pipe would block the read; a text file (/etc/hostname, say) is no torch file: the
    user's input, exit 2 in one line, and no model folder made."""
    os.mkfifo(tmp_path / "pipe.pth")
    (tmp_path / "hostname").write_text("vm\n")
    cases = {"pipe.pth": "not a regular file (a named pipe)", "hostname": "is not a torch weights file"}
    runs = {name: subprocess.Popen([sys.executable, "-m", "stampcheck", "train", dataset, "--out", tmp_path / f"model-{name}",
                                    "--weights", tmp_path / name, "--epochs", "1", "--size", "64",
                                    "--workers", "0"], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                   text=True) for name in cases}  # side by side: each spends its time importing
    try:
        for name, proc in runs.items():
            proc.output = proc.communicate(timeout=100)[0]
    finally:
        for proc in runs.values():
            proc.kill()
    for name, proc in runs.items():
        refused(proc, str(tmp_path / name), cases[name])
        assert not (tmp_path / f"model-{name}").exists()


def test_model_files_that_are_no_regular_files_are_refused(tmp_path):
    """--weights, --init's model folder and a base detector, as train and pretrain load them."""
    from stampcheck.engine.config import ModelError
    from stampcheck.engine.network import load_model_dir
    from stampcheck.train.model import build_model, load_base

    os.mkfifo(tmp_path / "pipe.pth")
    for weights in (tmp_path / "pipe.pth", tmp_path):
        with pytest.raises(ModelError, match="not a regular file"):
            build_model("resnet18", 1, pretrained="none", weights=weights)
    model, _ = build_model("resnet18", 1, pretrained="none")
    with pytest.raises(ModelError, match="not a regular file"):
        load_base(model, tmp_path / "pipe.pth")
    init = tmp_path / "init"
    init.mkdir()
    (init / "config.json").write_text(json.dumps({"arch": "resnet18", "classes": ["square"], "size": 64,
                                                  "threshold": 0.5, "mean": [0.5] * 3, "std": [0.2] * 3}))
    os.mkfifo(init / "model.pth")
    with pytest.raises(ModelError, match="model.pth is not a regular file"):
        load_model_dir(init)
    (init / "config.json").unlink()
    os.mkfifo(init / "config.json")
    with pytest.raises(ModelError, match="not a regular file"):
        load_model_dir(init)
