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


def inside(child: Path, parent: Path) -> bool:
    """``child`` is ``parent`` or under it (both resolved)."""
    return child == parent or parent in child.parents


def refuse_overlap(out: Path, inputs: list[Path], out_name: str = "--out") -> None:
    """Raise OverlapError when ``out`` is one of ``inputs``, inside one, or holds one."""
    o = Path(out).expanduser().resolve()
    for raw in inputs:
        if raw is None:
            continue
        i = Path(raw).expanduser().resolve()
        if inside(o, i) or inside(i, o):
            raise OverlapError(f"{out_name} {out} and the input {raw} overlap: an output folder must be "
                               "outside every input folder and hold none of them; choose another folder")


MARKER = ".stampcheck"  # in every report folder qa or evaluate made: which command made it


def check_output(out: Path, command: str, out_name: str = "--out") -> None:
    """``out`` may become the output folder of ``command``: new, empty, or one the same command
    made before (its marker); anything else is the user's and refused, so that no file there is
    replaced. Folders linked from elsewhere are refused too: writing through a link would write
    into the folder it points to."""
    out = Path(out)
    if out.is_symlink():
        raise OverlapError(f"{out_name} {out} is a symbolic link; give the folder itself")
    if out.exists():
        if not out.is_dir():
            raise OverlapError(f"{out_name} {out} is not a folder; give a folder")
        marker = out / MARKER
        made_by = marker.read_text().strip() if marker.is_file() and not marker.is_symlink() else None
        if made_by != command and any(out.iterdir()):
            raise OverlapError(f"{out_name} {out} holds files that `stampcheck {command}` did not write; "
                               "give a new or empty folder")


def claim_output(out: Path, command: str, out_name: str = "--out") -> Path:
    """:func:`check_output`, then the folder made and marked as ``command``'s."""
    check_output(out, command, out_name)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / MARKER).write_text(command + "\n")
    return out


def refuse_links(*folders: Path) -> None:
    """A tool's own sub-folder (images/, yolo/, annotated/) that is a link would lead its writes
    and removals into the folder it points to."""
    for f in folders:
        if Path(f).is_symlink():
            raise OverlapError(f"{f} is a symbolic link; stampcheck writes only into folders it made")
