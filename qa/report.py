"""The QA report page (one self-contained HTML file) and optional annotated full-size images."""

from __future__ import annotations

import base64
import html
import os
from pathlib import Path

from stampcheck.atomic import atomic_write_bytes, atomic_write_text
from stampcheck.draw import draw_boxes
from stampcheck.images import ImageRejected, jpeg_bytes, open_checked
from stampcheck.runtime import PHOTO_LIMITS, THUMB

NAME_BYTES = 100  # of a photo's name kept in its annotated copy's name
# A spreadsheet runs a cell starting with one of these as a formula (OWASP, "CSV injection"): a
# photo named =HYPERLINK(...) must stay text in results.csv.
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")

STYLE = """
body{font-family:system-ui,sans-serif;margin:1.5em;background:#fafafa;color:#222}
.counts{display:flex;gap:1em;margin:1em 0}.count{padding:.8em 1.2em;border-radius:8px;background:#fff;
box-shadow:0 1px 3px #0002}.count b{display:block;font-size:1.8em}.missing b{color:#c62828}
.stamped b{color:#2e7d32}.unreadable b{color:#ef6c00}.grid{display:flex;flex-wrap:wrap;gap:10px}
figure{margin:0;background:#fff;padding:6px;border-radius:6px;box-shadow:0 1px 3px #0002;width:168px}
figcaption{font-size:12px;word-break:break-all}.tag{font-weight:bold}.tag.missing{color:#c62828}
.tag.stamped{color:#2e7d32}table{border-collapse:collapse}td{padding:2px 8px;border-bottom:1px solid #ddd}
"""


def printable(text: str) -> str:
    """``text`` as valid UTF-8: the bytes of a file name that are not UTF-8 (which Python keeps as
    surrogates) shown as \\xNN, as `ls -b` does, instead of failing the whole report."""
    try:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:
        return text.encode("utf-8", "backslashreplace").decode()


def _html(value) -> str:
    return html.escape(printable(str(value)))


def csv_row(row: dict) -> dict:
    """A results row as results.csv holds it: text printable and never a formula (JSONL keeps raw values)."""
    cells = {}
    for k, v in row.items():
        if isinstance(v, str):
            v = printable(v)
            v = "'" + v if v.startswith(FORMULA_START) else v
        cells[k] = v
    return cells


def thumbnail_jpeg(r, threshold: float) -> bytes | None:
    """The report's thumbnail: the result's preview with its boxes drawn (the stamps found, else
    the best guess in orange), as JPEG; held instead of the preview's pixels."""
    if r.preview is None:
        return None
    img = r.preview
    found = r.found(threshold)
    if r.top_box and r.width:
        sx, sy = img.width / r.width, img.height / r.height
        boxes = [b for _, _, b in found] or [r.top_box]
        img = draw_boxes(img, [(b[0] * sx, b[1] * sy, b[2] * sx, b[3] * sy) for b in boxes],
                         colour=(0, 200, 0) if found else (255, 160, 0))
    # 4:4:4: with JPEG's default chroma subsampling a 2-px coloured box fades into the photo
    return jpeg_bytes(img, 80, subsampling=0)


class Report:
    """The report folder's page and what it shows, fed one photo at a time: by a batch, or by a
    watched folder as photos arrive (``resume`` continues the rows an earlier run wrote there).

    ``facts``: the run's facts the page states (model, classes, metrics, threshold, date, inputs,
    command). ``add`` takes a checked photo (its ``preview`` is let go once drawn); ``write`` brings
    the folder's files up to date, atomically, and is cheap enough to call after every photo."""

    def __init__(self, out: Path, threshold: float, facts: dict | None = None, resume: bool = False):
        self.out, self.threshold, self.facts = Path(out), threshold, facts or {}
        self.results = []

    def add(self, r) -> None:
        r.thumbnail, r.preview = thumbnail_jpeg(r, self.threshold), None
        self.results.append(r)

    def write(self) -> None:
        _write_html(self.results, self.threshold, self.out / "index.html", self.facts.get("model", ""))


def _write_html(results, threshold: float, path: Path, model_dir) -> None:
    """Counts first, then unreadable photos, then thumbnails: missing stamps and the least certain first."""
    readable = [r for r in results if not r.error]
    stamped = {id(r) for r in readable if r.found(threshold)}
    readable.sort(key=lambda r: (id(r) in stamped, r.score))
    figures = []
    for r in readable:
        ok = id(r) in stamped
        data = base64.b64encode(r.thumbnail or b"").decode()
        tag = "stamped" if ok else "missing"
        figures.append(f'<figure class="photo {tag}"><img alt="" src="data:image/jpeg;base64,{data}" width="{THUMB}">'
                       f'<figcaption><span class="tag {tag}">{tag}</span> score {r.score:.2f}<br>'
                       f'{_html(r.path)}</figcaption></figure>')
    errors = "".join(f"<tr><td>{_html(r.path)}</td><td>{_html(r.error)}</td></tr>"
                     for r in results if r.error)
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>stampcheck QA report</title>
<style>{STYLE}</style></head><body><h1>stampcheck QA report</h1>
<p>Model: {_html(model_dir)} &middot; threshold {threshold:.2f} &middot; {len(results)} photos</p>
<div class="counts"><div class="count stamped" id="stamped"><b>{len(stamped)}</b>stamped</div>
<div class="count missing" id="missing"><b>{len(readable) - len(stamped)}</b>missing</div>
<div class="count unreadable" id="unreadable"><b>{len(results) - len(readable)}</b>unreadable</div></div>
{"<h2>Unreadable</h2><table>" + errors + "</table>" if errors else ""}
<h2>Photos (missing stamps and least certain first)</h2><div class="grid">{"".join(figures)}</div>
</body></html>"""
    atomic_write_text(path, page)


def annotated_name(k: int, path: Path) -> str:
    """``k`` keeps names apart; the stem is cut to NAME_BYTES, so that with the temporary suffix of an
    atomic write the name stays far below the 255 bytes a file name may have."""
    stem = os.fsencode(path.stem)[:NAME_BYTES].decode("utf-8", "ignore")
    return f"{k:05d}_{stem}.jpg"


def write_annotated(summary, folder: Path) -> list[tuple[Path, str]]:
    """Full-size copies of readable photos with the detected boxes drawn. Returns the photos that
    could not be annotated and why (gone since they were checked, a full disk); they stop nothing."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        return [(folder, f"no folder for annotated copies: {e}")]
    failed = []
    for k, r in enumerate(summary.results):
        if r.error:
            continue
        try:
            img = open_checked(r.path, PHOTO_LIMITS)
            boxes = [b for _, _, b in r.found(summary.threshold)]
            img = draw_boxes(img, boxes, width=max(2, img.width // 200))
            atomic_write_bytes(folder / annotated_name(k, r.path), jpeg_bytes(img, 90, subsampling=0))
        except Exception as e:  # noqa: BLE001 - one photo's copy is not worth the others'
            failed.append((r.path, str(e) if isinstance(e, ImageRejected) else f"{type(e).__name__}: {e}"))
    return failed
