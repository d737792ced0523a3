"""The crawl's settings, stated once: `stampcheck crawl` reads its options' defaults from here (no
icrawler here, so the CLI reads them without loading it)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class CrawlOptions:
    max_num: int = 100            # images to keep per (engine, keyword)
    threads: int = 4              # downloader threads
    timeout: float = 10.0         # per request (connect, and each read)
    deadline: float = 30.0        # whole download of one file, connect to last byte, all tries
    max_bytes: int = 20_000_000
    delay: float = 0.0            # seconds each downloader thread waits after a download
    retries: int = 3              # tries of one URL (connection errors, 429, 5xx), within its deadline
    max_depth: int = 3            # site crawl: links followed from the given page
    max_pages: int = 200          # site crawl: pages fetched
    robots: bool = True           # site crawl: obey robots.txt
    min_size: int = 128           # the smallest short side kept (ImageStore's limits)
    max_size: int | None = 1024   # kept images downsized to this long side (None: as they came)
    max_pixels: int = 80_000_000  # larger images refused (decompression bombs)
