"""COCO detection JSON as CVAT, Label Studio and Roboflow export it (see stampcheck.formats)."""

from __future__ import annotations

import json
from pathlib import Path

from stampcheck.dataset import IMAGES_DIR, Box, DatasetError, ImageLabels, box_problem, upright_size
from stampcheck.labelled import (LabelledSet, as_written, find_files, raise_problems, same_file_problems, snap,
                                 read_label_text, unlabelled, why_not_found)


def read_coco(path: Path, images: Path | None = None) -> LabelledSet:
    try:
        data = json.loads(read_label_text(path, "coco"))
    except DatasetError:
        raise
    except (OSError, ValueError) as e:
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
        example = next(n for n in names if n in found and found[n] != as_written(n))
        notes.append(f"{by_base} of {len(names)} file names are not in {root} as written and were found there by "
                     f"their base name (such as {example} -> {found[example]})")
    problems, items = [], {}
    for im in entries.values():
        name = str(im["file_name"])
        file = found.get(name, as_written(name) or name)
        # read from the header; None for what is no regular file (never opened) or not found
        size = upright_size(root / file) if name in found else None
        if name not in found:
            problems.append(f"image {name[:300]}: {why_not_found(root, name)}")
        elif size and im.get("width") and im.get("height") and (im["width"], im["height"]) != size:
            problems.append(f"image {name}: the JSON says {im.get('width')}x{im.get('height')}, the photo is "
                            f"{size[0]}x{size[1]} upright: labelled turned or scaled")
        items[im["id"]] = ImageLabels(file, "", "", width=size[0] if size else 0, height=size[1] if size else 0)
    problems += same_file_problems([(f"image {im['file_name']} (id {im['id']})", found[str(im["file_name"])])
                                    for im in entries.values() if str(im["file_name"]) in found])
    for k, ann in enumerate(data.get("annotations", [])):
        problem = _coco_box(ann, entries, cats, items)
        if problem:
            problems.append(f"annotation {ann.get('id', k) if isinstance(ann, dict) else k}: {problem}")
    missing = not images and any("not found in" in p for p in problems)
    raise_problems(path, problems, " (give --images, the folder its file names are relative to)" if missing else "")
    labelled = list(items.values())
    if not labelled:
        raise DatasetError(f"{path}: lists no images")
    return LabelledSet(root, labelled, "COCO", unlabelled(root, labelled), notes)


def _coco_root(path: Path, images: Path | None, names: list[str]) -> tuple[Path, dict[str, str], int]:
    """The folder the file names are relative to (``images``, else the first of the JSON's folder,
    its images/ and ../images/ that holds the most of them), each name's file in it, and how many
    were found by base name."""
    if images is not None:
        if not Path(images).is_dir():
            raise DatasetError(f"--images {images} is not a folder")
        return (Path(images), *find_files(Path(images), names))
    here = Path(path).parent
    tried = [(c, *find_files(c, names)) for c in (here, here / IMAGES_DIR, here.parent / IMAGES_DIR) if c.is_dir()]
    return max(tried, key=lambda t: len(t[1]), default=(here, {}, 0))  # first of the best


def _coco_box(ann, entries: dict, cats: dict, items: dict) -> str | None:
    if not isinstance(ann, dict):
        return "not an object"
    if not all(isinstance(ann.get(k), (int, str)) for k in ("image_id", "category_id")):
        return f"image_id and category_id must be numbers, got {ann.get('image_id')!r} and {ann.get('category_id')!r}"[:200]
    if ann.get("image_id") not in entries:
        return f"image_id {ann.get('image_id')!r} is not among the images"
    if ann.get("category_id") not in cats:
        return f"category_id {ann.get('category_id')!r} is not among the categories"
    bbox = ann.get("bbox")
    if not (isinstance(bbox, list) and len(bbox) == 4 and all(isinstance(v, (int, float)) for v in bbox)):
        return f"bbox must be [x, y, width, height], got {bbox!r}"
    item = items[ann["image_id"]]
    x, y, w, h = map(float, bbox)
    box = snap((x, y, x + w, y + h), item)
    problem = box_problem(box, (item.width, item.height) if item.width else None)
    if problem:
        return f"{item.file}: {problem}"
    item.boxes.append(Box(*box, label=cats[ann["category_id"]]))
    return None
