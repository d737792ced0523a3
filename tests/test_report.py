"""The QA report: a folder that opens from disk and stays light at thousands of photos,
counts that agree with results.csv, the score heatmap, and the page in real headless Chromium."""

from __future__ import annotations

import csv
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
from stampcheck.compose.looks import Looks
from stampcheck.qa.report import CHUNK, Report, ReportError, near_band
from stampcheck.dataset import read_labels
from stampcheck.engine.decode import PhotoResult
from stampcheck.engine.run import predict_photos
from tests.chromium import Chromium, chromium_path
from tests.test_train import EASY
from stampcheck.train.learner import TrainConfig, train
from stampcheck.engine.photos import THUMB_MAX
from stampcheck.engine.torch_engine import Predictor

ROOT = Path(__file__).resolve().parents[1]
# a file in a folder named "<": its path reads </script><img ...>, and must stay text everywhere
HOSTILE = ("<", 'script><img src=x onerror="window.pwned=1">.jpg')
SCREENSHOT = ROOT / "data" / "test-artifacts" / "report.png"


def read_rows(out: Path) -> list[dict]:
    """The page's rows, read back from the data scripts as the page reads them."""
    rows = []
    for p in sorted((out / "data").glob("rows-*.js")):
        text = p.read_text()
        rows += json.loads(text[text.index("["):text.rindex("]") + 1])
    return rows


def cheap_result(i: int, rng, preview: bool) -> PhotoResult:
    """A checked photo as qa hands it over, without a model: 1 in 50 unreadable."""
    path = Path(f"/cams/line{i % 3}/cam{i % 2}/20261121-{i:06d}.jpg")
    if i % 50 == 7:
        return PhotoResult(path, error="truncated: image file is truncated")
    s = float(rng.random())
    box = [400.0, 300.0, 900.0, 700.0]
    return PhotoResult(path, 4000, 3000, s, box, [(s, "qc-passed", box)],
                       preview=Image.new("RGB", (160, 120), "grey") if preview else None,
                       heatmap=rng.random((16, 16)).astype(np.float32))


def test_a_report_of_2000_photos_is_light_pages_its_cards_and_resumes(tmp_path):
    rng = np.random.default_rng(0)
    out = tmp_path / "report"
    report = Report(out, 0.5, {"model": "m", "inputs": ["/cams"]})
    for i in range(2000):
        report.add(cheap_result(i, rng, preview=i % 400 == 0))
        if i % 250 == 0:
            report.write()
    report.write()
    weight = sum(p.stat().st_size for p in out.rglob("*") if p.is_file() and "thumbs" not in p.parts)
    assert weight < 3_000_000, weight
    assert sorted(p.name for p in (out / "thumbs").iterdir()) == [f"{i:06d}.jpg" for i in range(0, 2000, 400)]
    rows = read_rows(out)
    assert [r["i"] for r in rows] == list(range(2000)) and {r["f"] for r in rows} >= {"line0/cam0", "line2/cam1"}

    # a watched folder writes after every photo: only the open chunk and the manifest change
    closed = out / "data" / "rows-00000.js"
    before = closed.stat().st_mtime_ns, (out / "index.html").stat().st_mtime_ns
    report.add(cheap_result(2000, rng, preview=True))
    report.write()
    assert (closed.stat().st_mtime_ns, (out / "index.html").stat().st_mtime_ns) == before

    # a restarted watch continues the rows and the numbering; earlier thumbnails stay as they were
    first_thumb = (out / "thumbs" / "000000.jpg").read_bytes()
    again = Report(out, 0.5, {"model": "m"}, resume=True)
    assert len(again) == 2001
    again.add(cheap_result(2001, rng, preview=True))
    again.write()
    rows = read_rows(out)
    assert [r["i"] for r in rows] == list(range(2002)) and len(list((out / "data").glob("rows-*.js"))) == 2002 // CHUNK + 1
    assert (out / "thumbs" / "000000.jpg").read_bytes() == first_thumb and (out / "thumbs" / "002001.jpg").is_file()
    last = out / "data" / "rows-00004.js"
    text = last.read_text()
    last.write_text(text[:100])  # damaged (by hand: atomic writes leave no half file)
    with pytest.raises(ReportError, match="rows-00004.js cannot be read back"):
        Report(out, 0.5, resume=True)
    last.write_text(text)

    if not chromium_path():
        pytest.skip("chromium not installed: the page itself is not checked")
    with Chromium(tmp_path / "profile") as browser:
        browser.navigate((out / "index.html").as_uri())
        browser.wait_for("document.querySelectorAll('.card').length > 0")
        cards, total = browser.js("[document.querySelectorAll('.card').length, document.querySelector('#all b').textContent]")
        assert cards == 100 and total == "2,002"  # the DOM holds one page of cards, not 2,002


