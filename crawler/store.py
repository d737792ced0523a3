"""Where crawled images end up: checked, de-duplicated, named by hash, with provenance.

``DIR/images/<sha256[:20]>.jpg`` (our names, never the URL's), ``DIR/manifest.jsonl`` (one line
per kept image) and ``DIR/rejected.jsonl`` (one line per refused URL, with the reason). Every
source, search engine or a user's folder, goes through :meth:`ImageStore.add`.

Duplicates: exact when the sha256 of the downloaded bytes or of the saved JPEG is known; near
when the 64-bit perceptual hash (imagehash.phash) is within ``NEAR_DISTANCE`` bits of a kept
one, so a resized or re-encoded copy counts as the same picture.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import imagehash
import numpy as np

from stampcheck.atomic import atomic_write_bytes, atomic_write_text, remove_own_partials
from stampcheck.images import ImageLimits, ImageRejected, fit_within, jpeg_bytes, open_checked
from stampcheck.paths import lock_output

NEAR_DISTANCE = 6  # of 64 phash bits; re-encodes and resizes land at 0-4, other photos above 20
# Reasons that may pass on a later try; any other rejection is final and its URL is not fetched again.
TRANSIENT = {"timeout", "http-error", "connection-error", "error", "not-fetched", "robots", "unreadable",
             "not-a-file", "name-taken"}
# The temporary names stampcheck.atomic gives our own files (.NAME.PID.part): the only files a run
# ever removes, and only these names, so a user's own ".something.part" survives.
OUR_PARTIAL_NAMES = r"[0-9a-f]{20}\.jpg|manifest\.jsonl|rejected\.jsonl"
MANIFEST_KEYS = ("file", "sha256", "phash", "url")
REJECTED_KEYS = ("url", "reason")
OUR_FILE = re.compile(r"^[0-9a-f]{20}\.jpg$")


class ForeignOutput(ValueError):
    """The output folder holds a manifest.jsonl or rejected.jsonl that crawl did not write."""


@dataclass(frozen=True)
class Verdict:
    kept: bool
    reason: str          # "kept" or why not
    file: str | None = None


class ImageStore:
    """Thread-safe: icrawler's downloader threads call :meth:`add` concurrently. Holds its folder
    (stampcheck.paths.lock_output) from its first change there until :meth:`close` or the process
    ends: two crawls into one folder would each count the other's images as new. A context manager."""

    def __init__(self, root: Path, limits: ImageLimits = ImageLimits(min_side=128), max_size: int | None = None,
                 quality: int = 92):
        self.root = Path(root)
        self.images = self.root / "images"
        self.limits, self.max_size, self.quality = limits, max_size, quality
        self.lock = threading.RLock()  # reject() is called with it held
        self.sha: set[str] = set()
        self.urls: set[str] = set()
        self.final_rejects: set[str] = set()
        self.phashes: list[int] = []
        self.check_seconds = 0.0  # thread-seconds spent decoding, checking and hashing (bench/crawl.py)
        self._phash_array = np.zeros(0, dtype=np.uint64)
        self.foreign: list[Path] = []  # files in images/ that no manifest line lists: never touched
        self._recover()

    # -- resume -------------------------------------------------------------------------------
    def _recover(self) -> None:
        """Load what earlier runs kept. Checks first that the folder's logs are ours (ForeignOutput
        otherwise, before anything is written); then only our own leftovers are cleaned: temporary
        files of a killed run and manifest lines whose file is gone. A file in images/ that the
        manifest does not list is someone's (or a file a killed run wrote but never listed, which a
        re-fetch of its URL takes over again): left alone."""
        entries = _read_log(self.root / "manifest.jsonl", MANIFEST_KEYS)
        rejected = _read_log(self.root / "rejected.jsonl", REJECTED_KEYS)
        self.hold = lock_output(self.root, "crawl")
        entries = _read_log(self.root / "manifest.jsonl", MANIFEST_KEYS)  # as the last writer left them
        rejected = _read_log(self.root / "rejected.jsonl", REJECTED_KEYS)
        self.images.mkdir(parents=True, exist_ok=True)
        for folder in (self.root, self.images):
            remove_own_partials(folder, OUR_PARTIAL_NAMES)
        entries = [e for e in entries if (self.images / e["file"]).is_file()]
        listed = {e["file"] for e in entries}
        self.foreign = sorted(f for f in self.images.iterdir() if f.name not in listed)
        _rewrite(self.root / "manifest.jsonl", entries)
        _rewrite(self.root / "rejected.jsonl", rejected)
        for e in entries:
            self.sha.update({e["sha256"], e.get("source_sha256", e["sha256"])})
            self.urls.add(e["url"])
            self.phashes.append(int(e["phash"], 16))
        self._phash_array = np.array(self.phashes, dtype=np.uint64)
        self.final_rejects = {r["url"] for r in rejected if r["reason"] not in TRANSIENT}

    def seen(self, url: str) -> bool:
        """True when a URL was kept or finally refused by an earlier run: no need to fetch it."""
        return url in self.urls or url in self.final_rejects

    # -- adding -------------------------------------------------------------------------------
    def add(self, data: bytes, url: str, engine: str, keyword: str = "") -> Verdict:
        start = time.perf_counter()
        try:
            return self._add(data, url, engine, keyword)
        finally:
            with self.lock:
                self.check_seconds += time.perf_counter() - start

    def _add(self, data: bytes, url: str, engine: str, keyword: str) -> Verdict:
        source_sha = hashlib.sha256(data).hexdigest()
        with self.lock:
            if source_sha in self.sha:
                return self.reject(url, engine, keyword, "duplicate", "same bytes as a kept image")
        try:
            img = fit_within(open_checked(data, self.limits), self.max_size)
        except ImageRejected as e:
            return self.reject(url, engine, keyword, e.reason, e.detail)
        ph = int(str(imagehash.phash(img)), 16)
        out = jpeg_bytes(img, self.quality)
        sha = hashlib.sha256(out).hexdigest()
        name = f"{sha[:20]}.jpg"
        if _taken(self.images / name, out):
            return self.reject(url, engine, keyword, "name-taken", f"images/{name} holds other bytes; left as it is")
        with self.lock:  # check and claim together, so two threads cannot keep the same picture
            if sha in self.sha:
                return self.reject(url, engine, keyword, "duplicate", "same picture as a kept image")
            if len(self._phash_array):
                dist = _popcount(self._phash_array ^ np.uint64(ph)).min()
                if dist <= NEAR_DISTANCE:
                    return self.reject(url, engine, keyword, "near-duplicate", f"phash distance {dist}")
            self.sha.update({sha, source_sha})
            self.urls.add(url)
            self.phashes.append(ph)
            self._phash_array = np.append(self._phash_array, np.uint64(ph))
        atomic_write_bytes(self.images / name, out)
        entry = {"file": name, "sha256": sha, "source_sha256": source_sha, "phash": f"{ph:016x}",
                 "width": img.width, "height": img.height, "url": url, "engine": engine, "keyword": keyword,
                 "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        self._append("manifest.jsonl", entry)
        return Verdict(True, "kept", name)

    def reject(self, url: str, engine: str, keyword: str, reason: str, detail: str = "") -> Verdict:
        self._append("rejected.jsonl", {"url": url, "reason": reason, "detail": detail, "engine": engine,
                                        "keyword": keyword, "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
        if reason not in TRANSIENT:
            with self.lock:
                self.final_rejects.add(url)
        return Verdict(False, reason)

    def _append(self, name: str, entry: dict) -> None:
        # One write of one line with O_APPEND: lines from several threads never interleave.
        line = (json.dumps(entry) + "\n").encode()
        with self.lock, open(self.root / name, "ab") as f:
            f.write(line)

    def kept(self) -> int:
        return len(self.phashes)

    def close(self) -> None:
        self.hold.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _popcount(x: np.ndarray) -> np.ndarray:
    return np.unpackbits(x.view(np.uint8).reshape(-1, 8), axis=1).sum(axis=1)


def _read_log(path: Path, keys: tuple[str, ...]) -> list[dict]:
    """The lines of one of our logs. Only the last line may be broken (a kill cut it short); any
    other line that is not one of ours means the file is someone else's, and it is not touched."""
    if not path.exists():
        return []
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise ForeignOutput(f"{path} cannot be read as a crawl log ({e}); choose another --out") from e
    lines = text.splitlines()
    out = []
    for i, line in enumerate(lines, 1):
        try:
            entry = json.loads(line)
            ours = isinstance(entry, dict) and all(isinstance(entry.get(k), str) for k in keys)
            if not ours or ("file" in keys and not OUR_FILE.match(entry["file"])):
                raise ValueError(line)
        except ValueError:
            if i == len(lines) and not text.endswith("\n"):
                continue  # the line a kill cut short
            raise ForeignOutput(f"{path} line {i} is not a line stampcheck crawl writes: the folder holds files "
                                "crawl did not make; choose another --out") from None
        out.append(entry)
    return out


def _rewrite(path: Path, entries: list[dict]) -> None:
    text = "".join(json.dumps(e) + "\n" for e in entries)
    if text or path.exists():
        if not path.exists() or path.read_text(encoding="utf-8") != text:
            atomic_write_text(path, text)


def _taken(path: Path, data: bytes) -> bool:
    """True when ``path`` exists with other bytes than ours (someone edited a kept image in place)."""
    try:
        return path.read_bytes() != data
    except FileNotFoundError:
        return False
    except OSError:  # a folder or something else by that name
        return True
