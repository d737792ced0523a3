"""Run crawls: one icrawler crawler per (engine, keyword), all feeding one ImageStore.

Each engine is icrawler's own feeder and parser (counting what they see) with our
CheckedDownloader; a site crawl and a URL list use our feeders and parsers in the same shape.
``session_hook`` gets each crawler's requests session before it starts, which is how a caller
adds proxies, auth or, in tests, routes an engine's host to a local server.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from urllib.parse import urlsplit

from icrawler import Crawler
from icrawler.builtin.baidu import BaiduFeeder
from icrawler.builtin.bing import BingFeeder
from icrawler.builtin.flickr import FlickrFeeder
from icrawler.builtin.google import GoogleFeeder

from stampcheck.crawler.config import CrawlOptions
from stampcheck.crawler.download import CheckedDownloader
from stampcheck.crawler.http import DeadlineSession
from stampcheck.crawler.parsers import (CountingBaiduParser, CountingBingParser, CountingFlickrParser, CountingGoogleParser,
                             ListFeeder, ListParser)
from stampcheck.crawler.site import Robots, SiteFeeder, SiteParser
from stampcheck.crawler.stats import CrawlStats
from stampcheck.crawler.store import ImageStore
from stampcheck.files import NotAFile, TextUnreadable, open_regular, read_user_text
from stampcheck.images import IMAGE_SUFFIXES
from stampcheck.paths import refuse_overlap

SEARCH_ENGINES = ("bing", "google", "baidu", "flickr")
USER_AGENT = "stampcheck-crawler/0.1 (+background images for stamp detection)"
ROBOTS_AGENT = "stampcheck-crawler"
PARSERS = {"bing": (BingFeeder, CountingBingParser), "google": (GoogleFeeder, CountingGoogleParser),
           "baidu": (BaiduFeeder, CountingBaiduParser), "flickr": (FlickrFeeder, CountingFlickrParser),
           "site": (SiteFeeder, SiteParser), "urls": (ListFeeder, ListParser)}
SUGGEST = {"google": "bing", "bing": "baidu", "baidu": "bing", "flickr": "bing"}


# -- checking a request before anything is written ------------------------------------------------

def read_list(path: Path, option: str) -> list[str]:
    """The non-blank lines of a UTF-8 text file; ValueError with a one-line reason otherwise."""
    try:
        text = read_user_text(path)
    except TextUnreadable as e:
        raise ValueError(f"{option} {path}: {e}") from None
    items = [line.strip() for line in text.splitlines() if line.strip()]
    if not items:
        raise ValueError(f"{option} {path} is empty: write one entry per line")
    return items


def site_url(raw: str) -> str:
    """A --site value as a URL; a bare host name means its https:// home page."""
    url = raw.strip() if "://" in raw else "https://" + raw.strip()
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"--site {raw!r} is not a web address; give one like https://shop.example.com/")
    return url


def check_request(out: Path, keywords: list[str], engines: list[str], sites: list[str], url_files: list[Path],
                  folders: list[Path]) -> None:
    """Raise ValueError (OverlapError for folders) for anything that would fail later, before any
    file is written."""
    for e in engines:
        if e not in SEARCH_ENGINES:
            raise ValueError(f"unknown engine {e!r}; choose from {', '.join(SEARCH_ENGINES)}")
    if engines and not keywords:
        raise ValueError("search engines need at least one --keyword (or --keywords-file)")
    if "flickr" in engines and not os.environ.get("FLICKR_APIKEY"):
        raise ValueError("the flickr engine needs an API key in the FLICKR_APIKEY environment variable")
    for s in sites:
        site_url(s)
    for f in url_files:
        read_list(f, "--urls")
    for folder in folders:
        if not Path(folder).is_dir():
            raise ValueError(f"--from-dir {folder}: not a folder")
    refuse_overlap(out, folders)


# -- crawling -------------------------------------------------------------------------------------

