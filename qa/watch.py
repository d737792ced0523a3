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
import stat
import time
from pathlib import Path

from stampcheck.atomic import atomic_write_text
from stampcheck.images import may_be_photo
from stampcheck.paths import OutputLock, check_output, claim_output, refuse_overlap
from stampcheck.progress import shown
from stampcheck.qa.arrivals import RESCAN, Gate, Pending, Scanner, Stop
from stampcheck.qa.batch import (QASummary, UsageError, csv_writer, open_engine, photo_record, remove_stale_partials,
                                 result_rows, run_facts, why_not_a_file)
from stampcheck.qa.config import GATE_JOBS, SETTLE

COMMAND = "qa --watch"  # the output folder's marker: batch qa and watch never write into each other's
POLL = 0.1     # seconds between looks at the folder


class ReportRemoved(RuntimeError):
    """--out was removed while watching (the tool cannot go on: exit 4)."""


def from_record(rec: dict, threshold: float):
    """A PhotoResult as results.jsonl recorded it (no pixels: no thumbnail, no heatmap), judged at ``threshold``."""
    from stampcheck.engine.decode import PhotoResult

    dets = [(d["score"], d["class"], d["box"]) for d in rec["detections"] or []]
    return PhotoResult(Path(rec["file"]), rec["width"] or 0, rec["height"] or 0, rec["score"] or 0.0,
                       dets[0][2] if dets else None, dets, rec["error"], threshold=threshold)


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
    from stampcheck.engine.decode import PhotoResult
    from stampcheck.engine.run import predict_photos

    predictor = open_engine(model_dir, engine, device, threshold)
    thr = predictor.threshold
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
            report.add(from_record(rec, thr))
        report.write()

        def still_there() -> None:
            # removed by hand: its files would be written into the void, or made again half
            if lock.removed():
                raise ReportRemoved(f"{out} was removed while watching; stopped")

        def record(r: PhotoResult, rel: str) -> None:
            still_there()
            rec = photo_record(r)
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
                            previews=True)):
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
