"""What a watched folder brings, for `qa --watch`: the names that appear in it (Scanner), each photo
until it is completely written (Pending), the command run on a missing stamp (Gate), and the signals
that stop the watch (Stop).
"""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import subprocess
import time
from collections import deque
from dataclasses import dataclass

from stampcheck.qa.batch import UsageError, entry_kind
from stampcheck.qa.config import GATE_JOBS
from stampcheck.paths import under
from stampcheck.progress import shown


# A folder's mtime tells when a name was added or removed, so an unchanged folder is not listed
# again; but its clock may be coarse (FAT: 2 s) or late (network shares): on a file system with
# whole-second times, folders changed in the last RECENT seconds are listed at every poll, and
# every folder is listed each RESCAN seconds.
RECENT, RESCAN = 3.0, 5.0


class Scanner:
    """The visible names under ``root`` (hidden names skipped, as batch qa skips them; a writer's
    temporary names are hidden), relative to it, each reported once when first seen: files, and
    what is neither file nor folder (a pipe, a broken link), which becomes an unreadable row. A
    folder that is the real folder ``out`` or inside it (a link) is never entered: the report's
    own files would come back as photos, for ever."""

    def __init__(self, root: str, warn, out: str):
        self.root, self.warn, self.out, self.real = root, warn, os.path.realpath(out), os.path.realpath(root)
        # folder -> (mtime_ns, names, [(sub-folder, its real path, or None where it is a link)])
        self.listed: dict[str, tuple[int, set[str], list[tuple[str, str | None]]]] = {}
        self.unlistable: set[str] = set()
        self.into_out: set[str] = set()

    def new_files(self, full: bool) -> list[str]:
        found, seen, now = [], set(), time.time()
        stack: list[tuple[str, str | None]] = [("", self.real)]
        while stack:
            rel, real = stack.pop()
            folder = os.path.join(self.root, rel)
            real = real or os.path.realpath(folder)
            if under(real, self.out):  # a sub-folder (refuse_overlap keeps the root clear)
                if rel not in self.into_out:
                    self.warn(f"{shown(folder)} leads into --out {shown(self.out)}: not watched (a folder "
                              "link; the report's own files are no photos)")
                    self.into_out.add(rel)
                continue
            try:
                st = os.stat(folder)
                if (st.st_dev, st.st_ino) in seen:  # a folder link loop, or one folder linked twice
                    continue
                seen.add((st.st_dev, st.st_ino))
                known = self.listed.get(rel)
                coarse = st.st_mtime_ns % 1_000_000_000 == 0
                if known and not full and known[0] == st.st_mtime_ns and not (coarse and now - st.st_mtime < RECENT):
                    stack += known[2]
                    continue
                with os.scandir(folder) as it:
                    entries = [(e.name, entry_kind(e), e.is_symlink()) for e in it if not e.name.startswith(".")]
            except OSError as e:
                if rel not in self.unlistable:  # said once per outage: the folder may come back (a mount)
                    self.warn(f"cannot list {shown(folder)}: {e.strerror or e}; trying again")
                    self.unlistable.add(rel)
                continue
            self.unlistable.discard(rel)
            files = {name for name, kind, _ in entries if kind != "dir"}
            subs = [(os.path.join(rel, name), None if link else os.path.join(real, name))
                    for name, kind, link in entries if kind == "dir"]
            found += [os.path.join(rel, name) for name in sorted(files - (known[1] if known else set()))]
            self.listed[rel] = (st.st_mtime_ns, files, subs)
            stack += subs
        return found


@dataclass
class Pending:
    """A file seen but not yet checked."""

    sig: tuple | str | None = None  # (size, mtime, ctime) at the last poll; why, for what is no file
    changed: float = 0.0            # monotonic time a change of sig was last seen (the first look is one)
    failed: tuple | None = None     # sig when it last failed to decode
    error: str | None = None


class Gate:
    """--on-missing: a command run for each photo that fails the gate, with the photo's path as its
    last argument. It runs beside the loop (a slow gate delays no photo), ``jobs`` at a time, the
    others queued in order; a command that fails is reported and stops nothing. Each runs in its
    own session: Ctrl-C in the terminal stops qa, not a reject gate half-way."""

    def __init__(self, command: str | None, log, jobs: int = GATE_JOBS):
        self.argv, self.log, self.jobs = [], log, jobs
        self.running: list[tuple[subprocess.Popen, str]] = []  # (command, the photo's name as shown)
        self.queue: deque[tuple[str, str]] = deque()  # (path, name as shown)
        if command is None:
            return
        try:
            self.argv = shlex.split(command)
        except ValueError as e:
            raise UsageError(f"--on-missing {command!r}: {e}") from e
        if not self.argv:
            raise UsageError("--on-missing is empty; give a command")
        if shutil.which(self.argv[0]) is None:
            raise UsageError(f"--on-missing: {self.argv[0]} is not a command that can be run (not found, "
                             "or not executable)")

    def run(self, path: str, name: str) -> None:
        if self.argv:
            self.queue.append((path, name))
            self.reap()

    def _start(self, path: str, name: str) -> None:
        try:
            proc = subprocess.Popen([*self.argv, path], stdin=subprocess.DEVNULL, start_new_session=True)
        except OSError as e:
            self.log(f"on-missing: cannot run {self.argv[0]} for {name}: {e.strerror or e}")
            return
        self.running.append((proc, name))

    def reap(self) -> None:
        """Collect finished commands, and start queued ones in their places."""
        still = []
        for proc, name in self.running:
            rc = proc.poll()
            if rc is None:
                still.append((proc, name))
            elif rc:
                self.log(f"on-missing: {self.argv[0]} exited {rc} for {name}")
        self.running = still
        while self.queue and len(self.running) < self.jobs:
            self._start(*self.queue.popleft())

    def finish(self, wait: float = 10.0) -> None:
        """At exit: ``wait`` seconds for the commands to end, queued ones started as places free up;
        then what is still queued is started too (none is dropped), and all are left to finish."""
        deadline = time.monotonic() + wait
        self.reap()
        while (self.running or self.queue) and time.monotonic() < deadline:
            time.sleep(0.05)
            self.reap()
        late = len(self.queue)
        while self.queue:
            self._start(*self.queue.popleft())
        if self.running:
            self.log(f"on-missing: {len(self.running)} commands still running ({late} of them started just now "
                     "from the queue), left to finish")


class Stop:
    """SIGINT (Ctrl-C) and SIGTERM ask the loop to stop after the current photo; a second one
    stops at once (KeyboardInterrupt: what is written so far is complete lines)."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self):
        self.asked = False
        self.previous = {s: signal.signal(s, self._handle) for s in self.SIGNALS}

    def _handle(self, signum, frame):
        if self.asked:
            raise KeyboardInterrupt
        self.asked = True

    def restore(self):
        for s, handler in self.previous.items():
            signal.signal(s, handler)
