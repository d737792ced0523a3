"""What a crawl counts, per (engine, keyword): pages, links, downloads, rejections by reason,
duplicates, kept images, and which offered URLs were dealt with (none may go unrecorded)."""

from __future__ import annotations

import threading
from collections import Counter, defaultdict


class CrawlStats:
    """Counts per (engine, keyword): result pages parsed, links found, downloaded, rejected by
    reason, duplicates, kept, and links skipped because an earlier run already had them. Also which
    URLs were handed to the downloader and which it dealt with, so none goes unrecorded."""

    def __init__(self):
        self.lock = threading.Lock()
        self.rows: dict[tuple[str, str], Counter] = defaultdict(Counter)
        self.reasons: dict[tuple[str, str], Counter] = defaultdict(Counter)
        self.offered: dict[tuple[str, str], set[str]] = defaultdict(set)
        self.handled: dict[tuple[str, str], set[str]] = defaultdict(set)

    def add(self, key: tuple[str, str], field: str, n: int = 1) -> None:
        with self.lock:
            self.rows[key][field] += n

    def reject(self, key: tuple[str, str], reason: str) -> None:
        with self.lock:
            field = "duplicates" if reason in ("duplicate", "near-duplicate") else "rejected"
            self.rows[key][field] += 1
            if field == "rejected":
                self.reasons[key][reason] += 1

    def offer(self, key: tuple[str, str], url: str) -> None:
        with self.lock:
            self.offered[key].add(url)

    def handle(self, key: tuple[str, str], url: str) -> None:
        with self.lock:
            self.handled[key].add(url)

    def unhandled(self, key: tuple[str, str]) -> list[str]:
        with self.lock:
            return sorted(self.offered[key] - self.handled[key])
