"""The QA report: a folder that opens from disk (index.html, its data as scripts, thumbnails as files),
and optional annotated full-size images."""

from __future__ import annotations

import glob
import itertools
import json
import os
import re
from pathlib import Path
from urllib.parse import quote

import numpy as np

from stampcheck.atomic import atomic_write_bytes, atomic_write_text
from stampcheck.draw import draw_boxes
from stampcheck.images import ImageRejected, jpeg_bytes, open_checked
from stampcheck.paths import refuse_links
from stampcheck.progress import printable, shown
from stampcheck.engine.photos import PHOTO_LIMITS

PAGE = (Path(__file__).with_name("page.html")).read_bytes()  # index.html: the same for every run
DATA, THUMBS = "data", "thumbs"
CHUNK = 500  # rows per data file: a watched folder rewrites one such file per photo, not all rows
NEAR_ODDS = 1.5  # "near the threshold": a score whose odds are within this factor of the threshold's
ROWS_NAME, HEAT_NAME, THUMB_NAME = re.compile(r"rows-(\d{5})\.js"), re.compile(r"heat-(\d{5})\.js"), re.compile(r"\d{6}\.jpg")

NAME_BYTES = 100  # of a photo's name kept in its annotated copy's name
# A spreadsheet runs a cell starting with one of these as a formula (OWASP, "CSV injection"): a
# photo named =HYPERLINK(...) must stay text in results.csv.
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")

def csv_row(row: dict) -> dict:
    """A results row as results.csv holds it: text printable and never a formula (JSONL keeps raw values)."""
    cells = {}
    for k, v in row.items():
        if isinstance(v, str):
            v = printable(v)
            v = "'" + v if v.startswith(FORMULA_START) else v
        cells[k] = v
    return cells


def thumbnail_jpeg(r) -> bytes | None:
    """The report's thumbnail: the result's preview with its boxes drawn (the stamps found, else
    the best guess in orange), as JPEG; held instead of the preview's pixels."""
    if r.preview is None:
        return None
    img = r.preview
    found = r.found()
    if r.top_box and r.width:
        sx, sy = img.width / r.width, img.height / r.height
        boxes = [b for _, _, b in found] or [r.top_box]
        img = draw_boxes(img, [(b[0] * sx, b[1] * sy, b[2] * sx, b[3] * sy) for b in boxes],
                         colour=(0, 200, 0) if found else (255, 160, 0))
    # 4:4:4: with JPEG's default chroma subsampling a 2-px coloured box fades into the photo
    return jpeg_bytes(img, 80, subsampling=0)


class ReportError(ValueError):
    """A report folder whose rows cannot be continued (its data files damaged or not this tool's)."""


