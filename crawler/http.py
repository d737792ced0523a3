"""The crawl's HTTP: a requests session whose every request, redirects and retries included, ends
within a wall-clock deadline (a server dripping one byte at a time satisfies every per-read
timeout), a GET with a byte cap that asks robots.txt before each redirect, and when to ask again."""

from __future__ import annotations

import socket
import threading
import time
from dataclasses import dataclass
from urllib.parse import urldefrag, urljoin, urlsplit

import requests
import urllib3
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.util.retry import Retry


# -- a deadline from connect to last byte ---------------------------------------------------------

_current = threading.local()


class Deadline:
    """Wall-clock limit on one thread's requests inside the block. A server that sends one byte at a
    time satisfies every per-read timeout forever; when this one passes, the sockets the block opened
    or used are shut down, which wakes any read blocked on them."""

    def __init__(self, seconds: float):
        self.seconds = seconds
        self.expired = False
        self.lock = threading.Lock()
        self.sockets: list[socket.socket] = []
        self.timer = threading.Timer(seconds, self._expire)
        self.timer.daemon = True

    def __enter__(self):
        self.outer, _current.deadline = getattr(_current, "deadline", None), self
        self.timer.start()
        return self

    def __exit__(self, *exc):
        with self.lock:
            self.timer.cancel()
            self.sockets.clear()  # back in the pool, maybe soon used by another thread: not ours to stop
        _current.deadline = self.outer

    def watch(self, sock: socket.socket) -> None:
        with self.lock:
            self.sockets.append(sock)
            if self.expired:
                _shut(sock)

    def _expire(self) -> None:
        with self.lock:
            self.expired = True
            for sock in self.sockets:
                _shut(sock)


def _shut(sock: socket.socket) -> None:
    try:  # the plain socket's shutdown: SSLSocket's own would drop its SSL state under the reader
        socket.socket.shutdown(sock, socket.SHUT_RDWR)
    except OSError:
        pass


def _watch(sock) -> None:
    deadline = getattr(_current, "deadline", None)
    if deadline is not None and sock is not None:
        deadline.watch(sock)


class _Watched:
    """Hands each socket to the thread's Deadline: a new one as soon as it exists (before TLS), a
    pooled one when a request starts on it."""

    def _new_conn(self):
        sock = super()._new_conn()
        _watch(sock)
        return sock

    def request(self, *args, **kwargs):
        _watch(self.sock)
        return super().request(*args, **kwargs)


class _WatchedHTTPConnection(_Watched, HTTPConnection):
    pass


class _WatchedHTTPSConnection(_Watched, HTTPSConnection):
    pass


class _WatchedHTTPPool(HTTPConnectionPool):
    ConnectionCls = _WatchedHTTPConnection


class _WatchedHTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _WatchedHTTPSConnection


WATCHED_POOLS = {"http": _WatchedHTTPPool, "https": _WatchedHTTPSPool}


class WatchedAdapter(HTTPAdapter):
    def init_poolmanager(self, *args, **kwargs):
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = WATCHED_POOLS

    def proxy_manager_for(self, proxy, **kwargs):
        manager = super().proxy_manager_for(proxy, **kwargs)
        if type(manager) is urllib3.ProxyManager:  # a SOCKS manager has pools of its own
            manager.pool_classes_by_scheme = WATCHED_POOLS
        return manager


class DeadlineSession(requests.Session):
    """Every request, the search engines' result pages included, ends within ``deadline`` seconds.
    A streamed body is read after request() returns: :func:`fetch` holds the Deadline for it."""

    def __init__(self, deadline: float, user_agent: str):
        super().__init__()
        self.deadline = deadline
        self.headers.update({"User-Agent": user_agent, "Accept-Language": "en-US,en;q=0.8"})
        self.mount("http://", WatchedAdapter())
        self.mount("https://", WatchedAdapter())

    def resolve_redirects(self, resp, req, *args, yield_requests=False, **kwargs):
        if yield_requests:  # only for Response.next, which nothing here reads: making it would read
            return iter(())  # the redirect's whole body, with no byte cap
        return super().resolve_redirects(resp, req, *args, **kwargs)

    def request(self, *args, **kwargs):
        if kwargs.get("stream") or getattr(_current, "deadline", None) is not None:
            return super().request(*args, **kwargs)
        with Deadline(self.deadline) as d:
            try:
                return super().request(*args, **kwargs)
            except requests.RequestException as e:
                if d.expired:
                    raise requests.Timeout(f"not complete after {self.deadline:g} s") from e
                raise


# -- fetching -------------------------------------------------------------------------------------

@dataclass
class Fetched:
    """One GET: the body or why there is none. ``content`` and ``url`` (after redirects) are what an
    icrawler parser reads from a response."""
    content: bytes | None
    problem: tuple[str, str] | None
    url: str
    status: int = 0
    content_type: str = ""
    retry_after: str = ""  # the server's Retry-After header, on an answer other than 200


MAX_REDIRECTS = 30  # as requests allows


