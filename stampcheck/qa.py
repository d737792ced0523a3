"""Batch QA: check folders of product photos and report, per photo, stamped or not, how sure, where.

Results are streamed to ``results.csv`` / ``results.jsonl`` under temporary names and renamed at
the end, so a report folder never holds a half-written table.
"""

from __future__ import annotations

import csv
import glob
import json
from dataclasses import dataclass, field
from pathlib import Path

from stampcheck.atomic import atomic_path
from stampcheck.report import thumbnail_jpeg, write_annotated, write_html
from train.predict import PhotoResult, Predictor, predict_photos

RESULT_COLUMNS = ["file", "status", "has_stamp", "score", "x0", "y0", "x1", "y1", "error"]


class UsageError(ValueError):
    pass


def expand_inputs(inputs: list[str]) -> list[Path]:
    """Files, folders (recursive: every visible file, so nothing is skipped unseen) and globs."""
    files: set[Path] = set()
    for raw in inputs:
        matches = [Path(m) for m in glob.glob(raw, recursive=True)] if glob.has_magic(raw) else [Path(raw)]
        if not matches or not all(m.exists() for m in matches):
            raise UsageError(f"no such file or folder: {raw}")
        for m in matches:
            if m.is_dir():
                files.update(f for f in m.rglob("*") if f.is_file()
                             and not any(part.startswith(".") for part in f.relative_to(m).parts))
            else:
                files.add(m)
    return sorted(files)


@dataclass
class QASummary:
    photos: int = 0
    stamped: int = 0
    missing: int = 0
    unreadable: int = 0
    threshold: float = 0.5
    results: list[PhotoResult] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        """0: every readable photo has a stamp; 1: some are missing."""
        return 1 if self.missing else 0


def result_rows(r: PhotoResult, threshold: float) -> list[dict]:
    """One row per detected stamp, or one row for a photo without stamp or that could not be read."""
    base = {"file": str(r.path), "status": "error" if r.error else "ok", "error": r.error or ""}
    if r.error:
        return [{**base, "has_stamp": "", "score": "", "x0": "", "y0": "", "x1": "", "y1": ""}]
    dets = r.found(threshold)
    if not dets:
        return [{**base, "has_stamp": 0, "score": round(r.score, 4), "x0": "", "y0": "", "x1": "", "y1": ""}]
    return [{**base, "has_stamp": 1, "score": round(s, 4), "x0": round(b[0]), "y0": round(b[1]),
             "x1": round(b[2]), "y1": round(b[3])} for s, _, b in dets]


def run_qa(model_dir: Path, inputs: list[str], out: Path, threshold: float | None = None, bs: int = 32,
           workers: int | None = None, device: str | None = None, annotate: bool = False,
           progress=None) -> QASummary:
    files = expand_inputs(inputs)
    if not files:
        raise UsageError("no photos found in " + ", ".join(inputs))
    predictor = Predictor(model_dir, device)
    thr = predictor.threshold if threshold is None else threshold
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    summary = QASummary(threshold=thr)
    with atomic_path(out / "results.csv") as csv_tmp, atomic_path(out / "results.jsonl") as jsonl_tmp, \
            csv_tmp.open("w", newline="") as fcsv, jsonl_tmp.open("w") as fjson, \
            progress(len(files), "checking photos") as advance:
        writer = csv.DictWriter(fcsv, fieldnames=RESULT_COLUMNS, lineterminator="\n")
        writer.writeheader()
        for r in predict_photos(predictor, files, bs=bs, workers=workers, threshold=thr, previews=True):
            rows = result_rows(r, thr)
            r.thumbnail, r.preview = thumbnail_jpeg(r, thr), None
            writer.writerows(rows)
            for row in rows:
                fjson.write(json.dumps({**row, "width": r.width, "height": r.height}) + "\n")
            summary.photos += 1
            if r.error:
                summary.unreadable += 1
            elif rows[0]["has_stamp"] == 1:
                summary.stamped += 1
            else:
                summary.missing += 1
            summary.results.append(r)
            advance(1)
    write_html(summary, out / "index.html", model_dir)
    if annotate:
        write_annotated(summary, out / "annotated")
    return summary