class Report:
    """The report folder, fed one photo at a time: by a batch, or by a watched folder as photos arrive.

    The page (index.html, the same for every run) reads its rows from script files, as a page opened
    from disk may read no JSON: ``data/rows-NNNNN.js`` (CHUNK rows each), ``data/heat-NNNNN.js``
    (their heatmaps, read when a photo is opened), ``data/facts.js`` and ``data/manifest.js`` (how
    many rows). Thumbnails are files, ``thumbs/NNNNNN.jpg``, numbered as the rows.

    ``facts``: the run's facts the page states (:func:`stampcheck.qa.batch.run_facts`). ``add`` takes a checked
    photo, writes its thumbnail and lets go of its preview; ``write`` brings the folder's files up to
    date, atomically, rewriting only the open chunk and the manifest: cheap after every photo.
    ``resume`` continues the rows an earlier run wrote into ``out``; otherwise the earlier run's
    rows go at once (with ``tables``, the files that list the same photos, first), and the page
    shows this run's facts and no photo until ``write``. ``reserve``: the rows this run will write
    at most, named in the manifest from the start, so that the next run removes what this one
    wrote before it was killed."""

    def __init__(self, out: Path, threshold: float, facts: dict | None = None, resume: bool = False,
                 tables: tuple[Path, ...] = (), reserve: int = 0):
        self.out, self.threshold, self.facts = Path(out), float(threshold), facts or {}
        refuse_links(self.out / DATA, self.out / THUMBS)
        self.roots = input_roots(self.facts.get("inputs") or [])
        self.count = 0          # rows so far, earlier runs' included
        self.rows: list[str] = []  # the open chunk's rows and heatmaps, as JSON
        self.heats: list[str] = []
        self.dirty = False
        self.facts_written = False
        self.reserve = reserve
        if resume:
            self._resume()
        else:
            self._clear(tables)
            self.write()

    def __len__(self) -> int:
        return self.count

    def add(self, r) -> None:
        if len(self.rows) == CHUNK:  # the open chunk is full: written one last time, then let go
            self._write_chunk()
            self.rows, self.heats = [], []
        thumb = thumbnail_jpeg(r)
        r.preview = None
        if thumb:
            atomic_write_bytes(self.out / THUMBS / f"{self.count:06d}.jpg", thumb)
        row, heat = self.row(r, thumb is not None)
        self.rows.append(_json(row))
        self.heats.append(_json(heat))
        self.count += 1
        self.dirty = True

    def write(self) -> None:
        if not self.facts_written:
            atomic_write_text(self.out / DATA / "facts.js", f"stampcheckFacts({_json(self.facts)});\n")
            if not (self.out / "index.html").is_file() or (self.out / "index.html").read_bytes() != PAGE:
                atomic_write_bytes(self.out / "index.html", PAGE)
            self.facts_written = True
        if self.dirty:
            self._write_chunk()
        manifest = {"rows": self.count, "chunk": CHUNK, "threshold": self.threshold,
                    "near": near_band(self.threshold), "near_odds": NEAR_ODDS, "reserved": max(self.count, self.reserve)}
        atomic_write_text(self.out / DATA / "manifest.js", f"stampcheckManifest({_json(manifest)});\n")

    def row(self, r, thumb: bool) -> tuple[dict, str | None]:
        """The page's row of a photo (short keys: 20,000 of them are read at once) and its heatmap. Text
        is as the console shows it (:func:`shown`): a right-to-left override or a newline in a name
        would show it reversed or joined on the page; results.jsonl keeps the raw name."""
        row = {"i": self.count, "p": shown(str(r.path)), "f": shown(folder_of(r.path, self.roots)),
               "o": original_url(r.path, self.out), "t": int(thumb)}
        if r.error:
            return {**row, "k": "unreadable", "e": shown(r.error)}, None
        found = r.found()
        row.update(k="stamped" if found else "missing", s=round(r.score, 4), w=r.width, h=r.height,
                   d=[[round(s, 4), shown(c), *(round(v, 1) for v in b)] for s, c, b in found],
                   b=[round(v, 1) for v in r.top_box] if r.top_box else None)
        if r.detector_score is not None:  # the second look: what the verifier saw, and the detector's score
            row.update(v=round(r.detector_score, 4), c=r.look_window)
        return row, heat_hex(r.heatmap)

    def _write_chunk(self) -> None:
        k = (self.count - 1) // CHUNK
        rows, heats = ",\n".join(self.rows), ",\n".join(self.heats)
        # the heatmaps first: a page never reads rows whose heatmaps are not there yet
        atomic_write_text(self.out / DATA / f"heat-{k:05d}.js", f"stampcheckHeat({k},[\n{heats}]);\n")
        atomic_write_text(self.out / DATA / f"rows-{k:05d}.js", f"stampcheckRows({k},[\n{rows}]);\n")
        self.dirty = False

    def _chunks(self) -> list[Path]:
        folder = self.out / DATA
        return sorted(p for p in folder.glob("rows-*.js") if ROWS_NAME.fullmatch(p.name)) if folder.is_dir() else []

    def _resume(self) -> None:
        """Continue after the last chunk an earlier run wrote: its rows are read back (the page's
        data is the only record the report needs), so numbers and counts go on from there."""
        chunks = self._chunks()
        if not chunks:
            return
        k = int(ROWS_NAME.fullmatch(chunks[-1].name)[1])
        heat_file = self.out / DATA / f"heat-{k:05d}.js"
        try:
            rows = _read_js(chunks[-1], "stampcheckRows")
            heats = _read_js(heat_file, "stampcheckHeat") if heat_file.is_file() else []
        except (OSError, ValueError) as e:
            raise ReportError(f"{chunks[-1]} cannot be read back ({type(e).__name__}: {e}); "
                              "continue in a new report folder") from e
        heats = (heats + [None] * len(rows))[:len(rows)]
        self.rows, self.heats = [_json(r) for r in rows], [_json(h) for h in heats]
        self.count = k * CHUNK + len(rows)

    def _clear(self, tables: tuple[Path, ...]) -> None:
        """A new run in a folder an earlier qa run filled: that run's rows and thumbnails go, so that
        none is shown or resumed as this run's. Only what its manifest says it wrote or reserved (a
        user's ``thumbs/999999.jpg`` stays); with no readable manifest nothing goes, and this run's
        files replace same-named ones atomically all the same.

        The order keeps table and page of one run whenever a kill -9 comes: the tables go first (a
        page without its table misleads no one; a table beside another run's page does), then the
        rows, and the manifest, which names them, last."""
        for p in tables:
            if p.is_symlink() or p.is_file():
                p.unlink()
        try:
            manifest = _read_js(self.out / DATA / "manifest.js", "stampcheckManifest", "{", "}")
            rows, chunk, reserved = manifest["rows"], manifest["chunk"], manifest.get("reserved", 0)
            if not (all(type(v) is int and v >= 0 for v in (rows, chunk, reserved)) and chunk > 0):
                return
        except (OSError, ValueError, TypeError, KeyError, AttributeError):
            return
        rows = max(rows, reserved)
        chunks = -(-rows // chunk)
        data = self.out / DATA
        for p in (data.iterdir() if data.is_dir() else []):
            m = ROWS_NAME.fullmatch(p.name) or HEAT_NAME.fullmatch(p.name)
            if m and int(m[1]) < chunks and _plain_file(p):
                p.unlink()
        if (self.out / THUMBS).is_dir():
            for p in (self.out / THUMBS).iterdir():
                if THUMB_NAME.fullmatch(p.name) and int(p.name[:6]) < rows and _plain_file(p):
                    p.unlink()


def near_band(threshold: float) -> list[float]:
    """The scores "near" ``threshold``: odds within NEAR_ODDS of its odds. A fixed width (0.1 either
    side) held half of a report whose scores crowd towards 1; odds narrow the band where they crowd."""
    t = min(max(threshold, 1e-6), 1 - 1e-6)
    odds = t / (1 - t)
    return [round(o / (1 + o), 4) for o in (odds / NEAR_ODDS, odds * NEAR_ODDS)]


def _plain_file(p: Path) -> bool:
    return p.is_file() and not p.is_symlink()


def _json(obj) -> str:
    """JSON for a script file: ASCII, and no ``<`` anywhere, so that no name can end a script."""
    return json.dumps(obj, ensure_ascii=True, separators=(",", ":"), allow_nan=False).replace("<", "\\u003c")


def _read_js(path: Path, call: str, first: str = "[", last: str = "]"):
    """The value of a data file this class wrote: ``call(k,[...]);`` (a chunk) or ``call({...});``."""
    text = path.read_text()
    if not text.startswith(call + "("):
        raise ValueError(f"not a {call}(...) file")
    start, end = text.index(first, len(call)), text.rindex(last)
    return json.loads(text[start:end + 1])


def heat_hex(heatmap) -> str | None:
    """A heatmap as two hex digits per cell (0..255 for scores 0..1), rows top to bottom."""
    if heatmap is None:
        return None
    cells = np.clip(np.nan_to_num(np.asarray(heatmap, dtype=np.float32)) * 255 + 0.5, 0, 255).astype(np.uint8)
    return cells.tobytes().hex()


def input_roots(inputs: list) -> list[Path]:
    """The folders photos are named relative to: each folder given, a glob's fixed part, a file's folder."""
    roots = []
    for raw in inputs:
        p = Path(raw)
        if glob.has_magic(str(raw)):
            p = Path(*[part for part in itertools.takewhile(lambda x: not glob.has_magic(x), p.parts)] or ["."])
        elif p.is_file():
            p = p.parent
        roots.append(Path(os.path.abspath(p)))
    return sorted(roots, key=lambda p: len(p.parts), reverse=True)  # the deepest root names a photo


def folder_of(path: Path, roots: list[Path]) -> str:
    """A photo's folder relative to the input that holds it (line3/cam2), "." for the input itself."""
    parent = Path(os.path.abspath(path)).parent
    for root in roots:
        if parent == root or root in parent.parents:
            return str(parent.relative_to(root))
    return str(Path(path).parent)


def original_url(path: Path, out: Path) -> str:
    """The photo as a URL relative to the report folder (raw bytes percent-encoded), which the page
    opens large; a report moved away from its photos falls back to the thumbnail."""
    rel = os.path.relpath(os.path.abspath(path), os.path.abspath(out))
    return quote(os.fsencode(rel).replace(os.sep.encode(), b"/"))


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
            boxes = [b for _, _, b in r.found()]
            img = draw_boxes(img, boxes, width=max(2, img.width // 200))
            atomic_write_bytes(folder / annotated_name(k, r.path), jpeg_bytes(img, 90, subsampling=0))
        except Exception as e:  # noqa: BLE001 - one photo's copy is not worth the others'
            failed.append((r.path, str(e) if isinstance(e, ImageRejected) else f"{type(e).__name__}: {e}"))
    return failed
