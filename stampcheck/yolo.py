"""YOLO labelled sets: the Ultralytics layout (data.yaml, or images/ and labels/ as Label Studio
exports them) and CVAT's YOLO 1.1 (Darknet's obj.data); see stampcheck.formats."""

from __future__ import annotations

import math
import os
from pathlib import Path

from stampcheck.dataset import IMAGES_DIR, Box, DatasetError, ImageLabels, box_problem, upright_size, yolo_pixels
from stampcheck.files import read_text
from stampcheck.images import find_images
from stampcheck.labelled import LabelledSet, raise_problems, read_label_text, snap

YOLO_SPLIT_NAMES = {"train": "train", "val": "valid", "test": "test"}


def data_yaml(folder: Path) -> Path | None:
    return next((folder / n for n in ("data.yaml", "data.yml") if (folder / n).is_file()), None)


def read_yolo(path: Path) -> LabelledSet:
    path = Path(path)
    yaml_file = path if path.is_file() else data_yaml(path)
    if yaml_file is None:  # Label Studio's export: images/, labels/, classes.txt
        root = path
        names_file = path / "classes.txt"
        names = dict(enumerate(n.strip() for n in read_label_text(names_file, "list").splitlines() if n.strip())) \
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
        for lineno, line in enumerate(read_label_text(label, "label", errors="replace").splitlines(), start=1):
            problem = _yolo_line(line, item, names)
            if problem:
                problems.append(f"{os.path.relpath(label, root)} line {lineno}: {problem}")
    raise_problems(source, problems)
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
        keys = dict(line.split("=", 1) for line in read_label_text(obj_data, "list").splitlines() if "=" in line)
    except (OSError, UnicodeDecodeError) as e:
        raise DatasetError(f"{obj_data}: not readable ({e})") from e
    keys = {k.strip(): v.strip() for k, v in keys.items()}

    def inside(entry: str) -> Path:  # "data/obj.names" is the export's folder's obj.names
        entry = entry.replace("\\", "/")
        return root / entry if os.path.exists(root / entry) or not entry.startswith("data/") else root / entry[5:]

    names_file = inside(keys.get("names", "obj.names"))
    if not os.path.isfile(names_file):
        raise DatasetError(f"{obj_data}: its names file {names_file} is " + ("not a regular file" if os.path.lexists(names_file)
                                                                              else "not there"))
    names = dict(enumerate(n.strip() for n in read_label_text(names_file, "list").splitlines() if n.strip()))
    images: dict[str, str] = {}
    for key, split in DARKNET_LISTS.items():
        if key in keys:
            listing = inside(keys[key])
            if not os.path.isfile(listing):
                raise DatasetError(f"{obj_data}: its {key} list {listing} is " + ("not a regular file" if os.path.lexists(listing)
                                                                                 else "not there"))
            for line in read_label_text(listing, "list").splitlines():
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
        lines = [line.strip() for line in read_label_text(p, "list").splitlines() if line.strip()]
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
    if not math.isfinite(c) or c != int(c) or c < 0 or (names is not None and int(c) not in names):
        return f"class {parts[0]} is not among the names' numbers {sorted(names or [])}"
    if not all(map(math.isfinite, coords)) or min(coords) < -0.01 or max(coords) > 1.0:
        return f"coordinates must be normalised to 0..1, got {' '.join(parts[1:])}"
    if len(coords) > 4:
        xs, ys = coords[0::2], coords[1::2]
        coords = [(min(xs) + max(xs)) / 2, (min(ys) + max(ys)) / 2, max(xs) - min(xs), max(ys) - min(ys)]
    if not item.width:  # an unreadable photo: whoever decodes it reports it
        return None
    # within 1% of the edges, as Ultralytics allows: onto them
    box = snap(yolo_pixels(coords, item.width, item.height), item, slack=math.inf)
    problem = box_problem(box, (item.width, item.height))
    if problem:
        return problem
    item.boxes.append(Box(*box, label=names[int(c)] if names is not None else str(int(c))))
    return None
