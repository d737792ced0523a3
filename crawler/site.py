"""The whole-site crawl: icrawler's greedy feeder -> parser -> downloader shape, with a parser that
reads pages as shops write them and keeps to the site's rules.

Images: ``<img src>`` (relative too), the largest ``srcset`` candidate, lazy-loading ``data-src``
and friends, ``<picture><source srcset>``, ``og:image``/``twitter:image`` and links to image files.
Pages: only links on the given host (or the host it redirects to), at most ``max_depth`` links
away and ``max_pages`` in all. robots.txt is read once per host and obeyed for pages and images, and
for every URL a redirect leads to, before it is requested.
"""

from __future__ import annotations

import threading
from collections import deque
from pathlib import PurePosixPath
from urllib.parse import urldefrag, urljoin, urlsplit

from bs4 import BeautifulSoup
from icrawler import Feeder
from icrawler.builtin.greedy import GreedyParser
from PIL import Image
from protego import Protego

from stampcheck.crawler.http import fetch_trying
from stampcheck.crawler.parsers import CountingParser, fed, hand_over
from stampcheck.images import IMAGE_SUFFIXES

LAZY_ATTRS = ("data-src", "data-original", "data-lazy-src", "data-lazy", "data-url", "src")
META_IMAGES = {"og:image", "og:image:url", "og:image:secure_url", "twitter:image", "twitter:image:src"}
# Links to these are files, not pages: not worth a request.
NOT_PAGES = {".pdf", ".zip", ".gz", ".css", ".js", ".json", ".xml", ".mp4", ".mp3", ".svg", ".ico", ".woff",
             ".woff2", ".ttf", ".exe", ".dmg", ".doc", ".docx", ".xls", ".xlsx", ".rss", ".txt", ".csv"}


def srcset(value: str | None) -> list[tuple[str, float, float]]:
    """``srcset`` candidates as (url, width, density): "a.jpg 800w, b.jpg 2x". A URL may hold commas
    (image CDNs use them), so a candidate's URL runs to the next whitespace, as browsers read it."""
    out, i, n = [], 0, len(value or "")
    while i < n:
        while i < n and (value[i].isspace() or value[i] == ","):
            i += 1
        start = i
        while i < n and not value[i].isspace():
            i += 1
        url, descriptors = value[start:i], ""
        if url.endswith(","):
            url = url.rstrip(",")
        else:
            end = value.find(",", i)
            end = n if end < 0 else end
            descriptors, i = value[i:end], end + 1
        width, density = 0.0, 1.0
        for d in descriptors.split():
            try:
                if d.endswith("w"):
                    width = float(d[:-1])
                elif d.endswith("x"):
                    density = float(d[:-1])
            except ValueError:
                pass
        if url:
            out.append((url, width, density))
    return out


def largest(candidates: list[tuple[str, float, float]]) -> str | None:
    return max(candidates, key=lambda c: (c[1], c[2]))[0] if candidates else None


def _readable(source) -> bool:
    """A ``<source type=...>`` Pillow cannot open is skipped for the same picture in another format."""
    kind = (source.get("type") or "").split(";")[0].strip().lower()
    if not kind:
        return True
    Image.init()
    return kind in Image.MIME.values()


def _element_image(tag) -> str | None:
    """The one URL that shows an ``<img>`` at its best: the largest srcset candidate, else the
    lazy-loading attribute that holds the real picture (``src`` is then a placeholder), else src."""
    best = largest(srcset(tag.get("srcset")) + srcset(tag.get("data-srcset")))
    if best:
        return best
    for attr in LAZY_ATTRS:
        value = (tag.get(attr) or "").strip()
        if value and not value.startswith("data:"):
            return value
    return None


def page_links(content: bytes, url: str) -> tuple[list[str], list[str]]:
    """(image URLs, page URLs) of one HTML page, absolute, without fragments, in page order."""
    soup = BeautifulSoup(content, "lxml")
    base = soup.find("base", href=True)
    base = urljoin(url, base["href"]) if base else url
    found_images = []
    for meta in soup.find_all("meta", content=True):
        if (meta.get("property") or meta.get("name") or "").lower() in META_IMAGES:
            found_images.append(meta["content"])
    in_pictures = set()
    for picture in soup.find_all("picture"):
        candidates = []
        for source in picture.find_all("source"):
            if _readable(source):
                candidates += srcset(source.get("srcset")) + srcset(source.get("data-srcset"))
        for img in picture.find_all("img"):
            in_pictures.add(id(img))
            src = _element_image(img)
            candidates += srcset(img.get("srcset")) or ([(src, 0.0, 1.0)] if src else [])
        if candidates:
            found_images.append(largest(candidates))
    found_images += [_element_image(img) for img in soup.find_all("img") if id(img) not in in_pictures]
    found_pages = []
    for a in soup.find_all(["a", "area"], href=True):
        link = _absolute(base, a["href"])
        if link:
            suffix = PurePosixPath(urlsplit(link).path).suffix.lower()
            if suffix in IMAGE_SUFFIXES:
                found_images.append(link)
            elif suffix not in NOT_PAGES:
                found_pages.append(link)
    images = [u for u in (_absolute(base, i) for i in found_images if i) if u]
    return list(dict.fromkeys(images)), list(dict.fromkeys(found_pages))


def _absolute(base: str, link: str) -> str | None:
    try:
        url = urldefrag(urljoin(base, link.strip())).url
    except ValueError:  # e.g. a malformed IPv6 host
        return None
    return url if urlsplit(url).scheme in ("http", "https") else None


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc.lower()}"


