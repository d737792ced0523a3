"""The dataset contract: the one definition of a labelled stampcheck dataset.

Every stage reads and writes datasets through this module, so the layout, the label columns and
the box convention live here and nowhere else.

A dataset directory holds:

- ``images/``: the JPEG images;
- ``labels.csv``: header ``file,split,background,has_stamp,x0,y0,x1,y1`` (plus an optional
  ``class`` column when several stamp classes exist): one row per stamp instance, and one row with
  ``has_stamp=0`` and empty box fields for an image without any stamp;
- ``coco.json``: COCO detection format, one category per stamp class;
- ``yolo/``: one ``.txt`` per image (``class cx cy w h`` normalised to 0..1) plus ``data.yaml``;
- ``dataset.json``: counts, seed, every parameter used, stamp hashes, background list.

Box convention (used by every stage): a box is ``(x0, y0, x1, y1)`` in pixels of the image it
belongs to, x1 and y1 exclusive, so ``width = x1 - x0``. A real-photo dataset labelled by hand uses
the same files; only ``labels.csv`` and ``images/`` are required to read one.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

from stampcheck.atomic import atomic_write_text

IMAGES_DIR = "images"
LABELS_CSV = "labels.csv"
COCO_JSON = "coco.json"
YOLO_DIR = "yolo"
DATASET_JSON = "dataset.json"
PREVIEW_PNG = "preview.png"
SPLITS = ("train", "valid")
COLUMNS = ["file", "split", "background", "has_stamp", "x0", "y0", "x1", "y1", "class"]
REQUIRED_COLUMNS = COLUMNS[:-1]


class DatasetError(ValueError):
    """A dataset that breaks the contract; the message names the bad rows."""


@dataclass(frozen=True)
class Box:
    """Pixel box ``x0, y0, x1, y1`` with x1/y1 exclusive (see the module docstring)."""

    x0: int
    y0: int
    x1: int
    y1: int
    label: str = "stamp"

    @property
    def width(self) -> int:
        return self.x1 - self.x0

    @property
    def height(self) -> int:
        return self.y1 - self.y0

    def as_tuple(self) -> tuple[int, int, int, int]:
        return (self.x0, self.y0, self.x1, self.y1)


@dataclass
class ImageLabels:
    """Everything the contract says about one image: an empty ``boxes`` list means no stamp."""

    file: str
    split: str
    background: str
    boxes: list[Box] = field(default_factory=list)
    width: int = 0
    height: int = 0

    @property
    def has_stamp(self) -> bool:
        return bool(self.boxes)


def label_rows(item: ImageLabels) -> list[dict]:
    """The ``labels.csv`` rows of one image."""
    base = {"file": item.file, "split": item.split, "background": item.background}
    if not item.boxes:
        return [{**base, "has_stamp": 0, "x0": "", "y0": "", "x1": "", "y1": "", "class": ""}]
    return [
        {**base, "has_stamp": 1, "x0": b.x0, "y0": b.y0, "x1": b.x1, "y1": b.y1, "class": b.label}
        for b in item.boxes
    ]


def labels_csv_text(items: list[ImageLabels]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    for item in items:
        writer.writerows(label_rows(item))
    return buf.getvalue()


def read_labels(dataset: Path, default_class: str = "stamp") -> list[ImageLabels]:
    """Read and validate ``labels.csv``; raise DatasetError naming every bad row.

    A file must lie inside images/, and a box must be finite and inside its image (whose upright
    size, read from the header, fills ``width`` and ``height``). An image whose header cannot be
    read is not a label error: whoever decodes it reports it.
    """
    dataset = Path(dataset)
    path = dataset / LABELS_CSV
    if not path.is_file():
        raise DatasetError(f"{path} not found: not a stampcheck dataset (see `stampcheck compose`)")
    items: dict[str, ImageLabels] = {}
    errors: list[str] = []
    sizes: dict[str, tuple[int, int] | None] = {}
    with path.open(newline="", encoding="utf-8-sig") as f:  # -sig: spreadsheets start the file with a BOM
        reader = csv.DictReader(f)
        missing = [c for c in REQUIRED_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise DatasetError(f"{path}: missing columns {missing}; expected {','.join(COLUMNS)}")
        for lineno, row in enumerate(reader, start=2):
            problem = _row_problem(row, dataset, sizes)
            if problem:
                errors.append(f"line {lineno} ({row.get('file')}): {problem}")
                continue
            item = items.get(row["file"])
            if item is None:
                w, h = sizes.get(row["file"]) or (0, 0)
                item = items[row["file"]] = ImageLabels(row["file"], row["split"], row["background"], width=w, height=h)
            elif item.split != row["split"]:
                errors.append(f"line {lineno} ({row['file']}): split differs from earlier rows")
                continue
            if row["has_stamp"] == "1":
                coords = [int(float(row[k])) for k in ("x0", "y0", "x1", "y1")]
                item.boxes.append(Box(*coords, label=row.get("class") or default_class))
    if errors:
        shown = "\n  ".join(errors[:20])
        more = f"\n  ... and {len(errors) - 20} more" if len(errors) > 20 else ""
        raise DatasetError(f"{path}: {len(errors)} bad rows:\n  {shown}{more}")
    if not items:
        raise DatasetError(f"{path} has no rows")
    return list(items.values())


def _row_problem(row: dict, dataset: Path, sizes: dict) -> str | None:
    if row.get("split") not in SPLITS:
        return f"split must be one of {SPLITS}, got {row.get('split')!r}"
    name = row.get("file") or ""
    if os.path.isabs(name) or os.path.normpath(name).split(os.sep)[0] == os.pardir:
        return f"file must be a path inside {IMAGES_DIR}/"
    if not name or not (dataset / IMAGES_DIR / name).is_file():
        return f"image {IMAGES_DIR}/{name} is missing"
    if row.get("has_stamp") not in ("0", "1"):
        return f"has_stamp must be 0 or 1, got {row.get('has_stamp')!r}"
    if name not in sizes:
        sizes[name] = _upright_size(dataset / IMAGES_DIR / name)
    if row["has_stamp"] == "0":
        return None
    try:
        x0, y0, x1, y1 = (float(row[k]) for k in ("x0", "y0", "x1", "y1"))
    except (TypeError, ValueError):
        return "has_stamp=1 needs numeric x0,y0,x1,y1"
    box = f"box ({x0:g},{y0:g},{x1:g},{y1:g})"
    if not all(map(math.isfinite, (x0, y0, x1, y1))):
        return f"{box} is not finite"
    if not (0 <= x0 < x1 and 0 <= y0 < y1):
        return f"{box} is empty or negative"
    # Outside the image is an error, not clipped: it means a box of another image, or of the
    # photo before it was scaled or turned, and clipping would hide that.
    if sizes[name] and (x1 > sizes[name][0] or y1 > sizes[name][1]):
        return f"{box} reaches outside the {sizes[name][0]}x{sizes[name][1]} image"
    return None


def _upright_size(path: Path) -> tuple[int, int] | None:
    """(width, height) as the photo is seen (EXIF orientation applied), from the header alone."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                w, h = img.size
                turned = img.getexif().get(0x0112, 1) in (5, 6, 7, 8)
    except Exception:  # unreadable headers raise anything (OSError, SyntaxError, DecompressionBombError...)
        return None
    return (h, w) if turned else (w, h)