def test_scores_read_on_the_side_of_their_verdict_and_the_threshold_label_fits(tmp_path):
    """At threshold 0.95 a photo scoring 0.9496 is missing: its caption says 0.9496, not 0.95. The
    histogram's threshold label lies inside the chart wherever the threshold is; "near" is a band
    that narrows where scores crowd; the heatmap waits for its toggle."""
    if not chromium_path():
        pytest.skip("chromium not installed: the page itself is not checked")
    scores = [0.9496, 0.95, 0.9512, 0.3, 0.999, 0.93, 0.97]
    low, high = near_band(0.95)
    for threshold in (0.95, 0.05):
        out = tmp_path / f"t{threshold}"
        report = Report(out, threshold, {"model": "m", "inputs": ["/cams"]})
        for i, s in enumerate(scores):
            box = [10.0, 10.0, 50.0, 50.0]
            report.add(PhotoResult(Path(f"/cams/{i}-{s}.jpg"), 400, 300, s, box, [(s, "qc-passed", box)],
                                   preview=Image.new("RGB", (160, 120), "grey"),
                                   heatmap=np.ones((8, 8), np.float32), threshold=threshold))
        report.write()
        with Chromium(tmp_path / "profile") as b:
            b.navigate((out / "index.html").as_uri())
            b.wait_for("document.querySelectorAll('.card').length === 7")
            label = b.js("(function(){var t=document.getElementById('thrlabel').getBBox(),"
                         "s=document.getElementById('hist').getBoundingClientRect();"
                         "return [t.x, t.x + t.width, s.width, document.getElementById('thrlabel').textContent]})()")
            assert 0 <= label[0] and label[1] <= label[2] and label[3] == f"threshold {threshold:.2f}", label
            if threshold != 0.95:
                continue
            caps = b.js("Array.from(document.querySelectorAll('.card .cap')).map(function(c){return c.textContent})")
            assert any(c.startswith("missing score 0.9496") for c in caps), caps
            assert any(c.startswith("stamped score 0.95") and "0.9512" not in c.split("/")[0] for c in caps), caps
            assert b.js("+document.querySelector('#near b').textContent") == sum(low <= s <= high for s in scores)
            b.click(".card")
            b.wait_for("document.getElementById('heatinfo').textContent.indexOf('cells') >= 0")
            assert b.js("document.getElementById('heat').hidden && !document.getElementById('showheat').checked")
            b.click("#showheat")
            assert not b.js("document.getElementById('heat').hidden")


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    """A model that finds the stamp: trained for seconds from the shipped base detector on stamps a
    fifth to a third of the photo, so that where it looks can be checked against where they are."""
    root = tmp_path_factory.mktemp("report")
    looks = Looks(**{**EASY.to_dict(), "scale": (0.2, 0.3)})
    compose_dataset(ComposeConfig(count=24, seed=2, max_size=128, looks=looks), root / "ds")
    train(root / "ds", root / "model", TrainConfig(verifier=False, arch="resnet18", size=96, epochs=2, bs=8, pretrained="base",
                                                   workers=0), log=lambda *a: None)
    return root


def found_stamps(model: Path) -> list[tuple[PhotoResult, list[float]]]:
    """(result, labelled box) of the stamped photos the model finds: its box on the stamp."""
    items = [i for i in read_labels(model / "ds") if i.boxes]
    files = [model / "ds" / "images" / i.file for i in items]
    found = []
    for item, r in zip(items, predict_photos(Predictor(model / "model", "cpu"), files, workers=0)):
        truth = item.boxes[0].as_tuple()
        if r.detections and iou(r.detections[0][2], truth) > 0.5:
            found.append((r, list(truth)))
    return found


