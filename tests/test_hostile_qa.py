"""qa against what users and attackers actually fed it: the CLI must end with the
documented exit code, report every input, never print a traceback and never touch the inputs.

The model is not trained: its head is forced (zero weights, chosen biases) so that it scores a
stamp everywhere and predicts boxes of zero width and height, the case that crashed box drawing.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import signal
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import pytest
import torch
from PIL import Image

from stampcheck.qa.batch import QASummary
from stampcheck.qa.report import write_annotated
from stampcheck import errors
from stampcheck.images import ImageRejected, may_be_photo, open_checked
from tests.conftest import dead_pid, huge_header_png, photo
from stampcheck.train.data import MEAN, STD
from stampcheck.train.detect import detect, to_pixels
from stampcheck.train.callbacks import save_weights
from stampcheck.train.plots import plot_samples
from stampcheck.engine.config import ModelError
from stampcheck.engine.network import load_model_dir
from stampcheck.train.model import build_model
from stampcheck.engine.decode import PhotoResult

ROOT = Path(__file__).resolve().parents[1]
LONG_NAME = "L" * 236 + ".jpg"  # 240 bytes: with the annotated copy's prefix and temp suffix, over NAME_MAX
FORMULA_NAME = '=HYPERLINK("evil.example?q","click").jpg'
NOT_UTF8_NAME = os.fsdecode(b"caf\xe9.jpg")  # Latin-1 bytes: Python holds them as surrogates
CONFIG = {"arch": "resnet18", "size": 64, "classes": ["qc-passed"], "mean": list(MEAN), "std": list(STD),
          "threshold": 0.5}


def qa_cli(*args, cwd=ROOT, timeout=120):
    """`python -m stampcheck qa ...` from any folder, importing this worktree's code."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    r = subprocess.run([sys.executable, "-m", "stampcheck", "qa", *map(str, args)], capture_output=True,
                       text=True, cwd=cwd, timeout=timeout, env=env)
    r.output = r.stdout + r.stderr
    assert "Traceback" not in r.output, r.output
    return r


def tree_state(folder: Path) -> dict:
    """Every entry under ``folder`` (links not followed): content hash, link target or 'dir'."""
    state = {}
    for dirpath, dirnames, filenames in os.walk(folder):
        for name in dirnames + filenames:
            p = os.path.join(dirpath, name)
            if os.path.islink(p):
                state[p] = "-> " + os.readlink(p)
            elif os.path.isfile(p):
                state[p] = hashlib.sha256(Path(p).read_bytes()).hexdigest()
            else:
                state[p] = "dir" if os.path.isdir(p) else "other"
    return state


def png_header(width: int, height: int) -> bytes:
    """conftest's crafted PNG, claiming ``width`` x ``height`` pixels instead."""
    data = bytearray(huge_header_png())
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    return bytes(data)


