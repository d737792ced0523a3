"""icrawler's download step made strict: fetch with a byte cap and a deadline (crawler.http), ask
again when the server says so, then hand every file to the ImageStore, which decides."""

from __future__ import annotations

import threading
import time

from icrawler import ImageDownloader

from stampcheck.crawler.http import fetch_trying
from stampcheck.crawler.stats import CrawlStats
from stampcheck.crawler.store import ImageStore


class CheckedDownloader(ImageDownloader):
    """Replaces icrawler's download step: fetch strictly, then ImageStore decides (it names the
    file, checks, de-duplicates and records provenance). Stops the crawl at ``max_kept``. With
    ``robots`` (a site crawl's :class:`crawler.site.Robots`), a redirect is followed only where the
    robots.txt of the host it leads to allows it."""

    def __init__(self, thread_num, signal, session, storage, store: ImageStore, stats: CrawlStats,
                 key: tuple[str, str], max_kept: int, max_bytes: int, deadline: float, delay: float,
                 robots=None):
        super().__init__(thread_num, signal, session, storage)
        self.store, self.stats, self.key, self.robots = store, stats, key, robots
        self.max_kept, self.max_bytes, self.deadline, self.delay = max_kept, max_bytes, deadline, delay
        self.kept_here = 0
        self.keep_lock = threading.Lock()

    def download(self, task, default_ext, timeout=5, max_retry=2, overwrite=False, **kwargs):
        url = task["file_url"]
        task["success"], task["filename"] = False, None
        try:
            self._download(task, url, timeout, max_retry)
        except Exception as e:  # noqa: BLE001 - an escaping error ends the thread and strands the queue
            self._reject(url, "error", f"{type(e).__name__}: {e}"[:300])
        finally:
            self.stats.handle(self.key, url)

    def _download(self, task, url: str, timeout: float, max_retry: int) -> None:
        self.stats.add(self.key, "links")
        if self.store.seen(url):
            self.stats.add(self.key, "known")
            return
        got = fetch_trying(self.session, url, timeout, self.max_bytes, self.deadline,
                           self.robots.refusal if self.robots else None, max_retry,
                           stop=lambda: self.signal.get("reach_max_num"))
        if self.delay:
            time.sleep(self.delay)
        if got.problem:
            self._reject(url, *got.problem)
            return
        self.stats.add(self.key, "downloaded")
        # one thread at a time from the count to the store: threads still downloading when --max is
        # reached would otherwise each keep one more image
        with self.keep_lock:
            if self.max_kept and self.kept_here >= self.max_kept:
                self._reject(url, "over-max", f"downloaded after --max {self.max_kept} was reached")
                return
            verdict = self.store.add(got.content, url, *self.key)
            if verdict.kept:
                self.kept_here += 1
                if self.max_kept and self.kept_here >= self.max_kept:
                    self.signal.set(reach_max_num=True)
        if not verdict.kept:
            self.stats.reject(self.key, verdict.reason)
            return
        self.stats.add(self.key, "kept")
        task["success"], task["filename"] = True, verdict.file

    def _reject(self, url: str, reason: str, detail: str) -> None:
        self.stats.reject(self.key, reason)
        self.store.reject(url, *self.key, reason, detail)
