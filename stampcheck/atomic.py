"""Writes that never leave a half-written file: write to a temporary name beside, then rename."""

from __future__ import annotations

import json
import math
import os
import re
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_path(path: Path):
    """Yield a temporary path in the same folder; it replaces ``path`` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # A hidden name unique to this process; cheaper than mkstemp, and remove_own_partials finds it.
    tmp = str(path.parent / f".{path.name}.{os.getpid()}.part")
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def _alive(pid: int) -> bool:
    if os.name == "nt":  # there os.kill(pid, 0) would end the process
        return _alive_windows(pid)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (OSError, OverflowError):  # another user's process, or no pid at all: leave its files be
        return True
    return True


def _alive_windows(pid: int) -> bool:
    import ctypes
    from ctypes import wintypes

    if not 0 <= pid <= 0xFFFFFFFF:  # no Windows pid: leave its files be
        return True
    kernel32 = ctypes.WinDLL("kernel32", use_last_error=True)
    kernel32.OpenProcess.argtypes = (wintypes.DWORD, wintypes.BOOL, wintypes.DWORD)
    kernel32.OpenProcess.restype = wintypes.HANDLE
    kernel32.GetExitCodeProcess.argtypes = (wintypes.HANDLE, ctypes.POINTER(wintypes.DWORD))
    kernel32.CloseHandle.argtypes = (wintypes.HANDLE,)
    query_limited_information, still_active, invalid_parameter = 0x1000, 259, 87
    handle = kernel32.OpenProcess(query_limited_information, False, pid)
    if not handle:  # no such process; any other refusal (another user's) leaves its files be
        return ctypes.get_last_error() != invalid_parameter
    try:
        code = wintypes.DWORD()
        return not kernel32.GetExitCodeProcess(handle, ctypes.byref(code)) or code.value == still_active
    finally:
        kernel32.CloseHandle(handle)


def remove_own_partials(folder: Path, names: str) -> list[Path]:
    """Remove what runs killed mid-write (kill -9 skips atomic_path's cleanup) left in ``folder``:
    only :func:`atomic_path`'s temporary names of files matching the regex ``names``, and only when
    the process that wrote them is gone. A user's own ``.something.part`` is never touched."""
    own = re.compile(rf"\.(?:{names})\.(\d+)\.part")
    removed = []
    for p in Path(folder).glob(".*.part"):
        m = own.fullmatch(p.name)
        if m and not _alive(int(m[1])) and p.is_file() and not p.is_symlink():
            p.unlink()
            removed.append(p)
    return removed


def _finite(obj):
    """NaN and infinities as null: JSON has no such numbers, and strict readers refuse them."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


def json_text(obj, indent: int | None = 2) -> str:
    return json.dumps(_finite(obj), indent=indent, allow_nan=False)


def atomic_write_json(path: Path, obj, indent: int | None = 2) -> None:
    atomic_write_text(path, json_text(obj, indent))
