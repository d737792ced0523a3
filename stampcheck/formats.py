"""Labelled sets as people have them, read into the dataset contract's items (for `evaluate`).

Three kinds, told apart by what the path is:

- a folder with ``labels.csv``: the dataset contract (``images/`` + ``labels.csv``);
- a ``.json`` file, or a folder holding exactly one: COCO detection, as CVAT, Label Studio and
  Roboflow export it. ``file_name`` is relative to ``images`` when given, else to the first of the
  JSON's folder, its ``images/`` and ``../images/`` that holds the most of the files;
- a ``.yaml`` file, or a folder with ``data.yaml``, or a folder with ``images/`` and ``labels/``
  (Label Studio's YOLO export, names in ``classes.txt``): YOLO in the Ultralytics layout, each
  image's label found as Ultralytics finds it (the last ``/images/`` of its path swapped for
  ``/labels/``, the suffix for ``.txt``). An image without a label file has no stamp, as there.

Boxes become the contract's whole pixels of the upright photo (EXIF orientation applied, as
Ultralytics and the labelling tools show it), and are checked as labels.csv's are.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from stampcheck.dataset import (IMAGES_DIR, LABELS_CSV, Box, DatasetError, ImageLabels, box_problem, read_labels,
                                upright_size, yolo_pixels)
from stampcheck.files import read_text
from stampcheck.images import find_images

NAMED = 20  # problems named one per line; more are counted
YOLO_SPLIT_NAMES = {"train": "train", "val": "valid", "test": "test"}
VOC_ANNOTATIONS = "Annotations"


@dataclass
class LabelledSet:
    root: Path                    # every item's file is relative to it
    items: list[ImageLabels]
    kind: str                     # "labels.csv", "COCO" or "YOLO"
    unlabelled: list[str] = field(default_factory=list)  # images beside the labelled ones that no label names
    notes: list[str] = field(default_factory=list)       # what a user should know about how it was read


def read_labelled_set(path: Path, images: Path | None = None) -> LabelledSet:
    """Read ``path`` as whichever kind it is (see the module docstring); raise DatasetError naming
    every bad label, or saying which kinds were looked for."""
    path = Path(path)
    if not path.exists():
        raise DatasetError(f"{path} not found")
    coco = [path] if path.suffix.lower() == ".json" else sorted(path.glob("*.json")) if path.is_dir() else []
    if path.is_dir() and (path / LABELS_CSV).is_file():
        kind = "labels.csv"
    elif path.suffix.lower() in (".yaml", ".yml") or path.is_dir() and _data_yaml(path):
        kind = "YOLO"  # compose's yolo/ holds CVAT's obj.data too: data.yaml is the fuller description
    elif path.name == "obj.data" or path.is_dir() and (path / "obj.data").is_file():
        kind = "YOLO 1.1"
    elif path.is_dir() and (path / VOC_ANNOTATIONS).is_dir() or path.name == VOC_ANNOTATIONS and path.is_dir():
        kind = "Pascal VOC"
    elif path.is_dir() and (path / IMAGES_DIR).is_dir() and (path / "labels").is_dir():
        kind = "YOLO"
    elif len(coco) == 1:
        kind = "COCO"
    else:
        raise DatasetError(f"{path}: not a labelled set: give a folder with {LABELS_CSV} and {IMAGES_DIR}/, a COCO "
                           "JSON file, a YOLO data.yaml (or a folder with data.yaml, or with images/ and labels/), "
                           "a YOLO 1.1 obj.data (CVAT) or a Pascal VOC folder (with Annotations/)")
    if images is not None and kind != "COCO":
        raise DatasetError(f"--images is for a COCO JSON, whose file names are relative to it; {path} is {kind}, "
                           "which says where its images are")
    if kind == "COCO":
        return read_coco(coco[0], images)
    if kind == "YOLO":
        return read_yolo(path)
    if kind == "YOLO 1.1":
        return read_darknet(path)
    if kind == "Pascal VOC":
        from stampcheck.voc import read_voc
        return read_voc(path.parent if path.name == VOC_ANNOTATIONS else path)
    items = read_labels(path)
    return LabelledSet(path / IMAGES_DIR, items, kind, _unlabelled(path / IMAGES_DIR, items))


def _unlabelled(folder: Path, items: list[ImageLabels]) -> list[str]:
    listed = {os.path.normpath(folder / i.file) for i in items}
    return [os.path.relpath(f, folder) for f in find_images([folder]) if os.path.normpath(f) not in listed
            and not any(part.startswith(".") for part in f.relative_to(folder).parts)]


def _raise_problems(source: Path, problems: list[str], hint: str = "") -> None:
    if problems:
        shown = "\n  ".join(problems[:NAMED])
        more = f"\n  ... and {len(problems) - NAMED} more" if len(problems) > NAMED else ""
        raise DatasetError(f"{source}: {len(problems)} bad labels{hint}:\n  {shown}{more}")


def _snap(box, item: ImageLabels, slack: float = 1.0) -> tuple:
    """Whole pixels; a corner less than ``slack`` pixels outside the image (a tool's rounding) moved
    onto its edge. Anything further out stays, for box_problem to name."""
    limits = (item.width, item.height) * 2 if item.width else (math.inf,) * 4
    out = []
    for v, lim in zip(box, limits):
        if math.isfinite(v):
            v = round(0 if -slack < v < 0 else lim if lim < v < lim + slack else v)
        out.append(v)
    return tuple(out)


# ---------------------------------------------------------------- COCO

def read_coco(path: Path, images: Path | None = None) -> LabelledSet:
    try:
        data = json.loads(read_text(path, encoding="utf-8-sig"))
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise DatasetError(f"{path}: not a readable JSON file ({e})") from e
    if not isinstance(data, dict) or not isinstance(data.get("images"), list) or \
            not isinstance(data.get("annotations", []), list) or not isinstance(data.get("categories", []), list):
        raise DatasetError(f"{path}: not COCO detection JSON (needs lists 'images', 'annotations', 'categories')")
    try:
        cats = {c["id"]: str(c["name"]) for c in data.get("categories", [])}
        entries = {im["id"]: im for im in data["images"]}
        names = [str(im["file_name"]) for im in data["images"]]
    except (KeyError, TypeError) as e:
        raise DatasetError(f"{path}: a category or image without {e} (COCO needs id and name / id and "
                           "file_name)") from e
    root, found, by_base = _coco_root(path, images, names)
    if names and not found:
        where = f"--images {images}" if images else f"{Path(path).parent}, its images/ or ../images/"
        raise DatasetError(f"{path}: none of its {len(names)} images (such as {names[0]}) is in {where}, as written "
                           "or by its base name; give --images, the folder its file names are relative to")
    notes = []
    if by_base:
        example = next(n for n in names if n in found and found[n] != _as_written(n))
        notes.append(f"{by_base} of {len(names)} file names are not in {root} as written and were found there by "
                     f"their base name (such as {example} -> {found[example]})")
    problems, items = [], {}
    for im in entries.values():
        name = str(im["file_name"])
        file = found.get(name, _as_written(name) or name)
        size = upright_size(root / file)  # None for what is no regular file, which is never opened
        if name not in found:
            problems.append(f"image {name}: " + (f"not a regular file in {root}" if (root / file).exists()
                                                 else f"not found in {root}, as written or by its base name"))
        elif size and im.get("width") and im.get("height") and (im["width"], im["height"]) != size:
            problems.append(f"image {name}: the JSON says {im.get('width')}x{im.get('height')}, the photo is "
                            f"{size[0]}x{size[1]} upright: labelled turned or scaled")
        items[im["id"]] = ImageLabels(file, "", "", width=size[0] if size else 0, height=size[1] if size else 0)
    for k, ann in enumerate(data.get("annotations", [])):
        problem = _coco_box(ann, entries, cats, items)
        if problem:
            problems.append(f"annotation {ann.get('id', k) if isinstance(ann, dict) else k}: {problem}")
    missing = not images and any("not found in" in p for p in problems)
    _raise_problems(path, problems, " (give --images, the folder its file names are relative to)" if missing else "")
    labelled = list(items.values())
    if not labelled:
        raise DatasetError(f"{path}: lists no images")
    return LabelledSet(root, labelled, "COCO", _unlabelled(root, labelled), notes)


def _coco_root(path: Path, images: Path | None, names: list[str]) -> tuple[Path, dict[str, str], int]:
    """The folder the file names are relative to (``images``, else the first of the JSON's folder,
    its images/ and ../images/ that holds the most of them), each name's file in it, and how many
    were found by base name."""
    if images is not None:
        if not Path(images).is_dir():
            raise DatasetError(f"--images {images} is not a folder")
        return (Path(images), *_find_files(Path(images), names))
    here = Path(path).parent
    tried = [(c, *_find_files(c, names)) for c in (here, here / IMAGES_DIR, here.parent / IMAGES_DIR) if c.is_dir()]
    return max(tried, key=lambda t: len(t[1]), default=(here, {}, 0))  # first of the best


def _as_written(name: str) -> str | None:
    """A file name as a path inside the root: Windows separators read as "/"; None for one that
    climbs out of it or is absolute (Label Studio writes ../../media/upload/1/x.jpg)."""
    parts = PurePosixPath(name.replace("\\", "/")).parts
    if not parts or parts[0] == "/" or ".." in parts or ":" in parts[0]:
        return None
    return "/".join(parts)


def _find_files(root: Path, names: list[str]) -> tuple[dict[str, str], int]:
    """Each name's file under ``root``, relative to it: as written, else the one image under it
    (at any depth: CVAT's images/default/) with the name's base name; and how many came by base name."""
    found, by_base, index = {}, 0, None
    for name in names:
        written = _as_written(name)
        if written and (root / written).is_file():
            found[name] = written
            continue
        if index is None:
            index = {}
            for f in find_images([root]):
                index.setdefault(f.name, []).append(f)
        hits = index.get(PurePosixPath(name.replace("\\", "/")).name, [])
        if len(hits) == 1:  # two of that name: which one is meant cannot be known
            found[name] = hits[0].relative_to(root).as_posix()
            by_base += 1
    return found, by_base


def _coco_box(ann, entries: dict, cats: dict, items: dict) -> str | None:
    if not isinstance(ann, dict):
        return "not an object"
    if ann.get("image_id") not in entries:
        return f"image_id {ann.get('image_id')!r} is not among the images"
    if ann.get("category_id") not in cats:
        return f"category_id {ann.get('category_id')!r} is not among the categories"
    bbox = ann.get("bbox")
    if not (isinstance(bbox, list) and len(bbox) == 4 and all(isinstance(v, (int, float)) for v in bbox)):
        return f"bbox must be [x, y, width, height], got {bbox!r}"
    item = items[ann["image_id"]]
    x, y, w, h = map(float, bbox)
    box = _snap((x, y, x + w, y + h), item)
    problem = box_problem(box, (item.width, item.height) if item.width else None)
    if problem:
        return f"{item.file}: {problem}"
    item.boxes.append(Box(*box, label=cats[ann["category_id"]]))
    return None


# ---------------------------------------------------------------- YOLO

def _data_yaml(folder: Path) -> Path | None:
    return next((folder / n for n in ("data.yaml", "data.yml") if (folder / n).is_file()), None)


def read_yolo(path: Path) -> LabelledSet:
    path = Path(path)
    yaml_file = path if path.is_file() else _data_yaml(path)
    if yaml_file is None:  # Label Studio's export: images/, labels/, classes.txt
        root = path
        names_file = path / "classes.txt"
        names = dict(enumerate(n.strip() for n in read_text(names_file).splitlines() if n.strip())) \
            if names_file.is_file() else None
        images = {str(f): "" for f in find_images([path / IMAGES_DIR])}
    else:
        root, names, images = _yolo_yaml(yaml_file)
    if not images:
        raise DatasetError(f"{yaml_file or path / IMAGES_DIR}: no images found")
    return _yolo_labels(root, names, images, yaml_file or path, _label_path, "YOLO")


def _yolo_labels(root: Path, names: dict[int, str] | None, images: dict[str, str], source: Path, label_of,
                 kind: str) -> LabelledSet:
    """Items for ``images`` (path -> split), each with the boxes of its label file ``label_of(path)``."""
    problems, items, without = [], [], 0
    for img, split in images.items():
        label = label_of(img)
        file = os.path.relpath(img, root) if Path(img).is_relative_to(root) else str(img)
        size = upright_size(Path(img))
        item = ImageLabels(file, split, "", width=size[0] if size else 0, height=size[1] if size else 0)
        items.append(item)
        if not os.path.isfile(img):
            problems.append(f"{file}: listed in {source} but " + ("not a regular file" if os.path.exists(img)
                                                                  else "not found"))
            continue
        if not os.path.isfile(label):
            if os.path.exists(label):  # a folder or a named pipe named like one: never read
                problems.append(f"{os.path.relpath(label, root)}: not a regular file")
            else:
                without += 1
            continue
        for lineno, line in enumerate(read_text(label, errors="replace").splitlines(), start=1):
            problem = _yolo_line(line, item, names)
            if problem:
                problems.append(f"{os.path.relpath(label, root)} line {lineno}: {problem}")
    _raise_problems(source, problems)
    notes = [f"{without} of {len(items)} images have no label file: taken as without stamp, as Ultralytics "
             "does"] if without else []
    return LabelledSet(root, items, kind, notes=notes)


# CVAT's "YOLO 1.1" (Darknet): obj.data names obj.names and the lists of images (train.txt...), their
# paths starting with the export's own folder name "data/"; each label beside its image.
DARKNET_LISTS = {"train": "train", "valid": "valid", "val": "valid", "test": "test"}


def read_darknet(path: Path) -> LabelledSet:
    obj_data = path if path.is_file() else path / "obj.data"
    root = obj_data.parent
    try:
        keys = dict(line.split("=", 1) for line in read_text(obj_data, encoding="utf-8-sig").splitlines() if "=" in line)
    except (OSError, UnicodeDecodeError) as e:
        raise DatasetError(f"{obj_data}: not readable ({e})") from e
    keys = {k.strip(): v.strip() for k, v in keys.items()}

    def inside(entry: str) -> Path:  # "data/obj.names" is the export's folder's obj.names
        entry = entry.replace("\\", "/")
        return root / entry if (root / entry).exists() or not entry.startswith("data/") else root / entry[5:]

    names_file = inside(keys.get("names", "obj.names"))
    if not names_file.is_file():
        raise DatasetError(f"{obj_data}: its names file {names_file} is not there")
    names = dict(enumerate(n.strip() for n in read_text(names_file).splitlines() if n.strip()))
    images: dict[str, str] = {}
    for key, split in DARKNET_LISTS.items():
        if key in keys:
            listing = inside(keys[key])
            if not listing.is_file():
                raise DatasetError(f"{obj_data}: its {key} list {listing} is not there")
            for line in read_text(listing).splitlines():
                if line.strip():
                    images.setdefault(str(inside(line.strip())), split)
    if not images:
        raise DatasetError(f"{obj_data}: lists no images (train = ..., a list of image paths)")
    return _yolo_labels(root, names, images, obj_data, lambda img: os.path.splitext(img)[0] + ".txt", "YOLO 1.1")


def _yolo_yaml(yaml_file: Path) -> tuple[Path, dict[int, str] | None, dict[str, str]]:
    import yaml

    try:
        data = yaml.safe_load(read_text(yaml_file, encoding="utf-8-sig"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
        raise DatasetError(f"{yaml_file}: not a readable YAML file ({e})") from e
    if not isinstance(data, dict) or not any(data.get(k) for k in YOLO_SPLIT_NAMES):
        raise DatasetError(f"{yaml_file}: not a YOLO data.yaml (needs train/val image folders or lists)")
    names = data.get("names")
    try:
        names = {int(k): str(v) for k, v in (names.items() if isinstance(names, dict) else enumerate(names))}
    except (TypeError, ValueError):  # no names (only nc), or not a list or a {number: name} map
        names = None
    # Ultralytics takes a relative `path` from the working folder; relative to the file is what is meant
    root = yaml_file.parent / str(data.get("path") or ".")
    images: dict[str, str] = {}
    for key, split in YOLO_SPLIT_NAMES.items():
        entries = data.get(key) or []
        for entry in entries if isinstance(entries, list) else [entries]:
            for img in _split_images(root, str(entry), yaml_file):
                images.setdefault(img, split)
    return root, names, images


def _split_images(root: Path, entry: str, yaml_file: Path) -> list[str]:
    """A data.yaml split entry: a folder (searched recursively) or a .txt list of image paths."""
    p = root / entry
    if not p.exists() and entry.startswith("../"):  # Roboflow writes ../train/images; Ultralytics tries this
        p = root / entry[3:]
    if p.is_dir():
        return [str(f) for f in find_images([p])]
    if p.is_file() and p.suffix.lower() == ".txt":
        lines = [line.strip() for line in read_text(p).splitlines() if line.strip()]
        return [str(p.parent / line) for line in lines]
    raise DatasetError(f"{yaml_file}: {entry} not found (relative to {root})")


def _label_path(img: str) -> str:
    """Ultralytics' img2label_paths."""
    sa, sb = f"{os.sep}images{os.sep}", f"{os.sep}labels{os.sep}"
    return sb.join(img.rsplit(sa, 1)).rsplit(".", 1)[0] + ".txt"


def _yolo_line(line: str, item: ImageLabels, names: dict[int, str] | None) -> str | None:
    """Add the box of one label line to ``item``; a line of a polygon (segmentation) counts as its bounds."""
    parts = line.split()
    if not parts:
        return None
    try:
        values = [float(v) for v in parts]
    except ValueError:
        return f"not numbers: {line.strip()[:80]!r}"
    c, coords = values[0], values[1:]
    if len(coords) != 4 and (len(coords) < 6 or len(coords) % 2):
        return "expected 'class cx cy w h' (or a class and polygon points)"
    if c != int(c) or c < 0 or (names is not None and int(c) not in names):
        return f"class {parts[0]} is not among the names' numbers {sorted(names or [])}"
    if not all(map(math.isfinite, coords)) or min(coords) < -0.01 or max(coords) > 1.0:
        return f"coordinates must be normalised to 0..1, got {' '.join(parts[1:])}"
    if len(coords) > 4:
        xs, ys = coords[0::2], coords[1::2]
        coords = [(min(xs) + max(xs)) / 2, (min(ys) + max(ys)) / 2, max(xs) - min(xs), max(ys) - min(ys)]
    if not item.width:  # an unreadable photo: whoever decodes it reports it
        return None
    # within 1% of the edges, as Ultralytics allows: onto them
    box = _snap(yolo_pixels(coords, item.width, item.height), item, slack=math.inf)
    problem = box_problem(box, (item.width, item.height))
    if problem:
        return problem
    item.boxes.append(Box(*box, label=names[int(c)] if names is not None else str(int(c))))
    return None