def iou(a, b) -> float:
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = w * h
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def hottest_in_box(heat: np.ndarray, width: int, height: int, box) -> tuple[bool, float]:
    """Whether the hottest cell's centre lies in ``box`` (photo pixels), and how much hotter the
    cells inside are on average than those outside."""
    side = heat.shape[0]
    ys, xs = (np.arange(side) + 0.5) / side * height, (np.arange(side) + 0.5) / side * width
    inside = (ys[:, None] >= box[1]) & (ys[:, None] < box[3]) & (xs[None] >= box[0]) & (xs[None] < box[2])
    y, x = np.unravel_index(heat.argmax(), heat.shape)
    return bool(inside[y, x]), float(heat[inside].mean() / max(heat[~inside].mean(), 1e-6))


@pytest.mark.slow
def test_the_heatmap_of_a_found_stamp_is_hottest_over_it(model):
    found = found_stamps(model)
    assert len(found) >= 3, "the model finds too few stamps to check where it looks"
    side = Predictor(model / "model", "cpu").size // 16  # trained at 96 px, it predicts at the size valid chose
    for r, box in found:
        assert r.heatmap.shape == (side, side) and side in (6, 7, 8)
        hottest, contrast = hottest_in_box(r.heatmap, r.width, r.height, box)
        assert hottest and contrast > 3, (r.path, box, r.heatmap.round(2))


def run_qa_cli(*args):
    return subprocess.run([sys.executable, "-m", "stampcheck", "qa", *map(str, args)], capture_output=True,
                          text=True, cwd=ROOT, timeout=300)


