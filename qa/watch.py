"""A watched folder: `stampcheck qa MODEL --watch DIR`, qa on each photo as the camera writes it.

A photo is checked once it is completely written: seen unchanged (size, mtime) over one poll, and
then decoded. A writer may pause longer than a poll (a slow link, a file written in parts), so a
photo that fails to decode while it changed recently is tried again when it changes, and becomes an
unreadable row only once it has been quiet for the settle time. Each photo's record is appended to
``results.jsonl`` and ``results.csv`` in one write, so a kill leaves at most a partial last line,
which the next run drops; the JSONL is the run's memory (what was checked), and the CSV is rebuilt
from it on a restart, so the two never disagree.
"""

from __future__ import annotations

import io
import json
import math
import os
import shlex
import shutil
import signal
import stat
import subprocess
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path

from stampcheck.qa.batch import (QASummary, UsageError, csv_writer, entry_kind, open_engine, photo_record,
                      remove_stale_partials, result_rows, run_facts, why_not_a_file)
from stampcheck.qa.config import GATE_JOBS, SETTLE
from stampcheck.atomic import atomic_write_text
from stampcheck.images import may_be_photo
from stampcheck.paths import OutputLock, check_output, claim_output, refuse_overlap, under
from stampcheck.progress import shown

COMMAND = "qa --watch"  # the output folder's marker: batch qa and watch never write into each other's
POLL = 0.1     # seconds between looks at the folder
# A folder's mtime tells when a name was added or removed, so an unchanged folder is not listed
# again; but its clock may be coarse (FAT: 2 s) or late (network shares): on a file system with
# whole-second times, folders changed in the last RECENT seconds are listed at every poll, and
# every folder is listed each RESCAN seconds.
RECENT, RESCAN = 3.0, 5.0


class ReportRemoved(RuntimeError):
    """--out was removed while watching (the tool cannot go on: exit 4)."""


def from_record(rec: dict):
    """A PhotoResult as results.jsonl recorded it (no pixels: no thumbnail, no heatmap)."""
    from stampcheck.runtime import PhotoResult

    dets = [(d["score"], d["class"], d["box"]) for d in rec["detections"] or []]
    return PhotoResult(Path(rec["file"]), rec["width"] or 0, rec["height"] or 0, rec["score"] or 0.0,
                       dets[0][2] if dets else None, dets, rec["error"])


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


def read_results(out: Path, prefix: str) -> tuple[list[dict], set[str]]:
    """The records an earlier watch wrote in ``out`` (a partial last line, from a kill, is cut off)
    and their names relative to the watched folder. results.csv is rewritten from them."""
    path = out / "results.jsonl"
    records = []
    if path.is_file():
        data = path.read_bytes()
        complete = data[:data.rfind(b"\n") + 1]
        for k, line in enumerate(complete.splitlines(), 1):
            try:
                record = json.loads(line)
            except ValueError:
                record = None
            if not isinstance(record, dict) or not isinstance(record.get("file"), str):
                raise UsageError(f"{path} line {k} is not a qa record; give a new --out")
            records.append(record)
        if len(complete) < len(data):
            with open(path, "r+b") as f:
                f.truncate(len(complete))
    done = set()
    for record in records:
        if not record["file"].startswith(prefix):
            raise UsageError(f"--out {out} holds the results of watching another folder ({record['file']}); "
                             "give a new --out, or watch that folder")
        done.add(record["file"][len(prefix):])
    atomic_write_text(out / "results.csv", csv_text(records, header=True))
    return records, done


def csv_text(records: list[dict], header: bool = False) -> str:
    from stampcheck.qa.report import csv_row

    buf = io.StringIO()
    writer = csv_writer(buf)
    if header:
        writer.writeheader()
    writer.writerows(csv_row(row) for record in records for row in result_rows(record))
    return buf.getvalue()


def photo_line(rel: str, record: dict) -> str:
    """The line printed for a checked photo."""
    if record["error"]:
        return f"UNREADABLE {shown(rel)}: {shown(record['error'])}"
    return f"{'STAMPED' if record['has_stamp'] else 'MISSING'} {shown(rel)} score {record['score']:.2f}"