def crawl_engine(store: ImageStore, stats: CrawlStats, engine: str, keyword: str, opts: CrawlOptions,
                 session_hook=None) -> None:
    """One icrawler crawl of ``engine`` for ``keyword`` (a search term, a site URL or a URL-list file).
    Every image URL handed to the downloader ends in the manifest or in rejected.jsonl."""
    feeder_cls, parser_cls = PARSERS[engine]
    key = (engine, keyword)
    session = DeadlineSession(opts.deadline, USER_AGENT)
    if session_hook:
        session.trust_env = False
        session_hook(session)
    parser_args, robots = {}, None
    if engine == "flickr":
        apikey = os.environ.get("FLICKR_APIKEY", "")
        feeder_kwargs = dict(apikey=apikey, max_num=opts.max_num * 2, text=keyword)
        parser_kwargs = dict(apikey=apikey)
    elif engine == "site":
        feeder_kwargs, parser_kwargs = dict(url=keyword), {}
        # one for pages and images: the downloader asks it of every host an image's redirect reaches
        robots = Robots(session, ROBOTS_AGENT, opts.timeout, opts.deadline) if opts.robots else None
        parser_args = dict(store=store, max_depth=opts.max_depth, max_pages=opts.max_pages, timeout=opts.timeout,
                           deadline=opts.deadline, max_bytes=opts.max_bytes, robots=robots)
    elif engine == "urls":
        urls = read_list(Path(keyword), "--urls")
        for url in urls:
            stats.offer(key, url)
        feeder_kwargs, parser_kwargs = dict(urls=urls), {}
    else:  # ask for twice what we keep: some links always fail or are duplicates
        feeder_kwargs = dict(keyword=keyword, offset=0, max_num=min(1000, opts.max_num * 2))
        parser_kwargs = {}
    c = Crawler(feeder_cls=feeder_cls, parser_cls=parser_cls, downloader_cls=CheckedDownloader,
                downloader_threads=opts.threads, storage={"backend": "FileSystem", "root_dir": str(store.images)},
                log_level=logging.CRITICAL, extra_parser_args={**parser_args, "stats": stats, "key": key},
                extra_downloader_args=dict(store=store, stats=stats, key=key, max_kept=opts.max_num,
                                           max_bytes=opts.max_bytes, deadline=opts.deadline, delay=opts.delay,
                                           robots=robots))
    c.session = c.feeder.session = c.parser.session = c.downloader.session = session
    try:
        c.crawl(feeder_kwargs=feeder_kwargs,
                parser_kwargs={**parser_kwargs, "queue_timeout": 1, "req_timeout": opts.timeout,
                               "max_retry": opts.retries},
                downloader_kwargs=dict(max_num=0, queue_timeout=1, req_timeout=opts.timeout,
                                       max_retry=opts.retries))
    finally:
        c.signal.set(reach_max_num=True)  # releases feeders and parsers still waiting on a queue
    # icrawler's downloader threads give up on a queue that stayed empty while they were all held by
    # slow servers; what they left is fetched here, one by one, unless --max was reached
    for url in stats.unhandled(key):
        if c.downloader.kept_here >= opts.max_num:
            break
        c.downloader.download({"file_url": url}, None, timeout=opts.timeout, max_retry=opts.retries)
    for url in stats.unhandled(key):
        stats.reject(key, "not-fetched")
        store.reject(url, engine, keyword, "not-fetched", f"--max {opts.max_num} was reached first")


def import_folder(store: ImageStore, stats: CrawlStats, folder: Path, progress, max_bytes: int) -> None:
    """A user's own photos through the same checks, so every source ends in the same place. Every
    entry named like an image is accounted for; one that cannot be read is recorded and skipped."""
    key = ("dir", str(folder))
    entries = sorted(p for p in Path(folder).rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    with progress(len(entries), f"importing {folder}") as advance:
        for f in entries:
            url = (f.resolve() if f.is_file() else f.absolute()).as_uri()
            stats.add(key, "links")
            if store.seen(url):
                stats.add(key, "known")
            else:
                data, problem = read_regular_file(f, max_bytes)
                if problem:
                    stats.reject(key, problem[0])
                    store.reject(url, "dir", str(folder), *problem)
                else:
                    stats.add(key, "downloaded")
                    verdict = store.add(data, url, "dir", str(folder))
                    if verdict.kept:
                        stats.add(key, "kept")
                    else:
                        stats.reject(key, verdict.reason)
            advance(1)


def read_regular_file(path: Path, max_bytes: int) -> tuple[bytes | None, tuple[str, str] | None]:
    """(bytes, None) or (None, (reason, detail)). A FIFO (whose open or read would wait forever) or a
    folder named x.jpg is refused, never read (stampcheck.files)."""
    try:
        fh = open_regular(path)
    except NotAFile as e:
        return None, ("not-a-file", e.kind)
    except OSError as e:
        return None, ("unreadable", f"{e.strerror or e}" + (" (a broken link)" if path.is_symlink() else ""))
    with fh:
        size = os.fstat(fh.fileno()).st_size
        if size > max_bytes:
            return None, ("too-big", f"{size} bytes > {max_bytes}")
        try:
            return fh.read(), None
        except OSError as e:
            return None, ("unreadable", f"{e.strerror or e}")


def empty_engines(stats: CrawlStats) -> list[str]:
    """Warnings for every (engine, keyword) that found no image link at all."""
    out = []
    for (engine, keyword), row in sorted(stats.rows.items()):
        if engine == "site" and row["links"] == 0:
            out.append(f"site {keyword} gave no image links ({row['pages']} pages read): rejected.jsonl says why "
                       "for each page it could not read; --max-depth, --max-pages or --ignore-robots may help")
        elif engine in SUGGEST and row["links"] == 0:
            out.append(f"{engine} found no image links for {keyword!r} ({row['pages']} result pages parsed): "
                       f"its page layout may have changed or the search had no results; "
                       f"try --engine {SUGGEST[engine]}")
    return out


def run_crawl(out: Path, keywords: list[str], engines: list[str], sites: list[str], url_files: list[Path],
              folders: list[Path], opts: CrawlOptions, store: ImageStore, progress, session_hook=None) -> CrawlStats:
    """Every requested source into ``store``; returns the counts for the summary table."""
    check_request(out, keywords, engines, sites, url_files, folders)
    jobs = [(e, k) for e in engines for k in keywords] + [("site", site_url(s)) for s in sites] + \
           [("urls", str(f)) for f in url_files]
    stats = CrawlStats()
    with progress(len(jobs), "crawling") as advance:
        for engine, keyword in jobs:
            crawl_engine(store, stats, engine, keyword, opts, session_hook)
            advance(1)
    for folder in folders:
        import_folder(store, stats, folder, progress, opts.max_bytes)
    return stats
