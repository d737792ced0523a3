"""Pascal VOC, as CVAT ("PASCAL VOC 1.1") and Label Studio ("Pascal VOC XML") export it: one XML per
image in ``Annotations/``, the images in ``JPEGImages/`` (CVAT) or ``images/`` (Label Studio), splits
in ``ImageSets/Main/*.txt`` when there. The XML comes from outside, so it is read by defusedxml
(no entity expansion, no external entities). Boxes are taken as both tools write them: pixel edges
``xmin ymin xmax ymax``, the contract's ``x0 y0 x1 y1``.
"""

from __future__ import annotations

from pathlib import Path

from stampcheck.dataset import Box, DatasetError, ImageLabels, box_problem, upright_size
from stampcheck.files import NotAFile, read_bytes
from stampcheck.labelled import (LabelledSet, find_files, raise_problems, read_label_text, same_file_problems, snap,
                                 unlabelled, why_not_found)

VOC_ANNOTATIONS = "Annotations"
IMAGE_FOLDERS = ("JPEGImages", "images")
SPLITS = {"train": "train", "val": "valid", "test": "test"}  # ImageSets/Main/NAME.txt; others ("default"): no split
MAX_XML_BYTES = 5_000_000


def read_voc(folder: Path) -> LabelledSet:
    from defusedxml import ElementTree
    from defusedxml.common import DefusedXmlException

    xmls = sorted((folder / VOC_ANNOTATIONS).glob("*.xml"))
    if not xmls:
        raise DatasetError(f"{folder / VOC_ANNOTATIONS}: no .xml annotations")
    root = next((folder / n for n in IMAGE_FOLDERS if (folder / n).is_dir()), folder)
    split_of = _splits(folder)
    problems, entries = [], []
    for xml in xmls:
        source = xml.relative_to(folder)
        try:
            if xml.stat().st_size > MAX_XML_BYTES:
                raise ValueError(f"over {MAX_XML_BYTES} bytes")
            tree = ElementTree.fromstring(read_bytes(xml))  # bytes: the file's own encoding declaration holds
        except NotAFile as e:
            problems.append(f"{source}: not a regular file ({e.kind})")
            continue
        except (OSError, ValueError, SyntaxError, DefusedXmlException) as e:
            problems.append(f"{source}: not a readable VOC annotation ({type(e).__name__}: {e})"[:300])
            continue
        if tree.tag != "annotation":
            problems.append(f"{source}: not a VOC annotation (its root is <{tree.tag[:40]}>, not <annotation>)")
            continue
        name = (tree.findtext("filename") or "").strip() or xml.stem + ".jpg"
        entries.append((source, name, tree))
    found, by_base = find_files(root, [name for _, name, _ in entries])
    items = []
    problems += same_file_problems([(str(source), found[name]) for source, name, _ in entries if name in found])
    for source, name, tree in entries:
        if name not in found:
            problems.append(f"{source}: its image {name[:300]} is {why_not_found(root, name)}")
            continue
        size = upright_size(root / found[name])
        item = ImageLabels(found[name], split_of.get(Path(name).stem, ""), "",
                           width=size[0] if size else 0, height=size[1] if size else 0)
        said = [tree.findtext(f"size/{k}") for k in ("width", "height")]
        if size and all(v and v.strip().isdigit() and int(v) > 0 for v in said) and tuple(map(int, said)) != size:
            problems.append(f"{source}: says {said[0]}x{said[1]}, the photo is {size[0]}x{size[1]} upright: "
                            "labelled turned or scaled")
        for k, obj in enumerate(tree.iter("object"), start=1):
            problem = _object_box(obj, item)
            if problem:
                problems.append(f"{source} object {k}: {problem}")
        items.append(item)
    raise_problems(folder, problems)
    notes = [f"{by_base} of {len(entries)} images were found in {root} by their base name"] if by_base else []
    return LabelledSet(root, items, "Pascal VOC", unlabelled(root, items), notes)


def _object_box(obj, item: ImageLabels) -> str | None:
    label = (obj.findtext("name") or "").strip()
    box = obj.find("bndbox")
    try:
        values = [float(box.findtext(k)) for k in ("xmin", "ymin", "xmax", "ymax")]
    except (AttributeError, TypeError, ValueError):
        return "needs <bndbox> with numbers <xmin> <ymin> <xmax> <ymax>"
    snapped = snap(tuple(values), item)
    problem = box_problem(snapped, (item.width, item.height) if item.width else None)
    if problem:
        return problem
    item.boxes.append(Box(*snapped, label=label or "stamp"))
    return None


def _splits(folder: Path) -> dict[str, str]:
    """Image stem -> split, from ImageSets/Main/{train,val,test}.txt."""
    out = {}
    for name, split in SPLITS.items():
        listing = folder / "ImageSets" / "Main" / f"{name}.txt"
        if listing.is_file():
            for line in read_label_text(listing, "list").splitlines():
                if line.split():
                    out.setdefault(line.split()[0], split)
    return out
