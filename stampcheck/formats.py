"""Labelled sets as people have them, read into the dataset contract's items (for `evaluate`).

The kinds, told apart by what the path is:

- a folder with ``labels.csv``: the dataset contract (``images/`` + ``labels.csv``);
- a ``.json`` file, or a folder holding exactly one: COCO detection, as CVAT, Label Studio and
  Roboflow export it (stampcheck.coco). ``file_name`` is relative to ``images`` when given, else to
  the first of the JSON's folder, its ``images/`` and ``../images/`` that holds the most of the
  files; a name not there as written is found by its base name (stampcheck.labelled.find_files);
- a ``.yaml`` file, or a folder with ``data.yaml``, or a folder with ``images/`` and ``labels/``
  (Label Studio's YOLO export, names in ``classes.txt``): YOLO in the Ultralytics layout, each
  image's label found as Ultralytics finds it (the last ``/images/`` of its path swapped for
  ``/labels/``, the suffix for ``.txt``). An image without a label file has no stamp, as there;
- ``obj.data``, or a folder with one: CVAT's YOLO 1.1 (stampcheck.yolo);
- a folder with ``Annotations/`` (or that folder): Pascal VOC (stampcheck.voc).

Boxes become the contract's whole pixels of the upright photo (EXIF orientation applied, as
Ultralytics and the labelling tools show it), and are checked as labels.csv's are.
"""

from __future__ import annotations

from pathlib import Path

from stampcheck.coco import read_coco
from stampcheck.dataset import IMAGES_DIR, LABELS_CSV, DatasetError, read_labels
from stampcheck.labelled import LabelledSet, unlabelled
from stampcheck.voc import VOC_ANNOTATIONS, read_voc
from stampcheck.yolo import data_yaml, read_darknet, read_yolo


def read_labelled_set(path: Path, images: Path | None = None) -> LabelledSet:
    """Read ``path`` as whichever kind it is (see the module docstring); raise DatasetError naming
    every bad label, or saying which kinds were looked for."""
    path = Path(path)
    if not path.exists():
        raise DatasetError(f"{path} not found")
    # a folder: its one JSON, or that of its annotations/ (CVAT's "COCO 1.0" export, images in images/default/)
    coco = [path] if path.suffix.lower() == ".json" else (
        sorted(path.glob("*.json")) or sorted((path / "annotations").glob("*.json"))) if path.is_dir() else []
    if path.is_dir() and (path / LABELS_CSV).is_file():
        kind = "labels.csv"
    elif path.suffix.lower() in (".yaml", ".yml") or path.is_dir() and data_yaml(path):
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
        return read_voc(path.parent if path.name == VOC_ANNOTATIONS else path)
    items = read_labels(path)
    return LabelledSet(path / IMAGES_DIR, items, kind, unlabelled(path / IMAGES_DIR, items))
