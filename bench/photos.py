"""The shared real product photos, split once and for all: about 200 kept out of pretraining and
composing entirely (the real negatives every benchmark flags against), the rest for pretraining
backgrounds and for composing test sets. The round things of ``round-things.txt`` (caps seen from
above, round logos and seals, chosen by looking at them: the look-alikes bench.field counts flags
on) are on neither side: :func:`round_things` lists them.

    python -m bench.photos --link data/bench/pretrain-photos   # a folder of links to the rest

The split is by the sha256 of each photo's relative path, so it never depends on the order of a
folder listing and survives photos being added (a new photo lands on one side, the others stay).
"""

from __future__ import annotations

import argparse
import hashlib
import os
from pathlib import Path

from stampcheck.images import find_images

PHOTOS = Path(__file__).resolve().parents[2] / "shared" / "data" / "product-photos"
KEPT_OUT = 200
ROUND_THINGS = Path(__file__).resolve().parent / "round-things.txt"


def round_things(root: Path = PHOTOS) -> list[Path]:
    """The round-things photos of ``round-things.txt`` (paths relative to ``root``; # starts a comment)."""
    lines = (line.split("#", 1)[0].strip() for line in ROUND_THINGS.read_text(encoding="utf-8").splitlines())
    return sorted(root / line for line in lines if line)


def split_photos(root: Path = PHOTOS, kept_out: int = KEPT_OUT) -> tuple[list[Path], list[Path]]:
    """(photos for pretraining and composing, ``kept_out`` photos kept out); the round things are in neither."""
    held = set(round_things(root))
    files = [f for f in find_images([root]) if f not in held]
    order = sorted(files, key=lambda f: hashlib.sha256(f.relative_to(root).as_posix().encode()).hexdigest())
    return sorted(order[kept_out:]), sorted(order[:kept_out])


def link_folder(files: list[Path], root: Path, folder: Path) -> Path:
    """A folder of symbolic links to ``files``, keeping their sub-folders (nothing copied)."""
    for f in files:
        link = folder / f.relative_to(root)
        link.parent.mkdir(parents=True, exist_ok=True)
        if not link.is_symlink():
            os.symlink(f, link)
    return folder


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--link", type=Path, required=True, help="folder of links to the photos not kept out")
    ap.add_argument("--kept-out", type=Path, help="also a folder of links to the kept-out photos")
    args = ap.parse_args()
    use, kept = split_photos()
    print(f"{len(use)} photos for pretraining and composing -> {link_folder(use, PHOTOS, args.link)}")
    if args.kept_out:
        print(f"{len(kept)} kept out -> {link_folder(kept, PHOTOS, args.kept_out)}")


if __name__ == "__main__":
    main()