def jpeg_header(width: int, height: int) -> bytes:
    """A small real JPEG whose header claims ``width`` x ``height`` (a 108 MP phone photo's size)."""
    buf = io.BytesIO()
    photo(7).save(buf, "JPEG", quality=90)
    data = bytearray(buf.getvalue())
    sof = data.index(b"\xff\xc0")
    data[sof + 5:sof + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def forced_net():
    """A StampNet that scores ~1 in every cell and predicts boxes of width and height exp(-40) ~ 0."""
    model, _ = build_model("resnet18", 1, pretrained=False)
    with torch.no_grad():
        model.out.weight.zero_()
        model.out.bias.copy_(torch.tensor([8.0, -40.0, -40.0, -40.0, -40.0]))
    return model


@pytest.fixture(scope="module")
def forced_model(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("forced") / "model"
    folder.mkdir()
    save_weights(forced_net(), folder, CONFIG)
    return folder


@pytest.fixture(scope="module")
def hostile(tmp_path_factory, forced_model):
    """One qa run over a folder of hostile names and files, with stale partials in --out."""
    root = tmp_path_factory.mktemp("hostile")
    photos, out = root / "photos", root / "out"
    (photos / "sub").mkdir(parents=True)
    out.mkdir()
    photo(1).save(photos / "a.jpg", quality=90)
    photo(2).save(photos / "b.png")
    photo(3).save(photos / LONG_NAME, quality=90)
    photo(4).save(photos / FORMULA_NAME, quality=90)
    photo(5).save(photos / "sub" / "c.jpg", quality=90)
    photo(6).save(photos / NOT_UTF8_NAME, "JPEG", quality=90)
    os.mkfifo(photos / "pipe.jpg")  # opening it would wait for a writer forever
    (photos / "bomb.png").write_bytes(png_header(13000, 13000))  # 169 MP: 676 MB if decoded
    (photos / "big-phone.jpg").write_bytes(jpeg_header(12000, 9000))  # JPEG: decoded at 1/8 scale
    (photos / "dangling.jpg").symlink_to(root / "gone.jpg")
    (photos / "loop").symlink_to(".")
    (photos / "sub" / "up").symlink_to("..")
    dead, live = dead_pid(), os.getpid()
    stale = [out / f".results.csv.{dead}.part", out / f".results.jsonl.{dead}.part"]
    kept = [out / f".results.csv.{live}.part", out / f".notes.txt.{dead}.part", out / "mine.part"]
    for p in stale + kept:
        p.write_text("partial")
    (out / ".stampcheck").write_text("qa\n")  # the folder of an earlier qa run (killed)
    before = tree_state(photos), tree_state(forced_model)
    # run from inside the photo folder, so result paths start with the file name (as spreadsheets see them)
    r = qa_cli(forced_model, ".", "--out", out, "--annotate", "--workers", "0", cwd=photos)
    rows = list(csv.DictReader(open(out / "results.csv", newline=""))) if (out / "results.csv").exists() else []
    raw = [json.loads(line) for line in open(out / "results.jsonl")] if (out / "results.jsonl").exists() else []
    return {"r": r, "photos": photos, "out": out, "before": before, "after": (tree_state(photos),
            tree_state(forced_model)), "rows": rows, "raw": raw, "stale": stale, "kept": kept}


def by_file(rows):
    found = {}
    for row in rows:
        found.setdefault(row["file"], []).append(row)
    return found


@pytest.mark.slow
def test_zero_width_boxes_neither_crash_nor_stop_the_batch(hostile):
    r = hostile["r"]
    assert r.returncode == errors.UNREADABLE, r.output  # all readable photos stamped, two unreadable
    assert (hostile["out"] / "index.html").exists() and "report:" in r.stdout
    stamped = [row for row in hostile["raw"] if row["status"] == "ok"]  # one JSONL record per photo
    assert len(stamped) == len({row["file"] for row in stamped}) == 7
    assert all(row["has_stamp"] is True and row["detections"] for row in stamped)
    for row in stamped:  # every box at least a pixel, inside its photo
        for x0, y0, x1, y1 in (d["box"] for d in row["detections"]):
            assert 0 <= x0 < x1 <= row["width"] and 0 <= y0 < y1 <= row["height"], row


def test_every_input_is_a_row_broken_links_and_bombs_are_errors(hostile):
    rows = by_file(hostile["rows"])
    assert set(rows) == {"a.jpg", "b.png", LONG_NAME, "'" + FORMULA_NAME, "sub/c.jpg", "bomb.png", "dangling.jpg",
                         "caf\\xe9.jpg", "pipe.jpg", "big-phone.jpg"}  # names not UTF-8 shown as `ls -b` does
    big = {(row["width"], row["height"], row["status"]) for row in hostile["raw"] if row["file"] == "big-phone.jpg"}
    assert big == {(12000, 9000, "ok")}
    (link,), (bomb,), (pipe,) = rows["dangling.jpg"], rows["bomb.png"], rows["pipe.jpg"]
    assert pipe["status"] == "error" and pipe["error"].startswith("not-a-file")
    assert link["status"] == "error" and link["error"].startswith("broken-link") and "gone.jpg" in link["error"]
    assert bomb["status"] == "error" and bomb["error"].startswith("too-large"), bomb
    assert "unreadable" in hostile["r"].stdout


def test_long_names_are_annotated_under_names_that_fit(hostile):
    annotated = sorted((hostile["out"] / "annotated").iterdir())
    assert len(annotated) == 6  # every readable photo, the 240-byte name included, but the 108 MP one:
    assert "not annotated big-phone.jpg: too-large" in hostile["r"].output  # too large to decode in full
    assert all(len(os.fsencode(p.name)) <= 128 and p.suffix == ".jpg" for p in annotated)
    assert all(Image.open(p).size == (320, 240) for p in annotated)


def test_formulas_are_neutralised_in_csv_but_raw_in_jsonl(hostile):
    assert any(row["file"] == "'" + FORMULA_NAME for row in hostile["rows"])
    assert not any(row["file"][:1] in "=+-@\t\r" for row in hostile["rows"])
    files = {json.loads(line)["file"] for line in open(hostile["out"] / "results.jsonl")}
    assert FORMULA_NAME in files


def test_stale_partials_of_dead_runs_go_and_nothing_else(hostile):
    assert not any(p.exists() for p in hostile["stale"])
    assert all(p.read_text() == "partial" for p in hostile["kept"])


def test_inputs_and_model_are_untouched(hostile):
    assert hostile["after"] == hostile["before"]


@pytest.mark.slow
def test_glob_over_symlink_loops_ends_and_reports_broken_links(forced_model, tmp_path):
    x = tmp_path / "x"
    (x / "deep").mkdir(parents=True)
    photo(1).save(x / "a.jpg", quality=90)
    photo(2).save(x / "deep" / "b.jpg", quality=90)
    for name in ("l1", "l2", "deep/l3", "deep/l4"):  # 2^depth paths through loops for a glob that follows them
        (x / name).symlink_to(x)
    (x / "gone.jpg").symlink_to(tmp_path / "nothing.jpg")
    (tmp_path / "also-gone.jpg").symlink_to(tmp_path / "nothing.jpg")
    (tmp_path / "self").symlink_to("self")
    before = tree_state(x)
    r = qa_cli(forced_model, "x/**/*.jpg", "also-gone.jpg", "self", "--out", "report", "--workers", "0",
               cwd=tmp_path, timeout=90)
    assert r.returncode == errors.UNREADABLE, r.output
    rows = by_file(csv.DictReader(open(tmp_path / "report" / "results.csv", newline="")))
    assert set(rows) == {"x/a.jpg", "x/deep/b.jpg", "x/gone.jpg", "also-gone.jpg", "self"}
    assert all(rows[f][0]["error"].startswith("broken-link") for f in ("x/gone.jpg", "also-gone.jpg", "self"))
    assert tree_state(x) == before


@pytest.mark.slow
def test_a_batch_of_only_unreadable_files_is_no_pass(forced_model, tmp_path):
    """What is named or made as a photo is checked, and one that cannot be read is an error row;
    only a file neither named nor made as an image (a README) is skipped, and named."""
    photos = tmp_path / "photos"
    photos.mkdir()
    (photos / "notes.txt").write_text("not a photo")
    (photos / "text.jpg").write_text("not a photo either, but named as one")
    (photos / "gone.jpg").symlink_to(tmp_path / "nothing.jpg")
    r = qa_cli(forced_model, photos, "--out", tmp_path / "out", "--workers", "0")
    assert r.returncode == errors.UNREADABLE, r.output
    rows = list(csv.DictReader(open(tmp_path / "out" / "results.csv", newline="")))
    assert sorted(Path(row["file"]).name for row in rows) == ["gone.jpg", "text.jpg"]
    assert all(row["status"] == "error" for row in rows)
    assert "not photos by name or content: 1 (" in r.output and "notes.txt" in r.output
    # the console names each unreadable photo and why, as results.csv does, and the size read at
    assert "unreadable 2 (" in r.output and "gone.jpg: broken-link" in r.output and "text.jpg: " in r.output, r.output
    size = json.loads((forced_model / "config.json").read_text())["size"]
    assert f"2 photos at {size} px, one stage, threshold" in r.output, r.output
    (photos / "text.jpg").unlink()
    (photos / "gone.jpg").unlink()
    named = photos.rename(tmp_path / "photos\x1b[2J\nof line 3")  # the error names it, escaped, on one line
    r = qa_cli(forced_model, named, "--out", tmp_path / "out2", "--workers", "0")
    assert r.returncode == errors.USAGE and "no photos found" in r.output and "content: 1)" in r.output, r.output
    assert "\x1b" not in r.output and len(r.output.strip().splitlines()) == 1, r.output
    assert not (tmp_path / "out2").exists()


def test_telling_a_photo_from_a_document_never_blocks_or_guesses_no(tmp_path):
    """A pipe (a reader would wait for ever) and a name that is gone count as photos, so reading
    them reports why; only what Pillow cannot identify as any image is a document."""
    os.mkfifo(tmp_path / "pipe")
    assert may_be_photo(tmp_path / "pipe") and may_be_photo(tmp_path / "gone")
    (tmp_path / "readme").write_text("# photos")
    assert not may_be_photo(tmp_path / "readme")


def test_every_format_pillow_writes_and_reads_is_read_at_its_first_frame():
    """A photo in any raster format Pillow round-trips is decoded to its own colours, whatever the
    format's quirks: SPIDER refuses any seek, a PSD opens past its frame 0 (Pillow cannot write one,
    so it is built here), an animation is read at its first frame. EPS needs Ghostscript, not ours."""
    Image.init()
    read, wrong = [], {}
    for fmt in sorted(set(Image.SAVE) & set(Image.OPEN) - {"EPS"}):
        for mode in ("RGB", "L", "P", "1"):
            source = Image.new(mode, (256, 256), "white")
            buf = io.BytesIO()
            try:
                source.save(buf, format=fmt)
            except (OSError, ValueError, KeyError):
                continue  # this format cannot hold this mode, or its codec is not built in
            try:
                got = open_checked(buf.getvalue()).getpixel((40, 40))
                if max(abs(a - b) for a, b in zip(got, source.convert("RGB").getpixel((40, 40)))) > 8:
                    wrong[fmt] = got
            except ImageRejected as e:
                wrong[fmt] = str(e)
            read.append(fmt)
            break
    assert not wrong and {"SPIDER", "PNG", "JPEG", "TIFF", "BLP"} <= set(read), (wrong, read)

    w, h = 96, 80
    psd = (b"8BPS" + struct.pack(">H6xHIIHH", 1, 3, h, w, 8, 3) + struct.pack(">IIIH", 0, 0, 0, 0)
           + bytes([200]) * (w * h) + bytes([30]) * (w * h) + bytes([60]) * (w * h))
    assert open_checked(psd).getpixel((5, 5)) == (200, 30, 60)

    frames = [Image.new("RGB", (96, 96), c) for c in ("red", "lime", "blue")]
    for fmt in ("GIF", "PNG", "WEBP"):
        buf = io.BytesIO()
        frames[0].save(buf, format=fmt, save_all=True, append_images=frames[1:], lossless=True)
        assert open_checked(buf.getvalue()).getpixel((5, 5)) == (255, 0, 0), fmt


@pytest.mark.slow
def test_a_photo_folder_with_its_readme_checks_the_photos_alone(forced_model, good_photos, tmp_path):
    """A folder of photos as it is shared (README, LICENSE, labels.csv beside them), a camera's JPEG
    without a suffix, a photo in a format qa has no suffix for (PPM), a camera file that was never
    written: every photo is a row, the documents are not, so the exit code is the photos' own. The
    skipped are named, escaped, and listed in the report. A document named on its own is checked."""
    documents = {"README.md": "# photos\n", "LICENSE": "MIT", "labels.csv": "file,x\n", "bad\x1b[2J\nname": "log"}
    for name, text in documents.items():
        (good_photos / name).write_text(text)
    photo(3).save(good_photos / "IMG0001", "JPEG", quality=90)
    photo(4).save(good_photos / "scan.ppm")
    (good_photos / "IMG0002").write_bytes(b"")  # the camera failed to write it
    (good_photos / "IMG0003").write_bytes((good_photos / "p0.jpg").read_bytes()[:21])  # cut in its header
    (good_photos / "BM.txt").write_text("BM starts like a bitmap")  # identified as one, then refused
    r = qa_cli(forced_model, good_photos, "--out", tmp_path / "out", "--workers", "0")
    rows = list(csv.DictReader(open(tmp_path / "out" / "results.csv", newline="")))
    names = {Path(row["file"]).name: row for row in rows}
    assert set(names) == {f"p{i}.jpg" for i in range(6)} | {"IMG0001", "scan.ppm", "IMG0002", "IMG0003", "BM.txt"}
    assert names["IMG0001"]["status"] == names["scan.ppm"]["status"] == "ok", r.output
    assert names["IMG0002"]["status"] == names["IMG0003"]["status"] == names["BM.txt"]["status"] == "error"
    assert r.returncode == errors.UNREADABLE or r.returncode == errors.MISSING, r.output
    assert "not photos by name or content: 4 (" in r.output and "\x1b" not in r.output, r.output
    facts = (tmp_path / "out" / "data" / "facts.js").read_text()
    assert all(name in facts for name in ("README.md", "LICENSE", "labels.csv")), facts
    for name in ("BM.txt", "IMG0002", "IMG0003"):
        (good_photos / name).unlink()
    whole = qa_cli(forced_model, good_photos, "--out", tmp_path / "out2", "--workers", "0")
    assert whole.returncode in (errors.OK, errors.MISSING), whole.output  # never "unreadable"
    alone = qa_cli(forced_model, good_photos / "README.md", "--out", tmp_path / "out3", "--workers", "0")
    assert alone.returncode == errors.UNREADABLE, alone.output


@pytest.mark.parametrize("inside", ["out_in_photos", "photos_in_out"])
def test_overlapping_photo_and_report_folders_are_refused(forced_model, tmp_path, inside):
    photos = tmp_path / "photos"
    photos.mkdir()
    photo(1).save(photos / "a.jpg", quality=90)
    out = photos / "report" if inside == "out_in_photos" else tmp_path
    before = tree_state(tmp_path)
    r = qa_cli(forced_model, photos, "--out", out, "--workers", "0")
    assert r.returncode == errors.USAGE, r.output
    assert r.output.startswith("error:") and len(r.output.strip().splitlines()) == 1 and "overlap" in r.output
    assert tree_state(tmp_path) == before  # nothing written


@pytest.mark.parametrize("args", [(), ("--threshold", "nan"), ("--bs", "0")])
def test_bad_options_are_usage_errors(forced_model, good_photos, tmp_path, args):
    r = qa_cli(forced_model, *((good_photos, *args) if args else ()), "--out", tmp_path / "out")
    assert r.returncode == errors.USAGE and "Error" in r.output and not (tmp_path / "out").exists(), r.output


@pytest.mark.parametrize("change, words", [
    ({"size": 20000}, "size"), ({"size": 0}, "size"), ({"size": "64"}, "size"), ({"threshold": None}, "threshold"),
    ({"threshold": 1.5}, "threshold"), ({"arch": "resnet9000"}, "arch"), ({"classes": []}, "classes"),
    ({"classes": [3]}, "classes"), ({"mean": [0.5, 0.5]}, "mean"), ({"std": [0.2, 0.0, 0.2]}, "std"),
])
def test_model_config_is_validated_on_load(forced_model, tmp_path, change, words):
    config = {**CONFIG, **change}
    config = {k: v for k, v in config.items() if v is not None}
    (tmp_path / "config.json").write_text(json.dumps(config))
    (tmp_path / "model.pth").symlink_to(forced_model / "model.pth")
    with pytest.raises(ModelError, match=words):
        load_model_dir(tmp_path)


@pytest.mark.slow
def test_a_bad_model_config_is_one_line_and_exit_2(forced_model, tmp_path, good_photos):
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text(json.dumps({**CONFIG, "size": 0}))
    (model / "model.pth").symlink_to(forced_model / "model.pth")
    r = qa_cli(model, good_photos, "--out", tmp_path / "out")
    assert r.returncode == errors.USAGE and r.output.startswith("error:") and "size" in r.output, r.output
    assert len(r.output.strip().splitlines()) == 1 and not (tmp_path / "out").exists()


def test_degenerate_boxes_become_one_pixel_inside_the_image():
    boxes = torch.tensor([[0.2, 0.2, 0.2, 0.2], [1.0, 1.0, 1.0, 1.0], [-1.0, -1.0, -1.0, -1.0],
                          [float("nan"), 0.0, float("inf"), 0.5], [-3.0, -2.0, 5.0, 4.0]])
    for b in boxes:
        x0, y0, x1, y1 = to_pixels(b, 50, 40)
        assert 0 <= x0 and x0 + 1 <= x1 <= 50 and 0 <= y0 and y0 + 1 <= y1 <= 40, (b, (x0, y0, x1, y1))
    assert to_pixels(torch.tensor([-1.0, -1.0, 1.0, 1.0]), 50, 40) == [0, 0, 50, 40]  # proper boxes unchanged
    net = forced_net().eval()
    with torch.no_grad():
        found = detect(net(torch.zeros(1, 3, 64, 64)), 1, 0.5)[0]
    assert found["score"] > 0.99 and float(found["box"][2] - found["box"][0]) < 1e-6  # the case the test needs


def test_training_samples_plot_survives_zero_width_predictions(tmp_path):
    """The same crash ended a 1-epoch `train` before model.pkl was written."""
    xb = torch.zeros(2, 3, 64, 64)
    boxes = torch.tensor([[[-0.5, -0.5, 0.5, 0.5]], [[0.0, 0.0, 0.0, 0.0]]])
    labels = torch.tensor([[1], [1]])
    plot_samples(forced_net().eval(), [(xb, boxes, labels)], 1, "cpu", 0.5, tmp_path / "samples.png")
    img = Image.open(tmp_path / "samples.png").convert("RGB")
    assert img.size[0] > 0
    # a legend above the tiles names each box colour drawn
    legend = {c for _, c in img.crop((0, 0, img.width, 58)).getcolors(10_000)}
    assert {(0, 230, 0), (255, 40, 40), (255, 200, 0)} <= legend


def test_one_photo_failing_to_annotate_does_not_stop_the_rest(tmp_path):
    good, gone = tmp_path / "good.jpg", tmp_path / "gone.jpg"
    photo(1).save(good, quality=90)
    box = [(0.9, "qc-passed", [10.0, 10.0, 10.0, 10.0])]
    summary = QASummary(results=[PhotoResult(gone, 320, 240, 0.9, detections=box),
                                 PhotoResult(good, 320, 240, 0.9, detections=box)])
    failed = write_annotated(summary, tmp_path / "annotated")
    assert [p for p, _ in failed] == [gone] and "unreadable" in failed[0][1]
    assert [p.name for p in (tmp_path / "annotated").iterdir()] == ["00001_good.jpg"]


@pytest.mark.parametrize("given", ["folder", "glob"])
def test_a_folder_link_into_the_report_is_refused_before_anything_is_read(forced_model, tmp_path, given):
    """An earlier report's thumbnails and tables, reached through a link, are no photos."""
    photos, out = tmp_path / "photos", tmp_path / "out"
    (photos / "line3").mkdir(parents=True)
    photo(1).save(photos / "a.jpg", quality=90)
    (out / "thumbs").mkdir(parents=True)
    (out / ".stampcheck").write_text("qa\n")  # an earlier qa's report
    photo(2).save(out / "thumbs" / "000000.jpg", quality=90)
    (photos / "line3" / "latest").symlink_to(out / "thumbs")
    before = tree_state(tmp_path)
    r = qa_cli(forced_model, photos if given == "folder" else f"{photos}/**/*.jpg", "--out", out, "--workers", "0")
    assert r.returncode == errors.USAGE, r.output
    assert r.output.startswith("error:") and len(r.output.strip().splitlines()) == 1, r.output
    assert "line3/latest" in r.output and str(out) in r.output
    assert tree_state(tmp_path) == before  # nothing written


@pytest.mark.parametrize("out", ["/", "photos/old-report"])
@pytest.mark.parametrize("given", ["folder", "glob"])
def test_a_report_folder_holding_the_photos_or_inside_them_is_named_as_such(tmp_path, out, given):
    """No link on the way: --out / holds every photo folder, an earlier report may lie among the
    photos. Refused as the overlap it is, before the model is even looked for."""
    photos = tmp_path / "photos"
    (photos / "line3").mkdir(parents=True)
    (photos / "old-report").mkdir()
    photo(1).save(photos / "line3" / "a.jpg", quality=90)
    out = Path(out) if out == "/" else tmp_path / out
    before = tree_state(tmp_path)
    r = qa_cli(tmp_path / "no-model", photos if given == "folder" else f"{photos}/*/*.jpg", "--out", out)
    assert r.returncode == errors.USAGE, r.output
    assert r.output.startswith("error:") and len(r.output.strip().splitlines()) == 1, r.output
    assert f"--out {out} and the input" in r.output and "overlap" in r.output and "link" not in r.output, r.output
    assert tree_state(tmp_path) == before


def test_a_report_folder_another_run_is_writing_is_refused(forced_model, good_photos, tmp_path):
    from stampcheck.paths import OutputLock, claim_output

    out = claim_output(tmp_path / "out", "qa")
    with OutputLock(out, "qa"):  # this process is the other run
        r = qa_cli(forced_model, good_photos, "--out", out, "--workers", "0")
        assert r.returncode == errors.USAGE, r.output
        assert r.output.startswith("error:") and len(r.output.strip().splitlines()) == 1, r.output
        assert f"another stampcheck run (pid {os.getpid()}) is writing to" in r.output
        assert sorted(p.name for p in out.iterdir()) == [".stampcheck"]


def test_sigterm_while_the_model_loads_is_an_interruption(forced_model, good_photos, tmp_path):
    """A service manager's stop in the first seconds: one line and 130, as Ctrl-C, not a silent 143."""
    proc = subprocess.Popen([sys.executable, "-m", "stampcheck", "qa", forced_model, good_photos, "--out",
                             tmp_path / "out"], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    end = time.monotonic() + 120
    # the torch engine imports torch when it loads the model, a second or more after its library maps
    while "libtorch" not in Path(f"/proc/{proc.pid}/maps").read_text():
        assert proc.poll() is None and time.monotonic() < end, proc.communicate()[0]
        time.sleep(0.01)
    proc.send_signal(signal.SIGTERM)
    output = proc.communicate(timeout=60)[0]
    assert proc.returncode == errors.INTERRUPTED, output
    assert output.strip() == "interrupted" and not (tmp_path / "out").exists()


def what_the_report_describes(out: Path) -> tuple[list[str], dict[str, list[str]]]:
    """(the photos the page shows, as its manifest and data files say; the photos of each results
    table there is), each a sorted list of file names."""
    text = (out / "data" / "manifest.js").read_text()
    count = json.loads(text[text.index("(") + 1:text.rindex(")")])["rows"]
    rows = []
    for p in sorted((out / "data").glob("rows-*.js")):
        text = p.read_text()
        rows += json.loads(text[text.index("["):text.rindex("]") + 1])
    page = sorted(r["p"] for r in rows[:count])
    tables = {}
    if (out / "results.csv").exists():
        tables["csv"] = sorted({row["file"] for row in csv.DictReader(open(out / "results.csv", newline=""))})
    if (out / "results.jsonl").exists():
        tables["jsonl"] = sorted(json.loads(line)["file"] for line in open(out / "results.jsonl"))
    return page, tables


@pytest.mark.slow
def test_a_rerun_killed_leaves_table_and_page_of_one_run(forced_model, tmp_path):
    """kill -9 of a qa run into an earlier run's report: results.csv, results.jsonl and the page never
    describe different runs (both the earlier run, or no table and the page of the new run so far)."""
    few, many, out = tmp_path / "few", tmp_path / "many", tmp_path / "out"
    few.mkdir(), many.mkdir()
    for i in range(3):
        photo(i, (64, 48)).save(few / f"old{i}.jpg")
    for i in range(60):  # a few seconds of work: killed after its first rows, long before its end
        photo(i, (64, 48)).save(many / f"new{i:03d}.jpg")
    r = qa_cli(forced_model, few, "--out", out, "--workers", "0")
    old = sorted(str(few / f"old{i}.jpg") for i in range(3))
    assert r.returncode in (0, 1) and what_the_report_describes(out) == (old, {"csv": old, "jsonl": old}), r.output

    proc = subprocess.Popen([sys.executable, "-m", "stampcheck", "qa", forced_model, many, "--out", out,
                             "--workers", "0", "--bs", "2"], cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    first_rows = out / "thumbs" / "000005.jpg"  # the earlier run had 3
    try:
        end = time.monotonic() + 120
        while not first_rows.exists() and proc.poll() is None and time.monotonic() < end:
            time.sleep(0.005)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == -signal.SIGKILL and first_rows.exists(), "the run ended before it was killed"

    page, tables = what_the_report_describes(out)
    new = {str(many / f"new{i:03d}.jpg") for i in range(60)}
    assert all(table == page for table in tables.values()), (page[:5], {k: v[:5] for k, v in tables.items()})
    assert page == old and len(tables) == 2 or not tables and set(page) <= new, (page[:5], tables)

    r = qa_cli(forced_model, few, "--out", out, "--workers", "0")  # the next run starts clean
    assert r.returncode in (0, 1) and what_the_report_describes(out) == (old, {"csv": old, "jsonl": old}), r.output
    assert not list((out / "thumbs").glob("0000[3-9]*.jpg")) and not list(out.glob(".*.part")), r.output
