"""The QA report page (one self-contained HTML file) and optional annotated full-size images."""

from __future__ import annotations

import base64
import html
from pathlib import Path

from compose.preview import draw_boxes

from stampcheck.atomic import atomic_write_bytes, atomic_write_text
from stampcheck.images import jpeg_bytes, open_checked
from train.predict import PHOTO_LIMITS, THUMB

STYLE = """
body{font-family:system-ui,sans-serif;margin:1.5em;background:#fafafa;color:#222}
.counts{display:flex;gap:1em;margin:1em 0}.count{padding:.8em 1.2em;border-radius:8px;background:#fff;
box-shadow:0 1px 3px #0002}.count b{display:block;font-size:1.8em}.missing b{color:#c62828}
.stamped b{color:#2e7d32}.unreadable b{color:#ef6c00}.grid{display:flex;flex-wrap:wrap;gap:10px}
figure{margin:0;background:#fff;padding:6px;border-radius:6px;box-shadow:0 1px 3px #0002;width:168px}
figcaption{font-size:12px;word-break:break-all}.tag{font-weight:bold}.tag.missing{color:#c62828}
.tag.stamped{color:#2e7d32}table{border-collapse:collapse}td{padding:2px 8px;border-bottom:1px solid #ddd}
"""


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


def write_html(summary, path: Path, model_dir: Path) -> None:
    """Counts first, then unreadable photos, then thumbnails: missing stamps and the least certain first."""
    readable = [r for r in summary.results if not r.error]
    stamped = {id(r) for r in readable if r.found(summary.threshold)}
    readable.sort(key=lambda r: (id(r) in stamped, r.score))
    figures = []
    for r in readable:
        ok = id(r) in stamped
        data = base64.b64encode(r.thumbnail or b"").decode()
        tag = "stamped" if ok else "missing"
        figures.append(f'<figure class="photo {tag}"><img alt="" src="data:image/jpeg;base64,{data}" width="{THUMB}">'
                       f'<figcaption><span class="tag {tag}">{tag}</span> score {r.score:.2f}<br>'
                       f'{html.escape(str(r.path))}</figcaption></figure>')
    errors = "".join(f"<tr><td>{html.escape(str(r.path))}</td><td>{html.escape(r.error)}</td></tr>"
                     for r in summary.results if r.error)
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>stampcheck QA report</title>
<style>{STYLE}</style></head><body><h1>stampcheck QA report</h1>
<p>Model: {html.escape(str(model_dir))} &middot; threshold {summary.threshold:.2f} &middot; {summary.photos} photos</p>
<div class="counts"><div class="count stamped" id="stamped"><b>{summary.stamped}</b>stamped</div>
<div class="count missing" id="missing"><b>{summary.missing}</b>missing</div>
<div class="count unreadable" id="unreadable"><b>{summary.unreadable}</b>unreadable</div></div>
{"<h2>Unreadable</h2><table>" + errors + "</table>" if errors else ""}
<h2>Photos (missing stamps and least certain first)</h2><div class="grid">{"".join(figures)}</div>
</body></html>"""
    atomic_write_text(path, page)


def write_annotated(summary, folder: Path) -> None:
    """Full-size copies of readable photos with the detected boxes drawn."""
    folder.mkdir(parents=True, exist_ok=True)
    for k, r in enumerate(summary.results):
        if r.error:
            continue
        img = open_checked(r.path, PHOTO_LIMITS)
        boxes = [b for _, _, b in r.found(summary.threshold)]
        img = draw_boxes(img, boxes, width=max(2, img.width // 200))
        atomic_write_bytes(folder / f"{k:05d}_{r.path.stem}.jpg", jpeg_bytes(img, 90, subsampling=0))