def run_watch(model_dir: Path, folder: Path, out: Path, threshold: float | None = None, device: str | None = None,
              engine: str = "torch", on_missing: str | None = None, settle: float = SETTLE, poll: float = POLL,
              bs: int = 8, workers: int | None = 0, log=print, on_missing_jobs: int = GATE_JOBS) -> QASummary:
    """Check the photos in ``folder`` and those that arrive, until SIGINT or SIGTERM; ``log`` gets a
    line per photo (and per problem). Returns the totals of this run and the earlier ones in ``out``.
    ReportRemoved when ``out`` is removed meanwhile."""
    folder, out = Path(folder), Path(out)
    if not folder.exists():
        raise UsageError(f"--watch {folder}: no such folder")
    if not folder.is_dir():
        raise UsageError(f"--watch {folder} is not a folder; give the folder the camera writes into")
    refuse_overlap(out, [folder])
    check_output(out, COMMAND)
    gate = Gate(on_missing, log, on_missing_jobs)
    from stampcheck.qa.report import Report, ReportError
    from stampcheck.runtime import PhotoResult, predict_photos

    predictor = open_engine(model_dir, engine, device)
    thr = predictor.threshold if threshold is None else threshold
    root = os.path.abspath(folder)
    prefix = os.path.join(root, "")
    claim_output(out, COMMAND)
    with OutputLock(out, COMMAND) as lock:  # before anything is read or written there
        remove_stale_partials(out)
        records, done = read_results(out, prefix)
        summary = QASummary(threshold=thr, size=predictor.size, second_look=predictor.look is not None)
        for record in records:
            summary.count(record)
        try:
            report = Report(out, thr, run_facts(model_dir, predictor, [str(folder)], thr), resume=True)
        except ReportError as e:
            raise UsageError(str(e)) from e
        # a run killed between a photo's record and its report row: the row is made from the record
        # (no thumbnail), never by checking the photo again
        for rec in records[len(report):]:
            report.add(from_record(rec))
        report.write()

        def still_there() -> None:
            # removed by hand: its files would be written into the void, or made again half
            if lock.removed():
                raise ReportRemoved(f"{out} was removed while watching; stopped")

        def record(r: PhotoResult, rel: str) -> None:
            still_there()
            rec = photo_record(r, thr)
            # one write each (unbuffered): a kill leaves at most a partial last line
            fjson.write((json.dumps(rec) + "\n").encode())
            fcsv.write(csv_text([rec]).encode())
            done.add(rel)
            summary.count(rec)
            report.add(r)
            report.write()
            log(photo_line(rel, rec))
            if rec["error"] or not rec["has_stamp"]:
                gate.run(str(r.path), shown(rel))

        scanner, pending, stop, removed = Scanner(root, log, str(out)), {}, Stop(), None
        skipped: dict[str, tuple] = {}  # documents (no photo by name or content) -> (size, mtime, ctime)
        last_full = -math.inf
        try:
            with open(out / "results.jsonl", "ab", buffering=0) as fjson, \
                    open(out / "results.csv", "ab", buffering=0) as fcsv:
                while not stop.asked:
                    still_there()
                    start = time.monotonic()
                    full = start - last_full >= RESCAN
                    last_full = start if full else last_full
                    for rel in scanner.new_files(full):
                        if rel not in done and rel not in pending:
                            pending[rel] = Pending()
                    for rel, sig in list(skipped.items()) if full else ():  # a document written over
                        try:  # or replaced by a photo is looked at again
                            st = os.stat(os.path.join(root, rel))
                        except OSError:
                            del skipped[rel]  # gone: the scanner reports the name if it comes back
                            continue
                        if (st.st_size, st.st_mtime_ns, st.st_ctime_ns) != sig:
                            del skipped[rel]
                            pending[rel] = Pending()
                    ready = []
                    for rel, p in list(pending.items()):
                        path = os.path.join(root, rel)
                        try:
                            st = os.stat(path)
                        except OSError:
                            st = None
                        regular = st is not None and stat.S_ISREG(st.st_mode)
                        if not regular and not os.path.lexists(path):  # gone before it was checked
                            del pending[rel]
                            continue
                        # a pipe or a broken link is a row too (batch qa's reason), once it stays so
                        sig = (st.st_size, st.st_mtime_ns, st.st_ctime_ns) if regular else why_not_a_file(Path(path))
                        if sig != p.sig:
                            p.changed, p.sig = start, sig
                            continue
                        # on qa's own clock, never the file's: a camera's clock may be wrong, even ahead
                        quiet = start - p.changed
                        if regular and p.failed != sig:
                            ready.append((rel, quiet))
                        elif quiet >= settle:
                            del pending[rel]
                            if regular and not may_be_photo(Path(path)):
                                skipped[rel] = sig
                                log(f"skipped, not a photo by name or content: {shown(rel)}")
                            else:
                                record(PhotoResult(Path(root, rel), error=p.error if regular else sig), rel)
                    for (rel, quiet), r in zip(ready[:bs], predict_photos(
                            predictor, [Path(root, rel) for rel, _ in ready[:bs]], bs=bs, workers=workers,
                            threshold=thr, previews=True)):
                        p = pending[rel]
                        if r.error and quiet < settle:  # perhaps still being written: again when it changes
                            p.failed, p.error = p.sig, r.error
                        elif r.error and not may_be_photo(r.path):  # a README: no row, no --on-missing
                            skipped[rel] = pending.pop(rel).sig
                            log(f"skipped, not a photo by name or content: {shown(rel)}")
                        else:
                            del pending[rel]
                            record(r, rel)
                        if stop.asked:
                            break
                    gate.reap()
                    if len(ready) <= bs:  # else the rest of a backlog is due at once
                        time.sleep(max(0.0, poll - (time.monotonic() - start)))
        except ReportRemoved as e:
            removed = e
        finally:
            stop.restore()
        if not removed:
            report.write()
    gate.finish()
    if removed:
        raise removed
    return summary
