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


class TextUnreadable(ValueError):
    """A user's text file that cannot be taken; the message is the reason, for the caller to put after
    the file's name in its own words."""


def read_user_text(path: str | Path, limit: int | None = None, what: str = "file", encoding: str = "utf-8-sig",
                   errors: str | None = None) -> str:
    """A text file a user gave (a list, a labelling tool's file): TextUnreadable saying why not when it
    is missing, not a regular file (a named pipe is never opened), over ``limit`` bytes, unreadable or
    not UTF-8 (a byte order mark is dropped)."""
    try:
        size = os.stat(path).st_size
        if limit is not None and size > limit:
            raise TextUnreadable(f"{size} bytes, more than a {what} holds ({limit} at most)")
        return read_text(path, encoding=encoding, errors=errors)
    except FileNotFoundError:
        raise TextUnreadable("no such file") from None
    except NotAFile as e:
        raise TextUnreadable(f"not a regular file ({e.kind})") from None
    except UnicodeDecodeError as e:
        raise TextUnreadable(f"not UTF-8 text ({e.reason} at byte {e.start}); save it as UTF-8") from None
    except OSError as e:
        raise TextUnreadable(f"cannot be read ({e.strerror or e})") from None