def fetch(session: requests.Session, url: str, timeout: float, max_bytes: int, deadline: float,
          check=None) -> Fetched:
    """GET ``url`` with a byte cap and a deadline from connect to last byte, redirects included.
    Redirects are followed here, one request at a time, so that ``check(url)``, when given, says
    before each one whether it may be made: None, or the (reason, detail) that refuses it (robots.txt
    of the host a redirect leads to). A redirect's own body is never read."""
    if urlsplit(url).scheme not in ("http", "https"):
        return Fetched(None, ("bad-scheme", "only http and https URLs are fetched"), url)
    status, final, kind = 0, url, ""
    with Deadline(deadline) as d:
        try:
            for _ in range(MAX_REDIRECTS + 1):
                with session.get(final, timeout=timeout, stream=True, allow_redirects=False) as r:
                    status, kind = r.status_code, r.headers.get("Content-Type", "")
                    target = session.get_redirect_target(r)
                    if target is None:
                        return _body(r, final, max_bytes, d)
                final = urldefrag(urljoin(final, target)).url
                if urlsplit(final).scheme not in ("http", "https"):
                    return Fetched(None, ("bad-scheme", f"redirected to {final}: only http and https URLs are "
                                          "fetched"), final, status, kind)
                problem = check(final) if check else None
                if problem:
                    return Fetched(None, (problem[0], f"redirected to {final}: {problem[1]}"), final, status, kind)
            return Fetched(None, ("http-error", "redirect loop"), final, status, kind)
        except Exception as e:  # noqa: BLE001 - every failure of one URL becomes its reason
            return Fetched(None, _why(e, d, timeout), final, status, kind)


def _body(r, url: str, max_bytes: int, d: Deadline) -> Fetched:
    """The body of ``r``, the answer (not a redirect) from ``url``, read up to ``max_bytes``."""
    status, kind = r.status_code, r.headers.get("Content-Type", "")
    if status != 200:
        return Fetched(None, ("http-error", f"status {status}"), url, status, kind, r.headers.get("Retry-After", ""))
    length = r.headers.get("Content-Length", "")
    if length.isdigit() and int(length) > max_bytes:
        return Fetched(None, ("too-big", f"{length} bytes > {max_bytes}"), url, status, kind)
    chunks, total = [], 0
    while chunk := r.raw.read1(65536, decode_content=True):
        total += len(chunk)
        if total > max_bytes:
            return Fetched(None, ("too-big", f"over {max_bytes} bytes"), url, status, kind)
        chunks.append(chunk)
    if d.expired:  # a shut-down socket reads as a body that simply ended
        raise TimeoutError
    return Fetched(b"".join(chunks), None, url, status, kind)


def _why(e: Exception, d: Deadline, timeout: float) -> tuple[str, str]:
    if d.expired:
        return "timeout", f"not complete after {d.seconds:g} s"
    if isinstance(e, requests.exceptions.Timeout):
        return "timeout", f"no answer within {timeout:g} s"
    if isinstance(e, (requests.RequestException, urllib3.exceptions.HTTPError, OSError)):
        return "connection-error", f"{type(e).__name__}: {e}"[:300]
    return "error", f"{type(e).__name__}: {e}"[:300]


# A server that is busy (429, 503) or failing for a moment (500, 502, 504) is asked again, after the
# time its Retry-After asks for, else after a backoff doubling from BACKOFF seconds; connection errors
# too. Never past the URL's --deadline: a longer wait gives up at once.
RETRY = Retry(total=None, status_forcelist=(429, 500, 502, 503, 504), respect_retry_after_header=True,
              allowed_methods=("GET",))
BACKOFF = 0.5


def retry_wait(got: Fetched, attempt: int) -> float | None:
    """Seconds to wait before asking for ``got``'s URL again (``attempt`` tries made, less one), or None
    when asking again would not help (it came, or the answer is final: 404, too big, not an image)."""
    if got.problem is None:
        return None
    backoff = BACKOFF * 2 ** attempt
    if got.problem[0] == "connection-error":
        return backoff
    if got.problem[0] != "http-error" or not RETRY.is_retry("GET", got.status, bool(got.retry_after)):
        return None
    if got.retry_after:
        try:
            return max(0.0, RETRY.parse_retry_after(got.retry_after))
        except urllib3.exceptions.InvalidHeader:  # not seconds nor a date: as if it were not there
            pass
    return backoff


TRIES = 3  # of one URL, within its deadline (CrawlOptions.retries sets the downloader's)


def fetch_trying(session: requests.Session, url: str, timeout: float, max_bytes: int, deadline: float, check=None,
                 tries: int = TRIES, stop=lambda: False) -> Fetched:
    """:func:`fetch`, asked again as :func:`retry_wait` says, up to ``tries`` times, all within
    ``deadline`` seconds; a wait past the deadline, the last try or ``stop()`` ends it."""
    start = time.monotonic()
    for attempt in range(max(1, tries)):
        got = fetch(session, url, timeout, max_bytes, deadline - (time.monotonic() - start), check)
        wait = retry_wait(got, attempt)
        if wait is None or attempt == max(1, tries) - 1 or stop():
            break
        if wait + 1 > deadline - (time.monotonic() - start):
            if got.retry_after:
                got.problem = (got.problem[0], f"{got.problem[1]}, Retry-After {got.retry_after} is past the --deadline")
            break
        time.sleep(wait)
    return got
