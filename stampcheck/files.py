"""Opening a file someone named: only a regular file is ever read.

A named pipe (FIFO) put where a photo, a label file or a weights file is expected would make its
reader wait for a writer forever, a device may never end. So every path a user gives, and every
file found through one, is opened here: checked with stat before it is opened, opened without
blocking, and checked again on the open file (it may have been swapped in between).
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

_NONBLOCK = getattr(os, "O_NONBLOCK", 0)  # none on Windows, which has no named pipes in the file system
_FLAGS = os.O_RDONLY | _NONBLOCK | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)


class NotAFile(OSError):
    """A path that exists but is no regular file; ``kind`` says what it is."""

    def __init__(self, path, kind: str):
        super().__init__(f"{path} is not a regular file ({kind})")
        self.path, self.kind = os.fspath(path), kind  # not OSError's filename: its str() would drop the words


def kind_of(mode: int) -> str | None:
    """What a file of ``mode`` is when it is not a regular file, or None for a regular file."""
    if stat.S_ISREG(mode):
        return None
    if stat.S_ISDIR(mode):
        return "a folder"
    if stat.S_ISFIFO(mode):
        return "a named pipe"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "a device"


def open_regular(path: str | Path, mode: str = "rb", **text):
    """``path`` opened for reading (binary, or text with ``mode="r"`` and open's ``encoding``,
    ``errors``, ``newline``); NotAFile, an OSError, when it is not a regular file."""
    kind = kind_of(os.stat(path).st_mode)  # a device is refused before any open
    if kind:
        raise NotAFile(path, kind)
    fd = os.open(path, _FLAGS)
    try:
        kind = kind_of(os.fstat(fd).st_mode)
        if kind:
            raise NotAFile(path, kind)
        if _NONBLOCK:
            os.set_blocking(fd, True)  # what a file object expects; for a regular file it changes nothing
        return os.fdopen(fd, mode, **text)
    except BaseException:
        os.close(fd)
        raise


def read_bytes(path: str | Path) -> bytes:
    with open_regular(path) as f:
        return f.read()


def read_text(path: str | Path, encoding: str | None = None, errors: str | None = None) -> str:
    """As Path.read_text, universal newlines included; NotAFile for anything but a regular file."""
    with open_regular(path, "r", encoding=encoding, errors=errors) as f:
        return f.read()
