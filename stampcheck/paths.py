"""Where a command may write: never inside what it reads, never over what it did not write.

Every command that reads folders and writes an output folder calls :func:`refuse_overlap` before
it touches anything: an output inside an input folder would feed the tool's own outputs back in
as inputs on the next run (a preview full of stamps labelled "no stamp", a report counted as
photos), and an input inside the output folder is the user's data under a folder the tool owns.

One run at a time writes a folder: every command that writes one holds an :class:`OutputLock` on
its ``.stampcheck`` marker from its first change there to its end (:func:`lock_output`).
"""

from __future__ import annotations

import os
import re
import stat
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


MARKER = ".stampcheck"  # in every folder a command writes: which command made it, and the lock
# Windows locks byte ranges and keeps others from reading them: the byte locked lies past any
# content (a lock past the end of a file is allowed), so the marker stays readable to all.
_WINDOWS_LOCK_AT = 1 << 20


def holds_files(folder: Path) -> bool:
    """Whether ``folder`` holds anything but the marker: a run killed right after it took its lock
    leaves a folder that is as good as empty."""
    return any(p.name != MARKER for p in Path(folder).iterdir())


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
    refuse_held(out, out_name)


def refuse_held(out: Path, out_name: str = "--out") -> None:
    """OverlapError naming the pid when another run holds ``out``; nothing written. Said at a
    command's start, before minutes of reading its inputs; the lock it takes later holds it."""
    marker = Path(out) / MARKER
    if marker.is_file() and not marker.is_symlink():
        OutputLock(out, None, out_name).close()


def claim_output(out: Path, command: str, out_name: str = "--out") -> Path:
    """:func:`check_output`, then the folder made and marked as ``command``'s."""
    check_output(out, command, out_name)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if not (out / MARKER).is_file():  # an existing marker may name the run writing here now (OutputLock)
        (out / MARKER).write_bytes(f"{command}\n".encode())
    return out


def lock_output(out: Path, command: str, out_name: str = "--out") -> "OutputLock":
    """``out`` made if new and held by this run (an :class:`OutputLock`): called once every input
    is checked, before the first change there. The marker is made when missing; an existing one
    keeps the command that made the folder (what qa and evaluate check)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    try:
        os.close(os.open(out / MARKER, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW | _BINARY, 0o644))
    except FileExistsError:
        pass
    return OutputLock(out, command, out_name)


def _marker_lines(marker: Path) -> list[str]:
    """The marker's lines: the command that made the folder, then the pid of the run holding it."""
    try:
        with open(marker, "rb") as f:
            return _lines(f.read(_MARKER_BYTES))
    except OSError:  # unreadable, or gone: it names nothing
        return [""]


_MARKER_BYTES = 256  # the most of a marker ever read: ours are a few bytes, anyone's file may be huge


def _lines(data: bytes) -> list[str]:
    return [line.strip() for line in data.decode(errors="replace").splitlines()] or [""]


# what a marker holds: nothing yet (made, not yet written), or a command and the pid holding it
_OURS = re.compile(rb"(?:[a-z][a-z -]{0,40}\r?\n(?:pid \d{1,10}\r?\n)?)?")  # \r: a line end a Windows tool wrote


_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)  # POSIX only; Windows has no such flag
_BINARY = getattr(os, "O_BINARY", 0)      # Windows only: no newline translation


def _try_lock(fd: int) -> bool:
    """Take the lock on ``fd`` without waiting; False when another open file holds it."""
    if os.name == "nt":
        import msvcrt

        os.lseek(fd, _WINDOWS_LOCK_AT, os.SEEK_SET)
        try:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
        except OSError:
            return False
        return True
    import fcntl

    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def _same_file(fd: int, path: Path) -> bool:
    try:
        a, b = os.fstat(fd), os.stat(path, follow_symlinks=False)
    except OSError:
        return False
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