@pytest.mark.slow
def test_the_report_agrees_with_results_csv_and_works_in_chromium(model, tmp_path):
    photos = tmp_path / "photos"
    (photos / "line3" / "cam2").mkdir(parents=True)
    (photos / "line4").mkdir()
    (photos / HOSTILE[0]).mkdir()
    found = found_stamps(model)
    known, known_box = found[0]
    shutil.copy(known.path, photos / "line3" / "cam2" / "known.jpg")
    for k, f in enumerate(sorted((model / "ds" / "images").iterdir())[:6]):
        shutil.copy(f, photos / ("line3" if k % 2 else "line4") / f.name)
    shutil.copy(f, photos.joinpath(*HOSTILE))
    (photos / "line4" / "corrupt.jpg").write_bytes(f.read_bytes()[:200])
    (photos / "notes.jpg").write_text("shift 2")  # named as a photo: an error row
    (photos / "README.md").write_text("line 3 and 4 photos")  # no photo: skipped, listed in the facts
    out = tmp_path / "report"
    r = run_qa_cli(model / "model", photos, "--out", out, "--workers", "0")
    assert r.returncode in (0, 1, 3), r.stdout + r.stderr

    csv_rows = list(csv.DictReader(open(out / "results.csv", newline="")))
    status = {}
    for row in csv_rows:
        status[row["file"]] = "unreadable" if row["status"] == "error" else "stamped" if row["has_stamp"] == "1" else "missing"
    expected = {k: sum(v == k for v in status.values()) for k in ("missing", "stamped", "unreadable")}
    rows = read_rows(out)
    assert {r["p"]: r["k"] for r in rows} == status
    assert {r["f"] for r in rows} == {".", "line3", "line3/cam2", "line4", "<"}
    assert expected["unreadable"] == 2 and expected["stamped"] >= 1
    facts = json.loads((out / "data" / "facts.js").read_text()[len("stampcheckFacts("):-3])
    assert facts["classes"] == ["qc-passed"] and facts["inputs"] == [str(photos)] and "accuracy" in facts["valid"]
    assert facts["not_photos"] == [str(photos / "README.md")]
    assert "<" not in "".join(p.read_text() for p in (out / "data").iterdir())  # no name can close a script
    for row in rows:  # thumbnails are files; the best guess is drawn in orange on a photo judged missing
        thumb = out / "thumbs" / f"{row['i']:06d}.jpg"
        assert thumb.is_file() == (row["k"] != "unreadable")
        if row["k"] == "missing":
            pixels = np.asarray(Image.open(thumb).convert("RGB"), dtype=int)
            assert max(Image.open(thumb).size) <= THUMB_MAX and (np.abs(pixels - (255, 160, 0)).sum(-1) < 60).sum() >= 20

    if not chromium_path():
        pytest.skip("chromium not installed (.ci/run installs it)")
    with Chromium(tmp_path / "profile") as b:
        b.navigate((out / "index.html").as_uri())
        b.wait_for("document.querySelectorAll('.card').length > 0")
        shown = b.js("(function(){var c={};['all','missing','stamped','unreadable'].forEach(function(k){"
                     "c[k]=+document.querySelector('#'+k+' b').textContent});return c})()")
        assert shown == {**expected, "all": len(status)}
        assert "least certain" in b.js("document.getElementById('heading').textContent")
        order = b.js("Array.from(document.querySelectorAll('.card')).map(function(c){return c.className})")
        assert order == sorted(order, key=lambda c: ["missing", "stamped", "unreadable"].index(c.split()[1]))

        b.click("#unreadable")  # a real mouse click on the filter
        b.wait_for("document.querySelectorAll('.card').length === 2")
        assert b.js("Array.from(document.querySelectorAll('.card')).every(function(c){"
                    "return c.classList.contains('unreadable')})")
        b.click("#all")
        b.click("#q")  # search by name, typed
        b.send("Input.insertText", {"text": "onerror"})
        b.wait_for("document.querySelectorAll('.card').length === 1")
        assert b.js("document.querySelector('.card').textContent").endswith("/".join(HOSTILE))
        assert b.js("window.pwned === undefined && !document.querySelector('img[onerror]')")

        b.js("(function(){var q=document.getElementById('q');q.value='';q.dispatchEvent(new Event('input'))})()")
        b.wait_for("document.querySelectorAll('.card').length > 1")
        b.click("#q")
        b.send("Input.insertText", {"text": "known.jpg"})
        b.wait_for("document.querySelectorAll('.card').length === 1")
        b.click(".card")
        b.wait_for("document.getElementById('heatinfo').textContent.indexOf('cells') >= 0")
        b.click("#showheat")  # off by default: it would cover the ink
        b.wait_for("document.getElementById('big').complete && document.getElementById('big').naturalWidth > 0")
        seen = b.js("""(function(){
            var big = document.getElementById('big'), cv = document.getElementById('heat'), a = big.getBoundingClientRect(),
                c = cv.getBoundingClientRect(), px = cv.getContext('2d').getImageData(0, 0, cv.width, cv.height).data, best = -1, at = 0;
            for (var k = 0; k < cv.width * cv.height; k++) if (px[4 * k + 3] > best) { best = px[4 * k + 3]; at = k; }
            return {natural: [big.naturalWidth, big.naturalHeight], img: [a.left, a.top, a.width, a.height],
                    canvas: [c.left, c.top, c.width, c.height], hidden: cv.hidden, side: cv.width,
                    hottest: [(at % cv.width + 0.5) / cv.width, (Math.floor(at / cv.width) + 0.5) / cv.height],
                    boxes: document.querySelectorAll('.det:not(.guess)').length, source: document.getElementById('source').textContent};
        })()""")
        shot = b.screenshot(SCREENSHOT)
    print(f"screenshot: {shot}")
    assert seen["natural"] == [known.width, known.height], seen  # the original, by its relative path
    assert seen["source"] == "original photo" and not seen["hidden"] and seen["boxes"] >= 1
    assert np.allclose(seen["img"], seen["canvas"], atol=1), seen  # the heatmap lies over the photo
    x, y = seen["hottest"][0] * known.width, seen["hottest"][1] * known.height
    assert known_box[0] <= x < known_box[2] and known_box[1] <= y < known_box[3], (seen, known_box)
    assert SCREENSHOT.stat().st_size > 10_000


def folder_report(tmp_path: Path) -> tuple[Path, Path, list[dict]]:
    """A report built through the Report API, no model: nested folders (line3/cam2, a line30 beside
    line3, 120 product folders under many/day1/Juice), photos whose originals are gone (the page
    falls back to thumbnails) and an unreadable FIFO. Returns (input folder, report, its rows)."""
    photos, out = tmp_path / "photos", tmp_path / "report"
    (photos / "line3" / "cam2").mkdir(parents=True)
    os.mkfifo(photos / "line3" / "cam2" / "fifo.jpg")  # opened by the page, it would hang the fetch
    names = ["line3/cam2/a.jpg", "line3/cam2/b.jpg", "line3/c.jpg", "line30/d.jpg", "many/day1/g.jpg", "top.jpg"]
    names += [f"many/day1/Juice/p{k:03d}/e.jpg" for k in range(120)]
    box = [400.0, 300.0, 900.0, 700.0]
    report = Report(out, 0.5, {"inputs": [str(photos)]})
    report.add(PhotoResult(photos / "line3" / "cam2" / "fifo.jpg", error="not a regular file (a pipe)"))
    for k, name in enumerate(names):
        s = 0.9 if k % 2 == 0 else 0.2
        report.add(PhotoResult(photos / name, 4000, 3000, s, box, [(s, "qc-passed", box)],
                               preview=Image.new("RGB", (160, 120), "grey") if k < 6 else None))
    report.write()
    return photos, out, read_rows(out)


