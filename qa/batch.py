"""Batch QA: check folders of product photos and report, per photo, stamped or not, how sure, where.

Every path given ends as a row: the photos checked, and as errors those that could not be (unreadable
files, broken links, folders that cannot be listed); a photo that was not checked never counts as a
pass. Only a file found in a folder that is neither named nor made as an image (a README) is skipped,
and named. Results are streamed to ``results.csv`` / ``results.jsonl`` under temporary names and renamed
at the end, so a report folder never holds a half-written table. The earlier run's tables go with
its page when a run starts, and the new ones come after the new page: whenever a run is killed, the
tables there and the page describe the same run.
"""

from __future__ import annotations

import csv
import glob
import heapq
import json
import os
import shlex
import sys
from datetime import datetime
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from pathlib import Path
from typing import TYPE_CHECKING

from stampcheck.qa.config import BS
from stampcheck.qa.exports import EXPORTS, write_exports
from stampcheck import errors
from stampcheck.atomic import atomic_path, remove_own_partials
from stampcheck.images import may_be_photo
from stampcheck.paths import OutputLock, check_output, claim_output, refuse_links, refuse_overlap, under
from stampcheck.progress import no_progress, shown

if TYPE_CHECKING:
    from stampcheck.engine.decode import PhotoResult

RESULT_COLUMNS = ["file", "status", "has_stamp", "score", "class", "x0", "y0", "x1", "y1", "error"]
# The temporary names this command's atomic writes use (stampcheck.atomic): .NAME.PID.part
OWN_PARTIALS = {".": r"results\.csv|results\.jsonl|index\.html", "annotated": r"\d{5,}_.*\.jpg",
                "data": r"(?:rows|heat)-\d{5}\.js|facts\.js|manifest\.js", "thumbs": r"\d{6}\.jpg"}


class UsageError(ValueError):
    pass


@dataclass
class Inputs:
    """What the photo arguments name: files to check, paths known to be unusable before reading any
    (path -> why), and the folders and files given, which --out must stay clear of."""

    files: list[Path] = field(default_factory=list)
    problems: dict[Path, str] = field(default_factory=dict)
    roots: list[Path] = field(default_factory=list)
    not_photos: list[Path] = field(default_factory=list)  # found in folders, neither named nor made as images


def entry_kind(entry: Path | os.DirEntry) -> str:
    """'dir', 'file' (a regular file, through links) or 'other' (broken link, device, pipe...); a
    DirEntry answers from the listing, without a system call per file."""
    try:
        return "dir" if entry.is_dir() else "file" if entry.is_file() else "other"
    except OSError:
        return "other"


def why_not_a_file(path: Path) -> str:
    """The error of a path that is not a regular file: its row's reason (batch qa and watch)."""
    try:
        os.stat(path)
    except OSError as e:
        if os.path.islink(path):
            return f"broken-link: points to {os.readlink(path)} ({e.strerror})"
        return f"unreadable: {e.strerror}"
    return "not-a-file: not a regular file (a device, pipe or socket)"


