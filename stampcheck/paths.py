"""Where a command may write: never inside what it reads, never over what it did not write.

Every command that reads folders and writes an output folder calls :func:`refuse_overlap` before
it touches anything: an output inside an input folder would feed the tool's own outputs back in
as inputs on the next run (a preview full of stamps labelled "no stamp", a report counted as
photos), and an input inside the output folder is the user's data under a folder the tool owns.
"""

from __future__ import annotations

from pathlib import Path


class OverlapError(ValueError):
    """Input and output folders overlap; the message names both."""


def _inside(child: Path, parent: Path) -> bool:
    return child == parent or parent in child.parents


def refuse_overlap(out: Path, inputs: list[Path], out_name: str = "--out") -> None:
    """Raise OverlapError when ``out`` is one of ``inputs``, inside one, or holds one."""
    o = Path(out).expanduser().resolve()
    for raw in inputs:
        if raw is None:
            continue
        i = Path(raw).expanduser().resolve()
        if _inside(o, i) or _inside(i, o):
            raise OverlapError(f"{out_name} {out} and the input {raw} overlap: an output folder must be "
                               "outside every input folder and hold none of them; choose another folder")