def test_a_rerun_removes_only_what_the_last_run_wrote(tmp_path):
    rng = np.random.default_rng(1)
    out = tmp_path / "report"
    first = Report(out, 0.5)
    for i in range(3):
        first.add(cheap_result(i, rng, preview=True))
    first.write()
    theirs = [out / "thumbs" / "999999.jpg", out / "data" / "rows-99999.js", out / "data" / "heat-00007.js"]
    for p in theirs:
        p.write_text("a user's file")
    second = Report(out, 0.5)  # a re-run into the same --out: one photo this time
    second.add(cheap_result(0, rng, preview=False))
    second.write()
    assert all(p.read_text() == "a user's file" for p in theirs)
    assert not list((out / "thumbs").glob("00000?.jpg"))  # the first run's thumbnails went, row 0's too
    assert (out / "data" / "rows-00000.js").read_text().count('"i":') == 1
    (out / "thumbs" / "000000.jpg").write_text("theirs too")
    (out / "data" / "manifest.js").write_text("damaged")
    Report(out, 0.5)  # no manifest to go by: nothing goes
    assert (out / "thumbs" / "000000.jpg").read_text() == "theirs too" and (out / "data" / "rows-00000.js").is_file()


def test_the_page_totals_folders_with_their_sub_folders_and_opens_rows_safely(tmp_path):
    if not chromium_path():
        pytest.skip("chromium not installed: the page itself is not checked")
    photos, out, rows = folder_report(tmp_path)
    tree = {f"{r['f']}"[:j] for r in rows for j in [len(r["f"])] + [k for k, c in enumerate(r["f"]) if c == "/"]}
    expected = {f: sum(r["f"] == f or r["f"].startswith(f + "/") for r in rows) for f in tree}
    assert expected["line3"] == 4 and expected["many/day1"] == 121  # the data as meant
    shown_rows = ("Array.from(document.querySelectorAll('#folders tr')).map(function(t){"
                  "return [t.dataset.f, +t.children[1].textContent]})")
    cards = "document.querySelectorAll('.card').length"
    with Chromium(tmp_path / "profile") as b:
        b.navigate((out / "index.html").as_uri())
        b.wait_for(f"{cards} > 0")
        shown = b.js(shown_rows)
        # every ancestor has its row, with the totals below it; 120 leaves wait behind a click
        assert {f: n for f, n in shown} == {f: n for f, n in expected.items() if f.count("/") < 3}
        assert [f for f, _ in shown] == sorted((f for f, _ in shown), key=lambda f: f.split("/"))  # parents first
        b.click("#folders tr[data-f='many/day1/Juice'] .fold")
        b.wait_for("document.querySelectorAll('#folders tr').length > 100")
        assert dict(b.js(shown_rows)) == expected
        shot = b.screenshot(SCREENSHOT.with_name("report-folders.png"))
        b.click("#folders tr[data-f='line3']")  # line3 and below, not line30
        b.wait_for(f"{cards} === {expected['line3']}")
        assert all(n.startswith("line3/") for n in b.js("Array.from(document.querySelectorAll('.card .name'))"
                                                        ".map(function(c){return c.textContent})"))

        b.click("#folder-chip")  # search the names as the cards show them: the inputs' path matches nothing
        b.click("#q")
        b.send("Input.insertText", {"text": photos.name})
        b.wait_for("document.getElementById('pageinfo').textContent === 'no photo matches'")
        b.js("(function(){var q=document.getElementById('q');q.value='cam2/b';q.dispatchEvent(new Event('input'))})()")
        b.wait_for(f"{cards} === 1")

        b.js("(function(){var q=document.getElementById('q');q.value='cam2/a';q.dispatchEvent(new Event('input'))})()")
        b.wait_for(f"{cards} === 1 && document.querySelector('.card .name').textContent === 'line3/cam2/a.jpg'")
        b.click(".card")  # its original is gone: the thumbnail, whose boxes no checkbox can hide
        b.wait_for("document.getElementById('source').textContent.indexOf('showing the thumbnail') >= 0")
        assert b.js("document.getElementById('showboxes').disabled && !document.getElementById('boxesnote').hidden")
        b.js("document.getElementById('close').click()")

        b.click("#unreadable")
        b.js("(function(){var q=document.getElementById('q');q.value='';q.dispatchEvent(new Event('input'))})()")
        b.wait_for(f"{cards} === 1 && !!document.querySelector('.card.unreadable')")
        b.click(".card")  # the FIFO: its reason, and no fetch of it
        b.wait_for("document.getElementById('viewer').className === 'open'")
        opened = b.js("[document.getElementById('big').getAttribute('src'), document.getElementById('info').textContent,"
                      " document.getElementById('showboxes').disabled]")
    print(f"screenshot: {shot}")
    assert opened[0] is None and "a pipe" in opened[1] and opened[2] is False, opened