def _entries(top: Path, problems: dict, depth: int | None = None, out: str | None = None):
    """(path, names below ``top``, kind) of every visible entry under the folder ``top``, at most
    ``depth`` levels down. Folder links are followed once per real folder, so a symlink loop ends and
    nothing is listed twice; a folder that cannot be listed becomes a problem, not a failed run. A
    folder below ``top`` that is the real folder ``out`` or inside it (a link) is a UsageError."""
    seen: set[tuple[int, int]] = set()
    # (folder, names below top, its real path: None where a link was followed to it)
    stack: list[tuple[Path, tuple[str, ...], str | None]] = [(top, (), None)]
    while stack:
        folder, rel, real = stack.pop()
        if out is not None:
            linked = real is None and bool(rel)  # reached through a folder link
            real = real or os.path.realpath(folder)
            if rel and under(real, out) and linked:  # the given folders are refuse_overlap's
                raise UsageError(f"{folder} leads into --out {out} (a folder link): the report's own files would "
                                 "be read as photos; remove the link, or give another --out")
            if rel and under(real, out):  # no link: the folder given holds --out, or lies inside it
                raise UsageError(f"--out {out} and the input {top} overlap: an output folder must be outside every "
                                 "input folder and hold none of them; choose another folder")
        try:
            st = os.stat(folder)
            if (st.st_dev, st.st_ino) in seen:
                continue
            seen.add((st.st_dev, st.st_ino))
            with os.scandir(folder) as it:
                listing = sorted((e.name, entry_kind(e), e.is_symlink()) for e in it if not e.name.startswith("."))
        except OSError as e:
            problems[folder] = f"unreadable-folder: {e.strerror or e}"
            continue
        for name, kind, link in listing:
            path, parts = folder / name, rel + (name,)
            yield path, parts, kind
            if kind == "dir" and (depth is None or len(parts) < depth):
                stack.append((path, parts, None if link or real is None else os.path.join(real, name)))


def _matches(names: tuple[str, ...], pattern: tuple[str, ...]) -> bool:
    """glob's rules, one path component at a time; ``**`` is any number of folders."""
    if not pattern:
        return not names
    if pattern[0] == "**":
        return any(_matches(names[i:], pattern[1:]) for i in range(len(names) + 1))
    return bool(names) and fnmatchcase(names[0], pattern[0]) and _matches(names[1:], pattern[1:])


def _glob(pattern: str, problems: dict, out: str | None = None) -> tuple[list[tuple[Path, str]], list[Path]]:
    """The (path, kind) a glob matches, and the paths --out must stay clear of. Matched here rather
    than by :mod:`glob`, which follows folder links into loops for ever."""
    parts = Path(pattern).parts
    cut = next(i for i, part in enumerate(parts) if glob.has_magic(part))
    base, rest = Path(*parts[:cut]), parts[cut:]
    if "**" in rest:  # it reads the whole tree under its base, as a folder would
        entries = _entries(base, problems, out=out) if base.is_dir() else []
        return [(p, kind) for p, names, kind in entries if _matches(names, rest)], [base]
    entries = _entries(base, problems, len(rest), out) if base.is_dir() else []
    matches = [(p, kind) for p, names, kind in entries if _matches(names, rest)]
    # files overlap --out only through their folder: one file of each will do (links that lead
    # nowhere are never read, and could not be resolved)
    return matches, list({(p if kind == "dir" else p.parent): p for p, kind in matches if kind != "other"}.values())


def expand_inputs(inputs: list[str], out: Path | None = None) -> Inputs:
    """Files, folders (recursive: every visible file that may be a photo by name or content; the
    others are ``not_photos``, named to the user, so nothing is skipped unseen) and globs. A
    folder met on the way that is ``out`` or inside it (through a link) is a UsageError: the
    report's files (thumbnails, tables) would be read as photos."""
    found, files, not_photos = Inputs(), set(), set()
    out = None if out is None else os.path.realpath(out)
    for raw in inputs:
        if glob.has_magic(raw):
            matches, roots = _glob(raw, found.problems, out)
        else:
            p = Path(raw)
            matches = [(p, entry_kind(p))] if os.path.lexists(p) else []
            roots = [p for p, kind in matches if kind != "other"]
        if not matches:
            raise UsageError(f"no such file or folder: {raw}")
        found.roots += roots
        for path, kind in matches:
            listed = kind == "dir" or glob.has_magic(raw)  # a file named on its own is always checked
            for f, _, k in _entries(path, found.problems, out=out) if kind == "dir" else [(path, (), kind)]:
                if k == "file":
                    (files if not listed or may_be_photo(f) else not_photos).add(f)
                elif k == "other":
                    found.problems[f] = why_not_a_file(f)
    found.files, found.not_photos = sorted(files), sorted(not_photos - files)
    return found


