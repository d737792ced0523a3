"""A labelled set as read from any format (stampcheck.formats), and what the readers share: naming
bad labels, snapping a tool's rounding onto the image's edge, finding the files a label names."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from stampcheck.dataset import DatasetError, ImageLabels
from stampcheck.files import TextUnreadable, read_user_text
from stampcheck.images import find_images

NAMED = 20  # problems named one per line; more are counted


@dataclass
class LabelledSet:
    root: Path                    # every item's file is relative to it
    items: list[ImageLabels]
    kind: str                     # "labels.csv", "COCO" or "YOLO"
    unlabelled: list[str] = field(default_factory=list)  # images beside the labelled ones that no label names
    notes: list[str] = field(default_factory=list)       # what a user should know about how it was read


def unlabelled(folder: Path, items: list[ImageLabels]) -> list[str]:
    listed = {os.path.normpath(folder / i.file) for i in items}
    return [os.path.relpath(f, folder) for f in find_images([folder]) if os.path.normpath(f) not in listed
            and not any(part.startswith(".") for part in f.relative_to(folder).parts)]


def raise_problems(source: Path, problems: list[str], hint: str = "") -> None:
    if problems:
        more = [f"... and {len(problems) - NAMED} more"] if len(problems) > NAMED else []
        raise DatasetError(f"{source}: {len(problems)} bad labels{hint}:", problems[:NAMED] + more)


def snap(box, item: ImageLabels, slack: float = 1.0) -> tuple:
    """Whole pixels; a corner less than ``slack`` pixels outside the image (a tool's rounding) moved
    onto its edge. Anything further out stays, for box_problem to name."""
    limits = (item.width, item.height) * 2 if item.width else (math.inf,) * 4
    out = []
    for v, lim in zip(box, limits):
        if math.isfinite(v):
            v = round(0 if -slack < v < 0 else lim if lim < v < lim + slack else v)
        out.append(v)
    return tuple(out)


def as_written(name: str) -> str | None:
    """A file name as a path inside the root: Windows separators read as "/"; None for one that
    climbs out of it or is absolute (Label Studio writes ../../media/upload/1/x.jpg)."""
    parts = PurePosixPath(name.replace("\\", "/")).parts
    if not parts or parts[0] == "/" or ".." in parts or ":" in parts[0]:
        return None
    return "/".join(parts)


def find_files(root: Path, names: list[str]) -> tuple[dict[str, str], int]:
    """Each name's file under ``root``, relative to it: as written, else the one image under it
    (at any depth: CVAT's images/default/) with the name's base name; and how many came by base name.
    A name that two images under ``root`` share, or that no path can hold, is not found."""
    found, by_base, index = {}, 0, None
    for name in names:
        written = as_written(name)
        if written and os.path.isfile(root / written):  # False, not a raise, for a name too long for a path
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


def why_not_found(root: Path, name: str) -> str:
    """Why ``name`` has no file under ``root``, in a few words."""
    written = as_written(name)
    if written is None:
        where = "an absolute path or one out of it"
    else:
        try:
            where = "not a regular file there" if os.path.lexists(root / written) else "not there as written"
        except (OSError, ValueError):
            where = "not a path there"
    base = PurePosixPath(name.replace("\\", "/")).name
    same = sum(f.name == base for f in find_images([root])) if len(base) < 256 else 0
    return f"not found in {root} ({where}; " + (f"{same} images there share its base name)" if same > 1
                                                else "no image there has its base name)")


def same_file_problems(claims: list[tuple[str, str]]) -> list[str]:
    """For (label, file) pairs: a problem per file that two labels claim (a photo scored twice,
    against different boxes, would move every figure)."""
    first, problems = {}, []
    for label, file in claims:
        if file in first:
            problems.append(f"{label} and {first[file]} are both {file}")
        else:
            first[file] = label
    return problems


# The most a labelling tool's text file may hold before it is refused unread: a label file is a few
# KB, a list of images a few MB, a COCO JSON of 100,000 photos some 100 MB. A file read whole costs
# several times its size in memory.
TEXT_LIMITS = {"label": 10 << 20, "list": 200 << 20, "coco": 1 << 30}


def read_label_text(path: Path, kind: str, encoding: str = "utf-8-sig", errors: str | None = None) -> str:
    """A labelling tool's text file, or a DatasetError naming it: larger than ``TEXT_LIMITS[kind]``,
    not a regular file (a named pipe is never opened), unreadable, or not UTF-8."""
    try:
        return read_user_text(path, TEXT_LIMITS[kind], f"{kind} file of a labelled set", encoding, errors)
    except TextUnreadable as e:
        raise DatasetError(f"{path}: {e}") from None
