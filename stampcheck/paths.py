"""Where a command may write: never inside what it reads, never over what it did not write.

Every command that reads folders and writes an output folder calls :func:`refuse_overlap` before
it touches anything: an output inside an input folder would feed the tool's own outputs back in
as inputs on the next run (a preview full of stamps labelled "no stamp", a report counted as
photos), and an input inside the output folder is the user's data under a folder the tool owns.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path


class OverlapError(ValueError):
    """Input and output folders overlap; the message names both."""


def under(real: str, top: str) -> bool:
    """The real path ``real`` is the real path ``top`` or inside it (strings, no system call: cheap
    for every folder of a walk)."""
    return real == top or real.startswith(top.rstrip(os.sep) + os.sep)


def refuse_overlap(out: Path, inputs: list[Path], out_name: str = "--out") -> None:
    """Raise OverlapError when ``out`` is one of ``inputs``, inside one, or holds one."""
    o = str(Path(out).expanduser().resolve())
    for raw in inputs:
        if raw is None:
            continue
        i = str(Path(raw).expanduser().resolve())
        if under(o, i) or under(i, o):
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
        made_by = _marker_lines(marker)[0] if marker.is_file() and not marker.is_symlink() else None
        if made_by != command and any(out.iterdir()):
            raise OverlapError(f"{out_name} {out} holds files that `stampcheck {command}` did not write; "
                               "give a new or empty folder")
        if made_by is not None:  # said now, not after the model has loaded; OutputLock holds it later
            OutputLock(out, None, out_name).close()


def claim_output(out: Path, command: str, out_name: str = "--out") -> Path:
    """:func:`check_output`, then the folder made and marked as ``command``'s."""
    check_output(out, command, out_name)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if not (out / MARKER).is_file():  # an existing marker may name the run writing here now (OutputLock)
        (out / MARKER).write_text(command + "\n")
    return out


def _marker_lines(marker: Path) -> list[str]:
    """The marker's lines: the command that made the folder, then the pid of the run holding it."""
    return [line.strip() for line in marker.read_text(errors="replace").splitlines()] or [""]


class OutputLock:
    """``out`` (claimed by :func:`claim_output`) held by this process alone, until :meth:`close` or
    its end: two runs writing one report folder at once would interleave their records. The lock
    is on the marker's open file, so the system drops it when the process dies, kill -9 included.
    A context manager."""

    def __init__(self, out: Path, command: str | None, out_name: str = "--out"):
        """``command`` None: only try whether another run holds it (nothing written)."""
        self.out, marker = Path(out), Path(out) / MARKER
        self.fd = os.open(marker, (os.O_RDONLY if command is None else os.O_RDWR) | os.O_NOFOLLOW | os.O_CLOEXEC)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self.fd)
            lines = _marker_lines(marker)
            pid = f" (pid {lines[1][4:]})" if len(lines) > 1 and lines[1].startswith("pid ") else ""
            raise OverlapError(f"another stampcheck run{pid} is writing to {out_name} {out}; wait for it to "
                               "end, or give another folder") from None
        if command is None:
            return
        # through the locked file itself (a new file would not be the one locked), its first line,
        # the command check_output reads, the same at every moment
        data = f"{command}\npid {os.getpid()}\n".encode()
        os.pwrite(self.fd, data, 0)
        os.ftruncate(self.fd, len(data))

    def removed(self) -> bool:
        """Whether the folder (or its marker) was removed, or moved away, since it was locked."""
        return os.fstat(self.fd).st_nlink == 0 or not os.path.isdir(self.out)

    def close(self) -> None:
        os.close(self.fd)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def refuse_links(*folders: Path) -> None:
    """A tool's own sub-folder (images/, yolo/, annotated/) that is a link would lead its writes
    and removals into the folder it points to."""
    for f in folders:
        if Path(f).is_symlink():
            raise OverlapError(f"{f} is a symbolic link; stampcheck writes only into folders it made")