def remove_stale_partials(out: Path) -> list[Path]:
    """What qa runs killed mid-way left in ``out``: only qa's own temporary names, of dead runs."""
    return [p for sub, names in OWN_PARTIALS.items() for p in remove_own_partials(out / sub, names)]


@dataclass
class QASummary:
    photos: int = 0
    stamped: int = 0
    missing: int = 0
    unreadable: int = 0
    threshold: float = 0.5
    size: int = 0  # px the model reads photos at (0: not known)
    second_look: bool = False  # the model's verifier judged the detector's candidates
    results: list[PhotoResult] = field(default_factory=list)
    not_annotated: list[tuple[Path, str]] = field(default_factory=list)
    not_photos: list[Path] = field(default_factory=list)  # skipped: a folder's README, LICENSE, labels.csv

    def count(self, record: dict) -> None:
        """One more photo, by its :func:`photo_record`."""
        self.photos += 1
        if record["error"]:
            self.unreadable += 1
        elif record["has_stamp"]:
            self.stamped += 1
        else:
            self.missing += 1

    @property
    def exit_code(self) -> int:
        """The production gate (stampcheck.errors): a photo that could not be read is no pass."""
        if self.missing:
            return errors.MISSING
        return errors.UNREADABLE if self.unreadable else errors.OK


def photo_record(r: PhotoResult) -> dict:
    """results.jsonl's record of one photo: the stamps found (``detections``, best first, boxes in the
    photo's upright pixels) and the top score; null where there is no value (a photo not read has
    no score, size or detections, which is not the same as none found)."""
    base = {"file": str(r.path), "status": "error" if r.error else "ok"}
    if r.error:
        return {**base, "has_stamp": None, "score": None, "width": None, "height": None, "detections": None,
                "detector_score": None, "error": r.error}
    dets = [{"score": round(s, 4), "class": c, "box": [round(v) for v in b]} for s, c, b in r.found()]
    detector = None if r.detector_score is None else round(r.detector_score, 4)
    return {**base, "has_stamp": bool(dets), "score": round(r.score, 4), "width": r.width, "height": r.height,
            "detections": dets, "detector_score": detector, "error": None}


def result_rows(record: dict) -> list[dict]:
    """results.csv's rows of a :func:`photo_record`: one per stamp found, or one for a photo without
    (or not read); cells are empty where the record has null."""
    base = {"file": record["file"], "status": record["status"], "error": record["error"] or "",
            "has_stamp": "" if record["has_stamp"] is None else int(record["has_stamp"])}
    if not record["detections"]:
        return [{**base, "score": "" if record["score"] is None else record["score"], "class": "",
                 "x0": "", "y0": "", "x1": "", "y1": ""}]
    return [{**base, "score": d["score"], "class": d["class"], **dict(zip(("x0", "y0", "x1", "y1"), d["box"]))}
            for d in record["detections"]]


def open_engine(model_dir: Path, engine: str, device: str | None, threshold: float | None = None):
    """stampcheck.engine.load_engine, a model that cannot be used being the user's input error (exit 2)."""
    from stampcheck.engine import load_engine
    from stampcheck.engine.config import ModelError

    try:
        return load_engine(model_dir, engine, device, threshold)
    except ModelError as e:
        raise UsageError(str(e)) from e


def csv_writer(f) -> csv.DictWriter:
    """results.csv's writer on the open file ``f``; rows from :func:`result_rows` through csv_row."""
    return csv.DictWriter(f, fieldnames=RESULT_COLUMNS, lineterminator="\n")


