"""The dataset contract: the one definition of a labelled stampcheck dataset.

Every stage reads and writes datasets through this module, so the layout, the label columns and
the box convention live here and nowhere else.

A dataset directory holds:

- ``images/``: the JPEG images;
- ``labels.csv``: header ``file,split,background,has_stamp,x0,y0,x1,y1,class``: one row per stamp
  instance, and one row with ``has_stamp=0`` and empty box fields for an image without any stamp;
- ``coco.json``: COCO detection format, one category per stamp class;
- ``yolo/``: the Ultralytics YOLO layout: ``data.yaml`` (paths relative to it), ``images/{train,val}/``
  (hard links to the files in ``images/``, copies where the file system has no hard links) and
  ``labels/{train,val}/NAME.txt`` (``class cx cy w h`` normalised to 0..1; empty for no stamp);
- ``dataset.json``: counts, seed, every parameter used, stamp hashes, background list.

Box convention (used by every stage): a box is ``(x0, y0, x1, y1)`` in pixels of the image it
belongs to, x1 and y1 exclusive, so ``width = x1 - x0``. A real-photo dataset labelled by hand uses
the same files; only ``images/`` and ``labels.csv`` with ``file,has_stamp,x0,y0,x1,y1`` are required
(``split``, ``background`` and ``class`` may be left out).
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import shutil
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

from stampcheck.atomic import atomic_path, atomic_write_text
from stampcheck.files import open_regular, read_text

IMAGES_DIR = "images"
LABELS_CSV = "labels.csv"
COCO_JSON = "coco.json"
YOLO_DIR = "yolo"
DATASET_JSON = "dataset.json"
PREVIEW_PNG = "preview.png"
SPLITS = ("train", "valid")
COLUMNS = ["file", "split", "background", "has_stamp", "x0", "y0", "x1", "y1", "class"]
REQUIRED_COLUMNS = ["file", "has_stamp", "x0", "y0", "x1", "y1"]
YOLO_SPLITS = {"train": "train", "valid": "val"}  # our split -> the folder name Ultralytics uses


class DatasetError(ValueError):
    """A dataset that breaks the contract; the message names the bad rows. ``lines``: the problems,
    one a line under the first (the CLI prints each on its own line, each escaped as a name is)."""

    def __init__(self, message: str, lines: list[str] = ()):
        self.head, self.lines = message, list(lines)
        super().__init__(message + "".join("\n  " + line for line in self.lines))


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
    read is not a label error: whoever decodes it reports it. Without a ``split`` column every
    image's split is "" (an evaluation set); without ``class`` every box is ``default_class``.
    """
    dataset = Path(dataset)
    path = dataset / LABELS_CSV
    if not path.is_file():
        raise DatasetError(f"{path} {'is not a regular file' if path.exists() else 'not found'}: not a stampcheck "
                           "dataset (see `stampcheck compose`)")
    items: dict[str, ImageLabels] = {}
    errors: list[str] = []
    sizes: dict[str, tuple[int, int] | None] = {}
    try:
        text = read_text(path, encoding="utf-8-sig")  # -sig: spreadsheets start the file with a BOM
    except UnicodeDecodeError as e:
        raise DatasetError(f"{path} is not UTF-8 text (byte {e.start}); save it as CSV UTF-8") from e
    except OSError as e:
        raise DatasetError(f"{path} cannot be read: {e.strerror or e}") from e
    with io.StringIO(text, newline="") as f:
        reader = csv.DictReader(f)
        missing = [c for c in REQUIRED_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise DatasetError(f"{path}: missing columns {missing}; expected {','.join(COLUMNS)} "
                               f"(split, background and class may be left out)")
        has_split = "split" in reader.fieldnames
        for lineno, row in enumerate(reader, start=2):
            row["split"] = row.get("split") if has_split else ""
            row["background"] = row.get("background") or ""
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
        more = [f"... and {len(errors) - 20} more"] if len(errors) > 20 else []
        raise DatasetError(f"{path}: {len(errors)} bad rows:", errors[:20] + more)
    if not items:
        raise DatasetError(f"{path} has no rows")
    return list(items.values())


def _row_problem(row: dict, dataset: Path, sizes: dict) -> str | None:
    if row["split"] not in SPLITS and row["split"] != "":
        return f"split must be one of {SPLITS}, got {row['split']!r}"
    name = row.get("file") or ""
    if os.path.isabs(name) or os.path.normpath(name).split(os.sep)[0] == os.pardir:
        return f"file must be a path inside {IMAGES_DIR}/"
    if not name or not (dataset / IMAGES_DIR / name).is_file():
        there = name and (dataset / IMAGES_DIR / name).exists()  # a named pipe, a folder: never opened
        return f"image {IMAGES_DIR}/{name} is " + ("not a regular file" if there else "missing")
    if row.get("has_stamp") not in ("0", "1"):
        return f"has_stamp must be 0 or 1, got {row.get('has_stamp')!r}"
    if name not in sizes:
        sizes[name] = upright_size(dataset / IMAGES_DIR / name)
    if row["has_stamp"] == "0":
        return None
    try:
        x0, y0, x1, y1 = (float(row[k]) for k in ("x0", "y0", "x1", "y1"))
    except (TypeError, ValueError):
        return "has_stamp=1 needs numeric x0,y0,x1,y1"
    return box_problem((x0, y0, x1, y1), sizes[name])


def box_problem(box, size: tuple[int, int] | None) -> str | None:
    """Why a pixel box ``(x0, y0, x1, y1)`` cannot be a label of a ``size`` image, or None."""
    x0, y0, x1, y1 = box
    text = f"box ({x0:g},{y0:g},{x1:g},{y1:g})"
    if not all(map(math.isfinite, (x0, y0, x1, y1))):
        return f"{text} is not finite"
    if not (0 <= x0 < x1 and 0 <= y0 < y1):
        return f"{text} is empty or negative"
    # Outside the image is an error, not clipped: it means a box of another image, or of the
    # photo before it was scaled or turned, and clipping would hide that.
    if size and (x1 > size[0] or y1 > size[1]):
        return f"{text} reaches outside the {size[0]}x{size[1]} image"
    return None


def upright_size(path: Path) -> tuple[int, int] | None:
    """(width, height) as the photo is seen (EXIF orientation applied), from the header alone."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with open_regular(path) as f, Image.open(f) as img:
                w, h = img.size
                turned = img.getexif().get(0x0112, 1) in (5, 6, 7, 8)
    except Exception:  # unreadable headers raise anything (OSError, SyntaxError, DecompressionBombError...)
        return None
    return (h, w) if turned else (w, h)


def class_names(items: list[ImageLabels]) -> list[str]:
    return sorted({b.label for item in items for b in item.boxes}) or ["stamp"]


def coco_dict(items: list[ImageLabels], classes: list[str]) -> dict:
    """COCO detection dict; COCO boxes are ``[x, y, w, h]``, which with exclusive x1 is x1 - x0.
    ``info``, ``licenses`` and an empty ``segmentation`` are there because CVAT's format layer
    (datumaro) warns once per box without them; no date, so the same dataset gives the same bytes."""
    cat_ids = {name: i + 1 for i, name in enumerate(classes)}
    images, annotations = [], []
    for img_id, item in enumerate(items, start=1):
        images.append({"id": img_id, "file_name": item.file, "width": item.width, "height": item.height})
        for b in item.boxes:
            annotations.append({
                "id": len(annotations) + 1, "image_id": img_id, "category_id": cat_ids[b.label],
                "bbox": [b.x0, b.y0, b.width, b.height], "area": b.width * b.height, "iscrowd": 0,
                "segmentation": [],
            })
    categories = [{"id": i, "name": n, "supercategory": "stamp"} for n, i in cat_ids.items()]
    return {"info": {"description": "labelled by stampcheck", "version": "1.0"}, "licenses": [],
            "images": images, "annotations": annotations, "categories": categories}


def yolo_lines(item: ImageLabels, classes: list[str]) -> str:
    out = []
    for b in item.boxes:
        cx, cy = (b.x0 + b.x1) / 2 / item.width, (b.y0 + b.y1) / 2 / item.height
        out.append(f"{classes.index(b.label)} {cx:.6f} {cy:.6f} "
                   f"{b.width / item.width:.6f} {b.height / item.height:.6f}")
    return "".join(line + "\n" for line in out)


def yolo_to_box(line: str, width: int, height: int, classes: list[str]) -> Box:
    """Inverse of :func:`yolo_lines` for one line, rounded back to whole pixels."""
    c, *xywh = line.split()
    return Box(*map(round, yolo_pixels(map(float, xywh), width, height)), label=classes[int(c)])


def yolo_pixels(xywh, width: int, height: int) -> tuple[float, float, float, float]:
    """A normalised YOLO ``cx cy w h`` as a pixel box ``x0, y0, x1, y1`` of a width x height image."""
    cx, cy, w, h = xywh
    cx, cy, w, h = cx * width, cy * height, w * width, h * height
    return cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2


def yolo_paths(item: ImageLabels) -> tuple[Path, Path]:
    """The image and label paths of ``item`` inside yolo/: Ultralytics finds a label by swapping the
    last ``/images/`` of the image's path for ``/labels/`` and its suffix for ``.txt``."""
    split = YOLO_SPLITS[item.split or "valid"]  # a set without splits is a held-out set
    return Path(IMAGES_DIR, split, item.file), Path("labels", split, item.file).with_suffix(".txt")


def yolo_files(dataset: Path, name: str) -> list[Path]:
    """Every yolo/ file that :func:`write_label_files` may have written for the image ``name``,
    in either split, and in the flat layout of earlier versions (for compose --overwrite)."""
    yolo = Path(dataset) / YOLO_DIR
    return legacy_yolo_files(dataset, [name])[:1] + [
        p for split in SPLITS for p in map(yolo.joinpath, yolo_paths(ImageLabels(name, split, "")))]


def yolo_dataset_files(dataset: Path) -> list[Path]:
    """yolo/'s files not tied to one image, earlier versions' split lists included."""
    return [Path(dataset) / YOLO_DIR / "data.yaml", *legacy_yolo_files(dataset, [])]


def legacy_yolo_files(dataset: Path, names: list[str]) -> list[Path]:
    """What versions before the Ultralytics layout wrote in yolo/: NAME.txt beside data.yaml (its
    split lists of absolute paths are rewritten as CVAT's, stampcheck.tool_files)."""
    yolo = Path(dataset) / YOLO_DIR
    return [yolo / (Path(n).stem + ".txt") for n in names]


def yolo_folders(dataset: Path) -> list[Path]:
    yolo = Path(dataset) / YOLO_DIR
    return [yolo] + [yolo / sub / split for sub in (IMAGES_DIR, "labels") for split in YOLO_SPLITS.values()]


def yolo_data_yaml(classes: list[str]) -> str:
    """No ``path:`` key: Ultralytics then takes paths relative to this file, so the dataset can move.
    Names are JSON strings, which YAML reads as double-quoted scalars whatever they hold."""
    names = "".join(f"  {i}: {json.dumps(n, ensure_ascii=False)}\n" for i, n in enumerate(classes))
    return ("# Ultralytics YOLO detection dataset written by stampcheck compose; paths relative to this file.\n"
            "# images/ holds hard links to the dataset's images/ (copies where links are impossible).\n"
            f"train: {IMAGES_DIR}/{YOLO_SPLITS['train']}\nval: {IMAGES_DIR}/{YOLO_SPLITS['valid']}\n"
            f"nc: {len(classes)}\nnames:\n{names}")


def link_image(src: Path, dst: Path) -> None:
    """``dst`` becomes a hard link to ``src`` (no extra disk space; survives moving the dataset and
    is a plain file to every tool), or a copy where the file system cannot link. Atomic, like every
    write here; an existing link to the same file is kept."""
    if dst.exists() and os.path.samefile(src, dst):
        return
    with atomic_path(dst) as tmp:
        try:
            os.link(src, tmp)
        except OSError:
            shutil.copyfile(src, tmp)


def write_label_files(dataset: Path, items: list[ImageLabels], classes: list[str]) -> None:
    """Write labels.csv, coco.json and yolo/, each file atomically, from the same items."""
    dataset = Path(dataset)
    yolo = dataset / YOLO_DIR
    for folder in yolo_folders(dataset):  # both splits, even empty: Ultralytics checks that they exist
        folder.mkdir(parents=True, exist_ok=True)
    for item in items:
        image, label = yolo_paths(item)
        link_image(dataset / IMAGES_DIR / item.file, yolo / image)
        atomic_write_text(yolo / label, yolo_lines(item, classes))
    atomic_write_text(yolo / "data.yaml", yolo_data_yaml(classes))
    for f in legacy_yolo_files(dataset, [i.file for i in items]):  # a dataset composed before, resumed
        f.unlink(missing_ok=True)
    atomic_write_text(dataset / COCO_JSON, json.dumps(coco_dict(items, classes)))
    atomic_write_text(dataset / LABELS_CSV, labels_csv_text(items))