def class_names(items: list[ImageLabels]) -> list[str]:
    return sorted({b.label for item in items for b in item.boxes}) or ["stamp"]


def coco_dict(items: list[ImageLabels], classes: list[str]) -> dict:
    """COCO detection dict; COCO boxes are ``[x, y, w, h]``, which with exclusive x1 is x1 - x0."""
    cat_ids = {name: i + 1 for i, name in enumerate(classes)}
    images, annotations = [], []
    for img_id, item in enumerate(items, start=1):
        images.append({"id": img_id, "file_name": item.file, "width": item.width, "height": item.height})
        for b in item.boxes:
            annotations.append({
                "id": len(annotations) + 1, "image_id": img_id, "category_id": cat_ids[b.label],
                "bbox": [b.x0, b.y0, b.width, b.height], "area": b.width * b.height, "iscrowd": 0,
            })
    categories = [{"id": i, "name": n, "supercategory": "stamp"} for n, i in cat_ids.items()]
    return {"images": images, "annotations": annotations, "categories": categories}


def yolo_lines(item: ImageLabels, classes: list[str]) -> str:
    out = []
    for b in item.boxes:
        cx, cy = (b.x0 + b.x1) / 2 / item.width, (b.y0 + b.y1) / 2 / item.height
        out.append(f"{classes.index(b.label)} {cx:.6f} {cy:.6f} "
                   f"{b.width / item.width:.6f} {b.height / item.height:.6f}")
    return "".join(line + "\n" for line in out)


def yolo_to_box(line: str, width: int, height: int, classes: list[str]) -> Box:
    """Inverse of :func:`yolo_lines` for one line, rounded back to whole pixels."""
    c, cx, cy, w, h = line.split()
    cx, cy, w, h = float(cx) * width, float(cy) * height, float(w) * width, float(h) * height
    return Box(round(cx - w / 2), round(cy - h / 2), round(cx + w / 2), round(cy + h / 2),
               label=classes[int(c)])


def write_label_files(dataset: Path, items: list[ImageLabels], classes: list[str]) -> None:
    """Write labels.csv, coco.json and yolo/, each atomically, from the same items."""
    dataset = Path(dataset)
    yolo = dataset / YOLO_DIR
    yolo.mkdir(parents=True, exist_ok=True)
    for item in items:
        atomic_write_text(yolo / (Path(item.file).stem + ".txt"), yolo_lines(item, classes))
    for split in SPLITS:
        listed = "".join(f"{(dataset / IMAGES_DIR / i.file).resolve()}\n" for i in items if i.split == split)
        atomic_write_text(yolo / f"{split}.txt", listed)
    names = "".join(f"  {i}: {n}\n" for i, n in enumerate(classes))
    atomic_write_text(yolo / "data.yaml", f"path: {yolo.resolve()}\ntrain: train.txt\nval: valid.txt\n"
                      f"names:\n{names}")
    atomic_write_text(dataset / COCO_JSON, json.dumps(coco_dict(items, classes)))
    atomic_write_text(dataset / LABELS_CSV, labels_csv_text(items))
