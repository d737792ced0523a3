"""icrawler's feeders and parsers made strict: parsers that count the result pages and links they
find, and never block for good on a full queue once the crawl has stopped."""

from __future__ import annotations

import queue

from icrawler import Feeder, Parser
from icrawler.builtin.baidu import BaiduParser
from icrawler.builtin.bing import BingParser
from icrawler.builtin.flickr import FlickrParser
from icrawler.builtin.google import GoogleParser

from stampcheck.crawler.stats import CrawlStats


def fed(parser, queue_timeout: float):
    """The feeder's URLs as they come, until the crawl stops, or the feeder is done and none is left."""
    while not parser.signal.get("reach_max_num"):
        try:
            yield parser.in_queue.get(timeout=queue_timeout)
        except queue.Empty:
            if parser.signal.get("feeder_exited"):
                return


def hand_over(parser, task: dict) -> bool:
    """Put one image task on the downloader's queue, waiting while it is full; False once the crawl
    has stopped (the URL then counts as offered but not fetched)."""
    parser.stats.offer(parser.key, task["file_url"])
    while not parser.signal.get("reach_max_num"):
        try:
            parser.output(task, timeout=1)
            return True
        except queue.Full:
            continue
    return False


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

    def output(self, task, block=True, timeout=None):
        if isinstance(task, dict):
            self.stats.offer(self.key, task["file_url"])
        super().output(task, block, timeout)


class CountingBingParser(CountingParser, BingParser):
    pass


class CountingGoogleParser(CountingParser, GoogleParser):
    pass


class CountingBaiduParser(CountingParser, BaiduParser):
    pass


class CountingFlickrParser(CountingParser, FlickrParser):
    pass


class ListFeeder(Feeder):
    """icrawler's UrlListFeeder reads the file itself, in the locale's encoding, inside its thread;
    ours gets the list the command already read and checked."""

    def feed(self, urls: list[str]):
        for url in urls:
            while not self.signal.get("reach_max_num"):
                try:
                    self.output(url, timeout=1)
                    break
                except queue.Full:
                    continue


class ListParser(CountingParser, Parser):
    """Each URL of the list is an image task (icrawler's PseudoParser, but never blocked for good
    on a full queue once the crawl has stopped)."""

    def worker_exec(self, queue_timeout=2, **kwargs):
        for url in fed(self, queue_timeout):
            hand_over(self, {"file_url": url})