def run_facts(model_dir: Path, engine, inputs: list[str], threshold: float) -> dict:
    """The run's facts the report states: the model (its classes, valid metrics and threshold, from
    the config the engine loaded: a model folder's config.json, or the one an ONNX export carries),
    the threshold used, when, on what, and the command line; text as the console shows it."""
    config = getattr(engine, "config", None) or {}
    valid = config.get("valid")
    metrics = Path(model_dir) / "metrics.json"
    if not valid and metrics.is_file():
        try:
            valid = json.loads(metrics.read_text()).get("final")
        except (OSError, ValueError, AttributeError):
            valid = None
    valid = {k: v for k, v in (valid or {}).items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    from stampcheck.engine.onnx import OnnxModel

    return {"model": shown(str(model_dir)), "engine": "onnx" if isinstance(engine, OnnxModel) else "torch",
            "classes": [shown(str(c)) for c in engine.classes], "size": engine.size,
            "threshold": threshold, "model_threshold": engine.stored_threshold, "valid": valid,
            "date": datetime.now().astimezone().isoformat(timespec="seconds"),
            "inputs": [shown(str(i)) for i in inputs],
            "command": shown(shlex.join(["stampcheck", *sys.argv[1:]]))}


def run_qa(model_dir: Path, inputs: list[str], out: Path, threshold: float | None = None, bs: int = BS,
           workers: int | None = None, device: str | None = None, annotate: bool = False,
           progress=None, engine: str = "torch") -> QASummary:
    out = Path(out)
    if os.path.lexists(out) and not out.is_dir():
        raise UsageError(f"--out {out} is not a folder; give a folder")
    found = expand_inputs(inputs, out)
    refuse_overlap(out, found.roots)
    check_output(out, "qa")
    if not found.files and not found.problems:
        skipped = f" (skipped, not photos by name or content: {len(found.not_photos)})" if found.not_photos else ""
        raise UsageError("no photos found in " + ", ".join(inputs) + skipped)
    # the model loads in seconds: only now, so that a mistyped path is answered at once
    from stampcheck.qa.report import Report, csv_row, write_annotated
    from stampcheck.engine.decode import PhotoResult
    from stampcheck.engine.run import predict_photos

    for name in EXPORTS:  # qa replaces these: a folder or a pipe of that name is not qa's
        if os.path.lexists(out / name) and not (out / name).is_file():
            raise UsageError(f"--out {out} holds {name}, which is not a file qa wrote; move it, or give another --out")
    predictor = open_engine(model_dir, engine, device, threshold)
    thr = predictor.threshold
    claim_output(out, "qa")
    with OutputLock(out, "qa"):  # released at the end; by the system if the run is killed
        if annotate:
            refuse_links(out / "annotated")
        remove_stale_partials(out)
        for name in EXPORTS:  # an earlier run's, written by qa: never beside this run's tables
            (out / name).unlink(missing_ok=True)
        summary = QASummary(threshold=thr, size=predictor.size, second_look=predictor.look is not None,
                             not_photos=found.not_photos)
        facts = run_facts(model_dir, predictor, inputs, thr)
        total = len(found.files) + len(found.problems)
        tables = (out / "results.csv", out / "results.jsonl")
        report = Report(out, thr, {**facts, "not_photos": [shown(str(p)) for p in found.not_photos]},
                        tables=tables, reserve=total)
        unchecked = (PhotoResult(p, error=why) for p, why in sorted(found.problems.items()))
        checked = predict_photos(predictor, found.files, bs=bs, workers=workers, previews=True)
        records = []
        with atomic_path(tables[0]) as csv_tmp, atomic_path(tables[1]) as jsonl_tmp:
            with csv_tmp.open("w", newline="") as fcsv, jsonl_tmp.open("w") as fjson, \
                    (progress or no_progress)(total, "checking photos") as advance:
                writer = csv_writer(fcsv)
                writer.writeheader()
                for r in heapq.merge(unchecked, checked, key=lambda r: r.path):
                    record = photo_record(r)
                    report.add(r)
                    writer.writerows(map(csv_row, result_rows(record)))
                    fjson.write(json.dumps(record) + "\n")
                    records.append(record)
                    summary.count(record)
                    summary.results.append(r)
                    advance(1)
            # the page before the tables: killed in between, the folder holds a page without its
            # tables, never a table beside another run's page
            report.write()
        write_exports(out, records, list(predictor.classes), facts["model"])
        if annotate:
            summary.not_annotated = write_annotated(summary, out / "annotated")
        return summary