# folders named as what every JavaScript object already has: a lookup by name must find none of it
PROTO_FOLDERS = ["constructor", "__proto__", "toString", "constructor/__proto__", "toString/hasOwnProperty"]
# a right-to-left override shows the rest of a name reversed; a newline shows as a space
SPOOFED = "invoice\u202egpj.exe\nsecond line.jpg"


def forced_model(folder: Path) -> Path:
    """An untrained model folder that qa loads in a second (no training: the page is under test)."""
    from tests.test_hostile_qa import CONFIG, forced_net
    from stampcheck.train.callbacks import save_weights

    folder.mkdir()
    save_weights(forced_net(), folder, CONFIG)
    return folder


@pytest.mark.slow
def test_folders_named_as_object_properties_and_spoofing_names_show_in_chromium(tmp_path):
    if not chromium_path():
        pytest.skip("chromium not installed: the page itself is not checked")
    from stampcheck.progress import shown

    photos = tmp_path / "photos"
    for k, folder in enumerate(PROTO_FOLDERS):
        (photos / folder).mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (96, 72), (40 * k, 90, 160)).save(photos / folder / f"p{k}.jpg")
    Image.new("RGB", (96, 72), "olive").save(photos / SPOOFED, "JPEG")
    out = tmp_path / "report"
    r = run_qa_cli(forced_model(tmp_path / "model"), photos, "--out", out, "--workers", "0")
    assert r.returncode in (0, 1), r.stdout + r.stderr
    tree = {"."} | {"/".join(f.split("/")[:j + 1]) for f in PROTO_FOLDERS for j in range(f.count("/") + 1)}
    with Chromium(tmp_path / "profile") as b:
        b.navigate((out / "index.html").as_uri())
        b.wait_for("document.querySelectorAll('#folders tr').length > 0", timeout=20)
        cards = b.js("Array.from(document.querySelectorAll('.card .name')).map(function(c){return c.textContent})")
        folders = b.js("Array.from(document.querySelectorAll('#folders tr')).map(function(t){return t.dataset.f})")
        total = b.js("document.querySelector('#all b').textContent")
        spoofed = next(row["i"] for row in read_rows(out) if "invoice" in row["p"])
        b.click(f".card[data-i='{spoofed}']")  # the name in the opened photo's panel is escaped too
        b.wait_for("document.getElementById('viewer').className === 'open'")
        side = b.js("document.getElementById('info').textContent")
    assert total == str(len(PROTO_FOLDERS) + 1) and len(cards) == len(PROTO_FOLDERS) + 1, (total, cards)
    assert sorted(folders) == sorted(tree), folders
    escaped = shown(SPOOFED)
    assert escaped == "invoice\\x202egpj.exe\\x0asecond line.jpg"  # the console's rule
    assert escaped in cards and not any("\u202e" in c or "\n" in c for c in cards), cards
    assert escaped in side and "\u202e" not in side and "\n" not in side, side
    raw = [json.loads(line)["file"] for line in open(out / "results.jsonl")]
    assert str(photos / SPOOFED) in raw  # results.jsonl keeps the raw name
