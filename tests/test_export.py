"""`stampcheck export`, the ONNX engine (`qa --engine onnx`, no torch needed) and the Python API."""

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from stampcheck.compose.composer import ComposeConfig, compose_dataset
from stampcheck.app.api import Detector
from stampcheck.app.cli import FULL_ONLY
from stampcheck.images import find_images
from stampcheck.engine.config import ModelError
from stampcheck.engine.decode import PhotoResult, find_stamps
from stampcheck.engine.onnx import OnnxModel
from stampcheck.engine.photos import read_photo
from stampcheck.engine.run import predict_photos
from tests.conftest import SHARED_PHOTOS, dead_pid, photo, write_exif_rotated
from tests.test_train import EASY
from stampcheck.engine.graph import split_output
from stampcheck.train.detect import detect, to_pixels
from stampcheck.train.export import export
from stampcheck.train.learner import TrainConfig, train
from stampcheck.engine.torch_engine import Predictor

ROOT = Path(__file__).resolve().parents[1]
SCORE_TOL, BOX_TOL = 1e-3, 0.5  # what the ONNX engine may differ from torch's (fp32) by; boxes in px


def run_cli(*args, code: str | None = None):
    """The CLI in a fresh interpreter; ``code`` runs first (the import blocker)."""
    prog = (code or "") + "\nimport sys\nsys.argv[0] = 'stampcheck'\nfrom stampcheck.app.cli import main\nmain()"
    return subprocess.run([sys.executable, "-c", prog, *map(str, args)], capture_output=True, text=True,
                          cwd=ROOT, timeout=300)


# What a PC with only `pip install stampcheck[runtime]` lacks: importing any of it fails.
NO_TORCH = f"""
import sys
class NotInstalled:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {sorted(FULL_ONLY | {"onnx"})!r}:
            raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
sys.meta_path.insert(0, NotInstalled())
"""


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("export")
    compose_dataset(ComposeConfig(count=24, seed=2, max_size=96, looks=EASY), root / "ds")
    train(root / "ds", root / "model", TrainConfig(verifier=False, arch="resnet18", size=64, epochs=1, bs=8, pretrained="none",
                                                   workers=0), log=lambda *a: None)
    r = run_cli("export", root / "model")
    assert r.returncode == 0 and "exported" in r.stdout and "checked" in r.stdout, r.stdout + r.stderr
    photos = root / "photos"
    photos.mkdir()
    for f in sorted((root / "ds" / "images").iterdir())[:3]:
        shutil.copy(f, photos / f.name)
    photo(5).convert("CMYK").save(photos / "cmyk.jpg")
    photo(6, (300, 200)).save(photos / "upright.png")
    write_exif_rotated(photos / "rotated.jpg", photo(6, (300, 200)))
    photo(7, (4000, 3000)).save(photos / "large.jpg", quality=85)
    (photos / "corrupt.jpg").write_bytes((photos / "large.jpg").read_bytes()[:500])
    return root


def real_photos(every: int = 40) -> list[Path]:
    return find_images([SHARED_PHOTOS])[::every] if SHARED_PHOTOS.is_dir() else []


def assert_same_detections(a: PhotoResult, b: PhotoResult, score_tol=SCORE_TOL, box_tol=BOX_TOL):
    assert (a.error, a.width, a.height) == (b.error, b.width, b.height)
    if a.error:
        return
    assert abs(a.score - b.score) <= score_tol and np.allclose(a.top_box, b.top_box, atol=box_tol), a.path
    assert len(a.detections) == len(b.detections) > 0, a.path
    for (s1, c1, b1), (s2, c2, b2) in zip(a.detections, b.detections):
        assert c1 == c2 and abs(s1 - s2) <= score_tol and np.allclose(b1, b2, atol=box_tol), a.path


