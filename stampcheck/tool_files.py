"""The small text files labelling tools need to open a dataset as it is, beside its own layout (no
image is copied):

- Label Studio (``label-studio-converter import yolo -i DATASET``) wants ``classes.txt``, a flat
  ``images/`` and ``labels/`` with one YOLO ``.txt`` per image: ``DATASET/labels/`` and
  ``DATASET/classes.txt`` beside the dataset's own flat ``images/``;
- CVAT's "YOLO 1.1" (Darknet) wants ``obj.data``, ``obj.names`` and a list of images per subset, each
  label beside its image: in ``yolo/``, ``train.txt`` and ``valid.txt`` list ``data/images/<split>/``
  (CVAT's own ``data/`` prefix for the export's folder), and each label is also next to its image.
  CVAT's "Ultralytics YOLO Detection" format reads ``yolo/`` as Ultralytics does.
"""

from __future__ import annotations

import os
from pathlib import Path

from stampcheck.atomic import atomic_write_text
from stampcheck.dataset import SPLITS, YOLO_DIR, ImageLabels, yolo_lines, yolo_paths

CLASSES_TXT, LABELS_DIR = "classes.txt", "labels"
OBJ_DATA, OBJ_NAMES = "obj.data", "obj.names"


def tool_files(dataset: Path, name: str) -> list[Path]:
    """Every file :func:`write_tool_files` may have written for the image ``name``, in either split."""
    stem = Path(name).stem
    yolo = Path(dataset) / YOLO_DIR
    return [Path(dataset) / LABELS_DIR / f"{stem}.txt"] + [
        yolo / yolo_paths(ImageLabels(name, split, ""))[0].with_suffix(".txt") for split in SPLITS]


def tool_dataset_files(dataset: Path) -> list[Path]:
    yolo = Path(dataset) / YOLO_DIR
    return [Path(dataset) / CLASSES_TXT, yolo / OBJ_DATA, yolo / OBJ_NAMES, *(yolo / f"{s}.txt" for s in SPLITS)]


def write_tool_files(dataset: Path, items: list[ImageLabels], classes: list[str]) -> None:
    dataset, yolo = Path(dataset), Path(dataset) / YOLO_DIR
    (dataset / LABELS_DIR).mkdir(exist_ok=True)
    names = "".join(c + "\n" for c in classes)
    lists = {s: [] for s in SPLITS}
    for item in items:
        lines = yolo_lines(item, classes)
        atomic_write_text(dataset / LABELS_DIR / f"{Path(item.file).stem}.txt", lines)
        image = yolo_paths(item)[0]
        atomic_write_text(yolo / image.with_suffix(".txt"), lines)
        lists[item.split or "valid"].append(f"data/{image.as_posix()}\n")
    atomic_write_text(dataset / CLASSES_TXT, names)
    atomic_write_text(yolo / OBJ_NAMES, names)
    for split, lines in lists.items():
        atomic_write_text(yolo / f"{split}.txt", "".join(lines))
    atomic_write_text(yolo / OBJ_DATA, f"classes = {len(classes)}\n" + "".join(
        f"{s} = data/{s}.txt\n" for s in SPLITS) + f"names = data/{OBJ_NAMES}\nbackup = backup/\n")


def tool_folders(dataset: Path) -> list[Path]:
    return [Path(dataset) / LABELS_DIR]


def tool_files_problem(dataset: Path, written_by_us: bool) -> str | None:
    """Why the tool files cannot be written into ``dataset`` (None: they can), checked before
    anything there changes: a path that is not what they are (a ``labels`` file, a ``classes.txt``
    folder), or, in a dataset made before compose wrote them (``written_by_us`` False), a
    ``classes.txt`` or ``labels/`` of the user's, which would be replaced."""
    dataset = Path(dataset)
    for folder in tool_folders(dataset):
        if os.path.lexists(folder) and not folder.is_dir():
            return f"{folder} is not a folder (compose writes its labels there): move it, or choose another --out"
    for f in tool_dataset_files(dataset):
        if os.path.lexists(f) and not f.is_file():
            return f"{f} is not a regular file (compose writes it): move it, or choose another --out"
    if not written_by_us:
        own = [p for p in (dataset / CLASSES_TXT, dataset / LABELS_DIR) if os.path.lexists(p)]
        if own:
            return (f"{' and '.join(map(str, own))} in {dataset} were not written by compose (the dataset predates "
                    "them) and would be replaced: move them, or choose another --out")
    return None