class Robots:
    """robots.txt, fetched once per host (scheme, name and port) through the crawl's session
    (RFC 9309: 4xx means no rules, 401/403, a server error or no answer mean stay out). Asked by the
    parser and by every downloader thread, for each URL and each URL a redirect leads to."""

    def __init__(self, session, agent: str, timeout: float, deadline: float):
        self.session, self.agent, self.timeout, self.deadline = session, agent, timeout, deadline
        self.rules: dict[str, HostRules] = {}
        self.why: dict[str, tuple[str, str]] = {}  # origin -> (reason, detail) when no robots.txt lets us in
        self.lock = threading.Lock()
        self.loading: dict[str, threading.Lock] = {}  # one per origin: a slow host holds up only its own URLs

    def allowed(self, url: str) -> bool:
        origin = _origin(url)
        with self.lock:
            loading = self.loading.setdefault(origin, threading.Lock())
        with loading:
            if origin not in self.rules:
                self.rules[origin] = self._load(origin)
        return self.rules[origin].can_fetch(self.agent, url)

    def refusal(self, url: str) -> tuple[str, str] | None:
        """None when ``url`` may be fetched, else its rejection (reason, detail)."""
        if self.allowed(url):
            return None
        origin = _origin(url)
        return self.why.get(origin, ("robots", f"disallowed by {origin}/robots.txt"))

    def _load(self, origin: str) -> HostRules:
        got = fetch_trying(self.session, origin + "/robots.txt", self.timeout, 500_000, self.deadline)
        if got.problem is None:
            return HostRules(Protego.parse(got.content.decode("utf-8-sig", "replace")))  # a BOM is no rule
        if 400 <= got.status < 500 and got.status not in (401, 403):
            return HostRules(allow=True)
        # the host's own problem (no answer, a timeout) says more than "robots"
        reason = got.problem[0] if got.problem[0] in ("connection-error", "timeout") else "robots"
        self.why[origin] = reason, f"{origin}/robots.txt unavailable ({got.problem[1]}): host not crawled"
        return HostRules(allow=False)


class HostRules:
    """One host's answer: its robots.txt read by protego (Scrapy's parser: RFC 9309's ``*`` and ``$``
    and the longest matching rule, which the standard library's parser lacks), or all or nothing."""

    def __init__(self, parsed: Protego | None = None, allow: bool = False):
        self.parsed, self.allow = parsed, allow

    def can_fetch(self, agent: str, url: str) -> bool:
        return self.parsed.can_fetch(url, agent) if self.parsed is not None else self.allow


class SiteFeeder(Feeder):
    def feed(self, url: str):
        self.output(url)


class SiteParser(CountingParser, GreedyParser):
    """Breadth-first over one site from the URL the feeder gives; counts its own pages. The frontier
    lives here, not on
    icrawler's bounded page queue, which a single parser thread that feeds itself can fill and then
    wait on forever."""

    def __init__(self, *args, store, robots: Robots | None, max_depth: int, max_pages: int, timeout: float,
                 deadline: float, max_bytes: int, **kwargs):
        super().__init__(*args, **kwargs)
        self.store, self.robots = store, robots
        self.max_depth, self.max_pages = max_depth, max_pages
        self.timeout, self.deadline, self.max_bytes = timeout, deadline, max_bytes

    def parse(self, response, **kwargs):
        """What GreedyParser.parse yields: a dict per image, a URL string per page link."""
        images, pages = page_links(response.content, response.url)
        yield from ({"file_url": u} for u in images)
        yield from pages

    def worker_exec(self, queue_timeout=2, **kwargs):
        for start in fed(self, queue_timeout):
            self.crawl_site(start)

    def crawl_site(self, start: str) -> None:
        hosts = {urlsplit(start).netloc.lower()}
        frontier, queued, offered, fetched = deque([(start, 0)]), {start}, set(), 0
        while frontier and fetched < self.max_pages and not self.signal.get("reach_max_num"):
            url, depth = frontier.popleft()
            if not self._allowed(url):
                continue
            page = fetch_trying(self.session, url, self.timeout, self.max_bytes, self.deadline,
                                self.robots.refusal if self.robots else None,
                                stop=lambda: self.signal.get("reach_max_num"))
            fetched += 1
            if page.problem:
                self._reject(url, *page.problem)
                continue
            if fetched == 1:  # shop.example -> www.shop.example or https: the same site
                hosts.add(urlsplit(page.url).netloc.lower())
            if page.content_type and "html" not in page.content_type.lower():
                continue
            self.stats.add(self.key, "pages")
            for item in self.parse(page):
                if isinstance(item, dict):
                    if item["file_url"] in offered:
                        continue
                    offered.add(item["file_url"])
                    if not self._allowed(item["file_url"]):
                        self.stats.add(self.key, "links")
                    elif not hand_over(self, item):
                        return
                elif depth < self.max_depth and item not in queued and urlsplit(item).netloc.lower() in hosts:
                    queued.add(item)
                    frontier.append((item, depth + 1))

    def _allowed(self, url: str) -> bool:
        refusal = self.robots.refusal(url) if self.robots else None
        if refusal:
            self._reject(url, *refusal)
        return refusal is None

    def _reject(self, url: str, reason: str, detail: str) -> None:
        self.stats.reject(self.key, reason)
        self.store.reject(url, *self.key, reason, detail)