@pytest.mark.slow
def test_onnx_gives_torchs_detections_on_real_and_generated_photos(tiny):
    files = find_images([tiny / "photos"]) + real_photos()
    torch_engine = Predictor(tiny / "model", "cpu", mixed_precision=False)
    onnx_engine = OnnxModel(tiny / "model" / "model.onnx")
    # trained at 64 px, the model predicts at the size its valid split chose (train.views)
    size = torch_engine.size
    assert onnx_engine.classes == torch_engine.classes and onnx_engine.size == size in (64, 80)
    # the graph's own outputs: per-cell scores and boxes in input pixels; a batch size it was not exported with
    batch = np.stack([p.pixels for p in (read_photo(f, size) for f in files) if p.pixels is not None])
    (ts, tb), (os_, ob) = torch_engine.run(batch), onnx_engine.run(batch)
    cells = (size // 16) ** 2
    assert ts.shape == (len(batch), cells, 1) and tb.shape == (len(batch), cells, 4)
    assert np.abs(ts - os_).max() <= SCORE_TOL and np.abs(tb - ob).max() <= BOX_TOL
    assert np.ptp(ts) > 1e-3  # the photos tell the cells apart: a graph that ignored its input would fail
    # whole photos, in the photos' own pixels, batches of 3 against batches of 32; threshold 0 keeps
    # every cell, so NMS is compared too
    by_torch = list(predict_photos(torch_engine, files, low_threshold=0.0))
    by_onnx = list(predict_photos(onnx_engine, files, bs=3, low_threshold=0.0, workers=2))
    assert [r.path for r in by_onnx] == files and sum(r.error is not None for r in by_onnx) == 1
    for a, b in zip(by_torch, by_onnx):
        assert_same_detections(a, b)
    large = next(r for r in by_onnx if r.path.name == "large.jpg")
    assert (large.width, large.height) == (4000, 3000) and large.top_box[2] <= 4000


@pytest.mark.slow
def test_the_onnx_example_gives_qas_numbers_with_numpy_pillow_and_onnxruntime_alone(tiny, tmp_path):
    model = tiny / "model" / "model.onnx"
    odd = tmp_path / "odd"  # what qa brings to 8-bit RGB its own way: 16-bit grey, float, large with alpha
    odd.mkdir()
    grey = np.asarray(photo(8, (400, 300)).convert("L"), dtype=np.uint16) * 257
    Image.fromarray(grey).save(odd / "grey16.png")
    Image.fromarray(grey.astype(np.float32) / 3).save(odd / "float.tif")
    rgba = photo(9, (1200, 900)).convert("RGBA")
    rgba.putalpha(Image.linear_gradient("L").resize((1200, 900)))
    rgba.save(odd / "alpha-large.png")
    files = [f for f in find_images([tiny / "photos"]) if f.name != "corrupt.jpg"]  # large, rotated, CMYK, PNG
    files += sorted(odd.iterdir())
    engine = OnnxModel(model)
    want = {str(r.path): r for r in predict_photos(engine, files)}
    # torch, fastai, onnx and stampcheck itself unimportable: numpy, Pillow and onnxruntime are all it has
    blocked = sorted(FULL_ONLY | {"onnx", "stampcheck", "train", "qa", "compose", "crawler"})
    code = (f"import sys, runpy\nclass NotInstalled:\n    def find_spec(self, name, path=None, target=None):\n"
            f"        if name.split('.')[0] in {blocked!r}:\n            raise ModuleNotFoundError(name, name=name)\n"
            f"sys.meta_path.insert(0, NotInstalled())\n"
            f"runpy.run_path({str(ROOT / 'examples' / 'onnx_predict.py')!r}, run_name='__main__')")
    r = subprocess.run([sys.executable, "-c", code, str(model), *map(str, files)], capture_output=True, text=True,
                       timeout=120, cwd=tiny)
    assert r.returncode == 0, r.stderr
    got = [json.loads(line) for line in r.stdout.splitlines()]
    assert [g["file"] for g in got] == [str(f) for f in files]
    for g in got:
        w = want[g["file"]]
        assert abs(g["score"] - w.score) < 1e-6 and g["stamped"] == bool(w.found()), g["file"]
        assert len(g["found"]) == len(w.found())
        for (s1, c1, b1), (s2, c2, b2) in zip(g["found"], w.found()):
            assert c1 == c2 and abs(s1 - s2) < 1e-6 and np.allclose(b1, b2, atol=1e-3), g["file"]


@pytest.mark.slow
def test_qa_on_the_onnx_file_needs_no_torch_and_agrees_with_torch(tiny, tmp_path):
    expected = {r.path.name: r for r in predict_photos(Predictor(tiny / "model", "cpu", mixed_precision=False),
                                                       find_images([tiny / "photos"]), low_threshold=0.0)}
    # a threshold halfway between two photos' scores: some photos pass, some fail, none is near the cut
    tops = sorted({r.score for r in expected.values() if not r.error})
    k = max(range(1, len(tops)), key=lambda i: tops[i] - tops[i - 1])
    thr = round((tops[k - 1] + tops[k]) / 2, 6)
    r = run_cli("qa", tiny / "model" / "model.onnx", tiny / "photos", "--out", tmp_path / "qa", "--engine", "onnx",
                "--threshold", thr, code=NO_TORCH)
    assert r.returncode == 1, r.stdout + r.stderr  # some stamps missing (and the corrupt photo is no pass)
    rows = list(csv.DictReader(open(tmp_path / "qa" / "results.csv")))  # one row per stamp found
    assert (tmp_path / "qa" / "index.html").stat().st_size > 1000
    assert {Path(row["file"]).name for row in rows} == set(expected)
    for row in rows:
        want = expected[Path(row["file"]).name]
        if want.error:
            assert row["status"] == "error" and row["error"] == want.error
            continue
        found = [d for d in want.detections if d[0] >= thr]
        assert row["has_stamp"] == str(int(bool(found)))
        if found:
            same = [f for f in found if abs(f[0] - float(row["score"])) <= SCORE_TOL + 1e-4]
            assert same and any(np.allclose([float(row[k]) for k in ("x0", "y0", "x1", "y1")], b, atol=1)
                                for _, _, b in same)
        else:
            assert abs(float(row["score"]) - want.score) <= SCORE_TOL + 1e-4
    assert 0 < sum(row["has_stamp"] == "1" for row in rows) == sum(d[0] >= thr for r in expected.values() for d in r.detections or [])

    r = run_cli("qa", tiny / "model", tiny / "photos", "--out", tmp_path / "torch", code=NO_TORCH)
    out = (r.stdout + r.stderr).strip()
    assert r.returncode == 2 and out.startswith("error:") and "--engine onnx" in out and len(out.splitlines()) == 1, out
    assert not (tmp_path / "torch").exists()


def test_python_api_without_torch_on_files_pil_images_and_arrays(tiny, tmp_path):
    png = tiny / "photos" / "upright.png"
    script = NO_TORCH + f"""
import json
import numpy as np
from PIL import Image
from stampcheck import Detector
d = Detector({str(tiny / "model")!r}, engine="onnx")
img = Image.open({str(png)!r})
out = [d.predict(x, threshold=0.0) for x in ({str(png)!r}, img, np.asarray(img))]
print(json.dumps([[[x.score, x.label, list(x.box)] for x in dets] for dets in out]))
"""
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert r.returncode == 0, r.stderr
    by_path, by_pil, by_array = json.loads(r.stdout)
    assert by_path == by_pil == by_array and by_path and by_path[0][1] == "qc-passed"
    assert all(0 <= x0 < x1 <= 300 and 0 <= y0 < y1 <= 200 for _, _, (x0, y0, x1, y1) in by_path)
    # the torch engine finds the same stamps (it may run in bf16 where the CPU has it: looser bounds)
    with_torch = Detector(tiny / "model").predict(np.asarray(Image.open(png)), threshold=0.0)
    assert abs(with_torch[0].score - by_path[0][0]) < 0.02 and np.allclose(with_torch[0].box, by_path[0][2], atol=3)
    # EXIF turns are followed for files, not for images handed over as they are
    rotated = tiny / "photos" / "rotated.jpg"
    assert Detector(tiny / "model").predict(rotated, threshold=0.0)[0].box[2] <= 300
    with pytest.raises(ValueError, match="H x W x 3 uint8"):
        Detector(tiny / "model", engine="onnx").predict(np.zeros((20, 20), np.float32))


def test_import_stampcheck_is_cheap():
    r = subprocess.run([sys.executable, "-c", "import sys, stampcheck; from stampcheck import Detector; "
                        "print(sorted({'torch', 'fastai', 'onnxruntime'} & set(sys.modules)))"],
                       capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert r.stdout.strip() == "[]", r.stdout + r.stderr


@pytest.mark.slow
def test_torchscript_export_runs_like_the_model(tiny, tmp_path):
    path, difference = export(tiny / "model", "torchscript", tmp_path / "m.torchscript")
    assert difference == (0.0, 0.0)
    extra = {"stampcheck.json": ""}
    loaded = torch.jit.load(str(path), _extra_files=extra)
    assert json.loads(extra["stampcheck.json"])["config"]["classes"] == ["qc-passed"]
    engine = Predictor(tiny / "model", "cpu", mixed_precision=False)
    batch = np.stack([read_photo(f, engine.size).pixels for f in find_images([tiny / "photos"])
                      if f.name != "corrupt.jpg"])
    expected = engine.run(batch)
    with torch.no_grad():
        got = loaded(torch.from_numpy(batch))
    for e, g in zip(expected, got):
        assert np.abs(e - g.numpy()).max() < 1e-4


@pytest.mark.slow
def test_export_replaces_only_its_own_files_and_a_stale_export_is_refused(tiny, tmp_path):
    notes = tmp_path / "notes.onnx"
    notes.write_text("not a model")
    weights = (tiny / "model" / "model.pth").read_bytes()
    for out in (notes, tiny / "model" / "model.pth"):  # (the CLI makes a ValueError one line and exit 2)
        with pytest.raises(ValueError, match="not an earlier stampcheck export"):
            export(tiny / "model", "onnx", out)
    assert notes.read_text() == "not a model" and (tiny / "model" / "model.pth").read_bytes() == weights
    with pytest.raises(ValueError, match="choose one of"):
        export(tiny / "model", "tflite")

    # a folder trained again after its export: the old model.onnx would give the old model's answers
    model = tmp_path / "model"
    model.mkdir()
    for name in ("config.json", "model.pth", "model.onnx"):
        shutil.copy(tiny / "model" / name, model / name)
    assert OnnxModel(model).threshold == json.loads((model / "config.json").read_text())["threshold"]
    state = torch.load(model / "model.pth", weights_only=True)
    state["out.bias"] += 1
    torch.save(state, model / "model.pth")
    with pytest.raises(ModelError, match="export .* again"):
        OnnxModel(model)
    # an export killed mid-write left its temporary file; a live one's and a user's are not ours to take
    killed, live, users = (model / f".model.onnx.{dead_pid()}.part", model / f".model.onnx.{os.getppid()}.part",
                           model / ".model.onnx.part")
    for f in (killed, live, users):
        f.write_bytes(b"partial")
    path, _ = export(model, "onnx")  # its own earlier export: replaced
    assert not killed.exists() and live.exists() and users.exists()
    assert path == model / "model.onnx" and OnnxModel(model).size == json.loads((model / "config.json").read_text())["size"]
    for bad in (tmp_path / "nothing", notes):
        with pytest.raises(ModelError):
            OnnxModel(bad)


def test_runtime_decoding_is_train_detect():
    """The numpy decoding both engines share gives what the training's valid threshold was chosen with."""
    g = torch.Generator().manual_seed(0)
    n_classes, size = 2, 128
    out = torch.cat([torch.randn(3, n_classes, 8, 8, generator=g) * 3, torch.randn(3, 4, 8, 8, generator=g) * 0.7], 1)
    logits, boxes = split_output(out, n_classes)
    scores, pixels = logits.sigmoid().numpy(), ((boxes + 1) * size / 2).numpy()
    for b, want in enumerate(detect(out, n_classes, 0.3)):
        r = PhotoResult(Path(), 640, 480)
        find_stamps(r, scores[b], pixels[b], size, ["a", "b"], 0.3)
        assert r.score == pytest.approx(want["score"]) and np.allclose(r.top_box, to_pixels(want["box"], 640, 480))
        s, c, bx = want["dets"]
        assert len(r.detections) == len(s) > 1
        for (score, label, box), s1, c1, b1 in zip(r.detections, s, c, bx):
            assert score == pytest.approx(float(s1)) and label == "ab"[int(c1)]
            assert np.allclose(box, to_pixels(b1, 640, 480), atol=1e-3)


# A file from elsewhere carries whatever config its maker wrote: each bad value is refused as in a
# config.json, before a photo is read (a threshold below 0 would pass every photo, a size of 8192
# take GBs for two photos).
BAD_METADATA = {
    "threshold-below-0": ({"threshold": -1}, "threshold must be a number from 0 to 1"),
    "threshold-nan": ({"threshold": float("nan")}, "threshold must be a number from 0 to 1, not nan"),
    "threshold-text": ({"threshold": "0.5"}, "threshold must be a number"),
    "no-classes": ({"classes": []}, "classes must be a non-empty list"),
    "more-classes-than-the-graph": ({"classes": ["qc-passed", "other"]}, "gives scores .* 2 classes"),
    "size-8192": ({"size": 8192}, "size must be a whole number of pixels from 32 to 2048, not 8192"),
    "arch": ({"arch": "vit"}, "arch is 'vit'"),
    "std-0": ({"std": [0, 1, 1]}, "std must be 3 numbers"),
}


def bad_onnx(tiny, folder: Path, change: dict) -> Path:
    """The tiny export with ``change`` made to the config in its metadata; a changed size is the
    graph's input size too, as a file exported at that size would have it."""
    import onnx

    from stampcheck.engine.config import META_KEY

    model = onnx.load(str(tiny / "model" / "model.onnx"))
    prop = next(p for p in model.metadata_props if p.key == META_KEY)
    meta = json.loads(prop.value)
    meta["config"].update(change)
    prop.value = json.dumps(meta)  # NaN written as JSON's NaN, which json.loads reads back
    if "size" in change:
        for dim in model.graph.input[0].type.tensor_type.shape.dim[2:]:
            dim.dim_value = change["size"]
    path = folder / "model.onnx"  # alone in its folder: no model.pth beside it to be stale against
    folder.mkdir()
    onnx.save(model, str(path))
    return path


@pytest.mark.slow
@pytest.mark.parametrize("case", sorted(BAD_METADATA))
def test_onnx_metadata_is_checked_as_config_json_is(tiny, tmp_path, case):
    change, why = BAD_METADATA[case]
    path = bad_onnx(tiny, tmp_path / "model", change)
    with pytest.raises(ModelError, match=why):  # the Python API's ONNX engine
        Detector(path, engine="onnx")
    r = run_cli("qa", path, tiny / "photos", "--out", tmp_path / "qa", "--engine", "onnx", code=NO_TORCH)
    out = (r.stdout + r.stderr).strip()
    assert r.returncode == 2 and out.startswith("error:") and len(out.splitlines()) == 1, out
    assert "config in its metadata" in out or "gives scores" in out, out
    assert not (tmp_path / "qa").exists()  # exit 2: nothing written


def test_a_named_pipe_beside_an_export_never_blocks_its_load(tiny, tmp_path):
    """The weights an export is compared with (to tell a stale one) are read only from a regular file."""
    model = tmp_path / "model"
    model.mkdir()
    for name in ("config.json", "model.onnx"):
        shutil.copy(tiny / "model" / name, model / name)
    os.mkfifo(model / "model.pth")
    assert OnnxModel(model).classes == json.loads((model / "config.json").read_text())["classes"]