def _unlock_and_close(fd: int) -> None:
    if os.name == "nt":  # closing would drop it too, but Windows says "eventually"
        import msvcrt

        os.lseek(fd, _WINDOWS_LOCK_AT, os.SEEK_SET)
        try:
            msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)
        except OSError:
            pass
    else:  # a forked child (a data-loader worker) shares the open file: closing ours alone keeps it held
        import fcntl

        fcntl.flock(fd, fcntl.LOCK_UN)
    os.close(fd)


class OutputLock:
    """``out`` (claimed by :func:`claim_output` or :func:`lock_output`) held by this process alone,
    until :meth:`close` or its end: two runs writing one folder at once would mix their files
    (a model of one run with the config of another, one dataset's labels on another's images). The
    lock is on the marker's open file (flock on POSIX, msvcrt.locking on Windows), so the system
    drops it when the process dies, kill -9 included. A context manager."""

    def __init__(self, out: Path, command: str | None, out_name: str = "--out"):
        """``command`` None: only try whether another run holds it (nothing written)."""
        self.out, marker = Path(out), Path(out) / MARKER
        flags = (os.O_RDONLY if command is None else os.O_RDWR) | _NOFOLLOW | getattr(os, "O_CLOEXEC", 0) | _BINARY
        try:
            self.fd = os.open(marker, flags)
        except OSError as e:  # a link (ELOOP) or something else put in the marker's place
            raise OverlapError(f"{out_name} {out}: its {MARKER} cannot be opened ({e.strerror or e}); "
                               "give another folder") from None
        if not stat.S_ISREG(os.fstat(self.fd).st_mode):
            os.close(self.fd)
            raise OverlapError(f"{out_name} {out}: its {MARKER} is not a file; give another folder")
        # a marker removed or replaced between the open and the lock (its maker's run ended with
        # nothing to keep) is no lock on the folder any more: another run has it, or will
        if not _try_lock(self.fd) or not _same_file(self.fd, marker):
            os.lseek(self.fd, 0, os.SEEK_SET)
            lines = _lines(os.read(self.fd, _MARKER_BYTES))
            _unlock_and_close(self.fd)
            holder = lines[1].removeprefix("pid ") if len(lines) > 1 else ""
            pid = f" (pid {holder})" if holder.isascii() and holder.isdigit() else ""
            raise OverlapError(f"another stampcheck run{pid} is writing to {out_name} {out}; wait for it to "
                               "end, or give another folder")
        if command is None:
            return
        os.lseek(self.fd, 0, os.SEEK_SET)
        held = os.read(self.fd, _MARKER_BYTES)
        if not _OURS.fullmatch(held):  # a file of someone else's by that name: never written over
            _unlock_and_close(self.fd)
            raise OverlapError(f"{out_name} {out} holds a {MARKER} that stampcheck did not write; it is left "
                               "as it is: give another folder")
        # through the locked file itself (a new file would not be the one locked); its first line,
        # the command check_output reads, the same at every moment
        data = f"{_lines(held)[0] or command}\npid {os.getpid()}\n".encode()
        os.lseek(self.fd, 0, os.SEEK_SET)
        os.write(self.fd, data)
        os.ftruncate(self.fd, len(data))

    def removed(self) -> bool:
        """Whether the folder (or its marker) was removed, or moved away, since it was locked."""
        return os.fstat(self.fd).st_nlink == 0 or not os.path.isdir(self.out)

    def close(self) -> None:
        if self.fd is not None:
            _unlock_and_close(self.fd)
            self.fd = None

    def remove(self) -> None:
        """Remove the marker and let go, for a run that leaves the folder as it found it. On POSIX
        it goes while held: a run that opened it meanwhile finds it gone once it has the lock
        (:func:`_same_file`) and is refused."""
        marker = self.out / MARKER
        if os.name == "nt":  # Windows removes no file that is open, this one included
            self.close()
            try:
                marker.unlink()
            except OSError:  # another run has it open now: it is that run's
                pass
            return
        if self.fd is not None and _same_file(self.fd, marker):
            marker.unlink()
        self.close()

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
