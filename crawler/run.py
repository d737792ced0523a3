"""Run crawls: one icrawler crawler per (engine, keyword), all feeding one ImageStore.

Each engine is icrawler's own feeder and parser (counting what they see) with our
CheckedDownloader. ``session_hook`` gets each crawler's requests session before it starts, which
is how a caller adds proxies, auth or, in tests, routes an engine's host to a local server.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from icrawler import Crawler, UrlListFeeder
from icrawler.builtin.baidu import BaiduFeeder
from icrawler.builtin.bing import BingFeeder
from icrawler.builtin.flickr import FlickrFeeder
from icrawler.builtin.google import GoogleFeeder
from icrawler.builtin.greedy import GreedyFeeder

from crawler.download import (CheckedDownloader, CountingBaiduParser, CountingBingParser, CountingFlickrParser,
                              CountingGoogleParser, CountingGreedyParser, CountingListParser, CrawlStats)
from crawler.store import ImageStore
from stampcheck.images import find_images

SEARCH_ENGINES = ("bing", "google", "baidu", "flickr")
USER_AGENT = "stampcheck-crawler/0.1 (+background images for stamp detection)"
PARSERS = {"bing": (BingFeeder, CountingBingParser), "google": (GoogleFeeder, CountingGoogleParser),
           "baidu": (BaiduFeeder, CountingBaiduParser), "flickr": (FlickrFeeder, CountingFlickrParser),
           "site": (GreedyFeeder, CountingGreedyParser), "urls": (UrlListFeeder, CountingListParser)}
SUGGEST = {"google": "bing", "bing": "baidu", "baidu": "bing", "flickr": "bing", "site": "urls", "urls": "site"}


@dataclass
class CrawlOptions:
    max_num: int = 100            # images to keep per (engine, keyword)
    threads: int = 4              # downloader threads
    timeout: float = 10.0         # per request (connect, and each read)
    deadline: float = 30.0        # whole download of one file
    max_bytes: int = 20_000_000
    delay: float = 0.0            # seconds each downloader thread waits after a download
    idle: float = 20.0            # a site crawl stops when nothing new happened for this long
    retries: int = 2


def crawl_engine(store: ImageStore, stats: CrawlStats, engine: str, keyword: str, opts: CrawlOptions,
                 session_hook=None) -> None:
    """One icrawler crawl of ``engine`` for ``keyword`` (a search term, a site URL or a URL-list file)."""
    feeder_cls, parser_cls = PARSERS[engine]
    key = (engine, keyword)
    feeder_args, parser_args = {}, {}
    if engine == "flickr":
        apikey = os.environ.get("FLICKR_APIKEY")
        if not apikey:
            raise ValueError("the flickr engine needs an API key in the FLICKR_APIKEY environment variable")
        feeder_kwargs = dict(apikey=apikey, max_num=opts.max_num * 2, text=keyword)
        parser_kwargs = dict(apikey=apikey)
    elif engine == "site":
        feeder_kwargs, parser_kwargs = dict(domains=[keyword]), dict(domains=[keyword])
    elif engine == "urls":
        feeder_kwargs, parser_kwargs = dict(url_list=keyword), {}
    else:  # ask for twice what we keep: some links always fail or are duplicates
        feeder_kwargs = dict(keyword=keyword, offset=0, max_num=min(1000, opts.max_num * 2))
        parser_kwargs = {}
    c = Crawler(feeder_cls=feeder_cls, parser_cls=parser_cls, downloader_cls=CheckedDownloader,
                downloader_threads=opts.threads, storage={"backend": "FileSystem", "root_dir": str(store.images)},
                log_level=logging.CRITICAL, extra_feeder_args=feeder_args,
                extra_parser_args={**parser_args, "stats": stats, "key": key},
                extra_downloader_args=dict(store=store, stats=stats, key=key, max_kept=opts.max_num,
                                           max_bytes=opts.max_bytes, deadline=opts.deadline, delay=opts.delay))
    c.set_session(headers={"User-Agent": USER_AGENT, "Accept-Language": "en-US,en;q=0.8"})
    c.session.trust_env = False if session_hook else c.session.trust_env
    # set_session made a new session: hand it to the three stages again.
    c.feeder.session = c.parser.session = c.downloader.session = c.session
    if session_hook:
        session_hook(c.session)
    done = threading.Event()
    watchdog = threading.Thread(target=_watch, args=(c, stats, opts, engine, done), daemon=True)
    watchdog.start()
    try:
        c.crawl(feeder_kwargs=feeder_kwargs,
                parser_kwargs={**parser_kwargs, "queue_timeout": 1, "req_timeout": opts.timeout,
                               "max_retry": opts.retries},
                downloader_kwargs=dict(max_num=0, queue_timeout=1, req_timeout=opts.timeout,
                                       max_retry=opts.retries))
    finally:
        c.signal.set(reach_max_num=True)  # releases a greedy feeder that waits for it forever
        done.set()


def _watch(c: Crawler, stats: CrawlStats, opts: CrawlOptions, engine: str, done: threading.Event) -> None:
    """A whole-site crawl has no natural end; stop it once nothing has happened for ``idle`` s."""
    while not done.wait(0.5):
        if engine == "site" and time.monotonic() - stats.last_activity > opts.idle:
            c.signal.set(reach_max_num=True)
            return


def import_folder(store: ImageStore, stats: CrawlStats, folder: Path, progress) -> None:
    """A user's own photos through the same checks, so every source ends in the same place."""
    key = ("dir", str(folder))
    files = find_images([folder])
    with progress(len(files), f"importing {folder}") as advance:
        for f in files:
            url = f.resolve().as_uri()
            stats.add(key, "links")
            if store.seen(url):
                stats.add(key, "known")
            else:
                verdict = store.add(f.read_bytes(), url, "dir", str(folder))
                stats.add(key, "downloaded")
                if verdict.kept:
                    stats.add(key, "kept")
                else:
                    stats.reject(key, verdict.reason)
            advance(1)


def empty_engines(stats: CrawlStats) -> list[str]:
    """Warnings for every (engine, keyword) that found no image link at all."""
    out = []
    for (engine, keyword), row in sorted(stats.rows.items()):
        if engine != "dir" and row["links"] == 0:
            out.append(f"{engine} found no image links for {keyword!r} ({row['pages']} result pages parsed): "
                       f"its page layout may have changed or the search had no results; "
                       f"try --engine {SUGGEST.get(engine, 'bing')}")
    return out


def run_crawl(out: Path, keywords: list[str], engines: list[str], sites: list[str], url_files: list[Path],
              folders: list[Path], opts: CrawlOptions, store: ImageStore, progress, session_hook=None) -> CrawlStats:
    """Every requested source into ``store``; returns the counts for the summary table."""
    for e in engines:
        if e not in SEARCH_ENGINES:
            raise ValueError(f"unknown engine {e!r}; choose from {', '.join(SEARCH_ENGINES)}")
    if engines and not keywords:
        raise ValueError("search engines need at least one --keyword (or --keywords-file)")
    jobs = [(e, k) for e in engines for k in keywords] + [("site", s) for s in sites] + \
           [("urls", str(f)) for f in url_files]
    stats = CrawlStats()
    with progress(len(jobs), "crawling") as advance:
        for engine, keyword in jobs:
            crawl_engine(store, stats, engine, keyword, opts, session_hook)
            advance(1)
    for folder in folders:
        import_folder(store, stats, folder, progress)
    return stats
