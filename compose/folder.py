"""What compose writes in its --out, how it knows a folder as its own, and how it removes only what
it wrote (a user's file beside its own, even in images/ or yolo/, stays)."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

from stampcheck.atomic import remove_own_partials
from stampcheck.dataset import (COCO_JSON, DATASET_JSON, IMAGES_DIR, LABELS_CSV, PREVIEW_PNG, yolo_dataset_files,
                                yolo_files, yolo_folders)
from stampcheck.tool_files import tool_dataset_files, tool_files, tool_folders

PARTS_DIR = ".parts"
IMAGE_NAME = re.compile(r"\d{6,}\.jpg")  # the names the composer gives; nothing else is ever removed
PART_NAME = re.compile(r"\d{6,}\.json")


def summary_of(folder: Path) -> dict:
    """The dataset.json compose wrote in ``folder``; {} when there is none to read."""
    try:
        summary = json.loads((Path(folder) / DATASET_JSON).read_text())
    except (OSError, ValueError):
        return {}
    return summary if isinstance(summary, dict) else {}


def is_dataset(folder: Path) -> bool:
    """Whether compose wrote ``folder``: it holds compose's dataset.json or, unfinished, .parts/fingerprint."""
    if (folder / PARTS_DIR / "fingerprint").is_file():
        return True
    try:
        summary = json.loads((folder / DATASET_JSON).read_text())
    except (OSError, ValueError):
        return False
    return isinstance(summary, dict) and {"parameters", "images", "classes"} <= set(summary)


def remove_dataset(out: Path) -> None:
    """Remove what compose wrote in ``out``: the NNNNNN.jpg images its part records and labels.csv
    list, their yolo files, the label files, preview.png and .parts/. A file of the user's beside
    them, even in images/ or yolo/, stays."""
    parts, images = out / PARTS_DIR, out / IMAGES_DIR
    records = [p for p in parts.glob("*.json") if PART_NAME.fullmatch(p.name)]
    names = set()
    for record in records:
        try:
            names.add(json.loads(record.read_text()).get("file"))
        except (OSError, ValueError, AttributeError):
            pass
    try:
        with (out / LABELS_CSV).open(newline="", encoding="utf-8-sig") as f:
            names.update(row.get("file") for row in csv.DictReader(f))
    except (OSError, ValueError, csv.Error):
        pass
    for name in names:
        if isinstance(name, str) and IMAGE_NAME.fullmatch(name):
            for f in [images / name, *yolo_files(out, name), *tool_files(out, name)]:
                f.unlink(missing_ok=True)
    for f in [out / LABELS_CSV, out / COCO_JSON, out / DATASET_JSON, out / PREVIEW_PNG, *yolo_dataset_files(out),
              *tool_dataset_files(out),
              parts / "fingerprint", parts / "state.pkl", *records]:
        f.unlink(missing_ok=True)
    for folder in (out, images, parts, *yolo_folders(out), *tool_folders(out)):
        if folder.is_dir():
            remove_own_partials(folder, ".+")
