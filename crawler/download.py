"""icrawler parts made strict: a downloader that fetches with a byte cap and a deadline and hands
every file to the ImageStore, and parsers that count what they find."""

from __future__ import annotations

import threading
import time
from collections import Counter, defaultdict
from urllib.parse import urlsplit

import requests
from icrawler import ImageDownloader
from icrawler.builtin.baidu import BaiduParser
from icrawler.builtin.bing import BingParser
from icrawler.builtin.flickr import FlickrParser
from icrawler.builtin.google import GoogleParser
from icrawler.builtin.greedy import GreedyParser
from icrawler.builtin.urllist import PseudoParser

from crawler.store import ImageStore


class CrawlStats:
    """Counts per (engine, keyword): result pages parsed, links found, downloaded, rejected by
    reason, duplicates, kept, and links skipped because an earlier run already had them."""

    def __init__(self):
        self.lock = threading.Lock()
        self.rows: dict[tuple[str, str], Counter] = defaultdict(Counter)
        self.reasons: dict[tuple[str, str], Counter] = defaultdict(Counter)
        self.last_activity = time.monotonic()

    def add(self, key: tuple[str, str], field: str, n: int = 1) -> None:
        with self.lock:
            self.rows[key][field] += n
            self.last_activity = time.monotonic()

    def reject(self, key: tuple[str, str], reason: str) -> None:
        with self.lock:
            field = "duplicates" if reason in ("duplicate", "near-duplicate") else "rejected"
            self.rows[key][field] += 1
            if field == "rejected":
                self.reasons[key][reason] += 1
            self.last_activity = time.monotonic()


def fetch(session: requests.Session, url: str, timeout: float, max_bytes: int, deadline: float):
    """Return (bytes, None) or (None, (reason, detail)). Streams, so neither a huge body nor a
    server dripping bytes (which never trips a per-read timeout) can hold a thread for long."""
    if urlsplit(url).scheme not in ("http", "https"):
        return None, ("bad-scheme", "only http and https URLs are fetched")
    start = time.monotonic()
    try:
        with session.get(url, timeout=timeout, stream=True) as r:
            if r.status_code != 200:
                return None, ("http-error", f"status {r.status_code}")
            length = r.headers.get("Content-Length")
            if length and length.isdigit() and int(length) > max_bytes:
                return None, ("too-big", f"{length} bytes > {max_bytes}")
            chunks, total = [], 0
            while True:
                chunk = r.raw.read1(65536) if hasattr(r.raw, "read1") else r.raw.read(65536)
                if not chunk:
                    break
                total += len(chunk)
                if total > max_bytes:
                    return None, ("too-big", f"over {max_bytes} bytes")
                if time.monotonic() - start > deadline:
                    return None, ("timeout", f"not complete after {deadline:.0f} s")
                chunks.append(chunk)
            return b"".join(chunks), None
    except requests.exceptions.TooManyRedirects:
        return None, ("http-error", "redirect loop")
    except requests.exceptions.Timeout:
        return None, ("timeout", f"no answer within {timeout} s")
    except (requests.RequestException, OSError) as e:
        return None, ("connection-error", type(e).__name__)


class CheckedDownloader(ImageDownloader):
    """Replaces icrawler's download step: fetch strictly, then ImageStore decides (it names the
    file, checks, de-duplicates and records provenance). Stops the crawl at ``max_kept``."""

    def __init__(self, thread_num, signal, session, storage, store: ImageStore, stats: CrawlStats,
                 key: tuple[str, str], max_kept: int, max_bytes: int, deadline: float, delay: float):
        super().__init__(thread_num, signal, session, storage)
        self.store, self.stats, self.key = store, stats, key
        self.max_kept, self.max_bytes, self.deadline, self.delay = max_kept, max_bytes, deadline, delay
        self.kept_here = 0

    def download(self, task, default_ext, timeout=5, max_retry=2, overwrite=False, **kwargs):
        url = task["file_url"]
        task["success"], task["filename"] = False, None
        self.stats.add(self.key, "links")
        if self.store.seen(url):
            self.stats.add(self.key, "known")
            return
        for attempt in range(max(1, max_retry)):
            data, problem = fetch(self.session, url, timeout, self.max_bytes, self.deadline)
            if problem is None or problem[0] not in ("timeout", "connection-error") or self.signal.get("reach_max_num"):
                break
        if self.delay:
            time.sleep(self.delay)
        if problem:
            self.store.reject(url, *self.key, *problem)
            self.stats.reject(self.key, problem[0])
            return
        self.stats.add(self.key, "downloaded")
        verdict = self.store.add(data, url, *self.key)
        if not verdict.kept:
            self.stats.reject(self.key, verdict.reason)
            return
        self.stats.add(self.key, "kept")
        task["success"], task["filename"] = True, verdict.file
        with self.lock:
            self.kept_here += 1
            if self.max_kept and self.kept_here >= self.max_kept:
                self.signal.set(reach_max_num=True)


class CountingParser:
    """Mixin for icrawler parsers: counts result pages and the image links each yields. A parse()
    that returns None (Google's, when the page holds nothing it knows) counts as zero links
    instead of crashing the parser thread."""

    def __init__(self, *args, stats: CrawlStats, key: tuple[str, str], **kwargs):
        super().__init__(*args, **kwargs)
        self.stats, self.key = stats, key

    def parse(self, response, **kwargs):
        self.stats.add(self.key, "pages")
        for task in super().parse(response, **kwargs) or []:
            yield task


class CountingBingParser(CountingParser, BingParser):
    pass


class CountingGoogleParser(CountingParser, GoogleParser):
    pass


class CountingBaiduParser(CountingParser, BaiduParser):
    pass


class CountingFlickrParser(CountingParser, FlickrParser):
    pass


class CountingGreedyParser(CountingParser, GreedyParser):
    pass


class CountingListParser(CountingParser, PseudoParser):
    pass
