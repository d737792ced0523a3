"""`stampcheck crawl` against what users and hostile servers really do: the CLI for real,
servers on 127.0.0.1, every input accounted for, nothing it did not write changed or removed."""

import email.utils
import hashlib
import json
import os
import stat
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from stampcheck.crawler.run import CrawlOptions, run_crawl
from stampcheck.crawler.store import ImageStore
from stampcheck import errors
from stampcheck.images import ImageLimits
from stampcheck.progress import no_progress
from tests.conftest import photo
from tests.test_crawl import jpeg

ROOT = Path(__file__).resolve().parents[1]


def cli(*args, timeout=60):
    """Run `python -m stampcheck crawl ARGS`; return (result, seconds)."""
    start = time.monotonic()
    r = subprocess.run([sys.executable, "-m", "stampcheck", "crawl", *map(str, args)], capture_output=True,
                       text=True, cwd=ROOT, timeout=timeout)
    return r, time.monotonic() - start


def clean(r) -> str:
    text = r.stdout + r.stderr
    assert "Traceback" not in text, text
    return text


def tree(folder: Path) -> dict[str, str]:
    """Every entry under ``folder`` by relative path: a regular file's sha256, else what it is. Never
    opens anything but regular files (a FIFO would block)."""
    out = {}
    for p in sorted(folder.rglob("*")):
        mode = p.lstat().st_mode
        rel = str(p.relative_to(folder))
        if stat.S_ISLNK(mode):
            out[rel] = "link -> " + os.readlink(p)
        elif stat.S_ISREG(mode):
            out[rel] = hashlib.sha256(p.read_bytes()).hexdigest()
        else:
            out[rel] = "dir" if stat.S_ISDIR(mode) else "special"
    return out


def lines(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []


def accounted(out: Path) -> dict[str, str]:
    """Every URL the outputs speak of: 'kept' or its last rejection reason."""
    seen = {r["url"]: r["reason"] for r in lines(out / "rejected.jsonl")}
    seen.update({k["url"]: "kept" for k in lines(out / "manifest.jsonl")})
    return seen


def by_name(out: Path) -> dict[str, str]:
    return {Path(urlsplit(u).path).name: reason for u, reason in accounted(out).items()}


# -- 1. a user's photos under --out, bad files under --from-dir ----------------------------------

def hostile_folder(folder: Path) -> dict[str, str]:
    """Good photos and entries that cannot be read as files; returns {name: expected outcome}."""
    folder.mkdir()
    for i in range(3):
        photo(40 + i).save(folder / f"good{i}.jpg", quality=90)
    (folder / "nested.jpg").mkdir()  # a folder named like a photo, with a photo inside
    photo(50).save(folder / "nested.jpg" / "inner.jpg", quality=90)
    os.mkfifo(folder / "pipe.jpg")  # opening it would block forever
    (folder / "dangling.jpg").symlink_to(folder / "gone.jpg")
    (folder / "bad.jpg").write_bytes(b"not a picture")
    return {"good0.jpg": "kept", "good1.jpg": "kept", "good2.jpg": "kept", "inner.jpg": "kept",
            "nested.jpg": "not-a-file", "pipe.jpg": "not-a-file", "dangling.jpg": "unreadable",
            "bad.jpg": "not-an-image"}


@pytest.mark.slow
def test_crawl_never_removes_a_users_files_and_skips_unreadable_ones(tmp_path):
    photos = tmp_path / "photos"
    (photos / "images").mkdir(parents=True)
    for i in range(30):
        photo(i).save(photos / "images" / f"IMG_{i:04d}.jpg", quality=85)
    (photos / "images" / ".draft.part").write_text("a user's hidden file, not one of our temporary names")
    mine = tmp_path / "mine"
    expected = hostile_folder(mine)
    users, inputs = tree(photos), tree(mine)

    for run in range(2):  # the second run starts from a manifest that lists none of the user's photos
        r, _ = cli("--from-dir", mine, "--out", photos, "--min-size", "64")
        text = clean(r)
        assert r.returncode == errors.OK, text
        after = tree(photos)
        assert {k: after.get(k) for k in users} == users  # every file of the user's, byte for byte
        assert tree(mine) == inputs
        assert by_name(photos) == expected
        assert "31 files" in text and "left as they are" in " ".join(text.split())
    kept = lines(photos / "manifest.jsonl")
    assert len(kept) == 4 and all((photos / "images" / k["file"]).is_file() for k in kept)


def test_crawl_that_keeps_nothing_exits_crawl_empty(tmp_path):
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "x.jpg").write_bytes(b"<html>not found</html>")
    r, _ = cli("--from-dir", bad, "--out", tmp_path / "out")
    assert r.returncode == errors.CRAWL_EMPTY, clean(r)
    assert by_name(tmp_path / "out") == {"x.jpg": "not-an-image"}


@pytest.mark.slow
def test_bad_inputs_and_overlapping_folders_are_usage_errors(tmp_path):
    photos = tmp_path / "photos"
    (photos / "images").mkdir(parents=True)
    photo(1).save(photos / "images" / "a.jpg")
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "manifest.jsonl").write_text("someone else's notes\nnot ours\n")
    (tmp_path / "latin1.txt").write_bytes("http://127.0.0.1:9/caf\xe9.jpg\n".encode("latin-1"))
    os.mkfifo(tmp_path / "fifo.txt")
    before = tree(tmp_path)
    cases = [
        ("--from-dir", photos / "images", "--out", photos),      # the reported data loss
        ("--from-dir", photos, "--out", photos / "crawled"),
        ("--from-dir", photos, "--out", foreign),                # a manifest.jsonl crawl did not write
        ("--from-dir", tmp_path / "no-such-dir", "--out", tmp_path / "o1"),
        ("--urls", tmp_path / "missing.txt", "--out", tmp_path / "o2"),
        ("--urls", tmp_path / "latin1.txt", "--out", tmp_path / "o3"),
        ("--urls", tmp_path / "fifo.txt", "--out", tmp_path / "o4"),
        ("--keywords-file", tmp_path / "missing.txt", "--out", tmp_path / "o7"),
        ("--keywords-file", tmp_path / "latin1.txt", "--out", tmp_path / "o8"),
        ("-k", "cats", "--engine", "altavista", "--out", tmp_path / "o10"),
    ]
    procs = [subprocess.Popen([sys.executable, "-m", "stampcheck", "crawl", *map(str, c)], cwd=ROOT, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE) for c in cases]
    for case, p in zip(cases, procs):
        out, err = p.communicate(timeout=60)
        text = out + err
        assert p.returncode == errors.USAGE and "Traceback" not in text, (case, p.returncode, text)
        assert [x for x in text.splitlines() if x.strip()] == [text.strip()] and text.startswith("error:"), (case, text)
    assert tree(tmp_path) == before  # nothing written, nothing changed


# -- 2 and 3. a URL list with lying and dripping servers -----------------------------------------

class Hostile(BaseHTTPRequestHandler):
    files: dict = {}
    requests: list = []
    drip = 0.4

    def log_message(self, *a):
        pass

    def do_GET(self):
        path = urlsplit(self.path).path
        self.requests.append((self.headers.get("Host", "").split(":")[0], path))
        if path == "/drip.jpg":  # one header byte at a time: each read succeeds, none ends the response
            try:
                self.wfile.write(b"HTTP/1.1 200 OK\r\nX-Slow: ")
                while True:
                    self.wfile.write(b"a")
                    self.wfile.flush()
                    time.sleep(self.drip)
            except OSError:
                return
        body = self.files.get(path)
        if callable(body):
            body = body(self)
        if body is None:
            self.send_response(404)
            self.end_headers()
            return
        if isinstance(body, tuple):  # (status, headers): an answer other than 200, without a body
            self.send_response(body[0])
            for name, value in {**body[1], "Content-Length": "0"}.items():
                self.send_header(name, value)
            self.end_headers()
            return
        if path.startswith("/short"):  # promises more than it sends, then closes
            self.send_response(200)
            self.send_header("Content-Length", str(len(body) + 5000))
            self.end_headers()
            self.wfile.write(body)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Content-Type", "text/html" if path.endswith((".html", "/")) else
                         "text/plain" if path.endswith(".txt") else "image/jpeg")
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def hostile():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Hostile)
    httpd.daemon_threads = True
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    Hostile.files, Hostile.requests = {}, []
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


def answers(*first, then):
    """A path that answers each of ``first`` in turn, then ``then`` for ever; the times it was asked."""
    times = []

    def answer(handler):
        times.append(time.monotonic())
        out = first[len(times) - 1] if len(times) <= len(first) else then
        return out() if callable(out) else out
    return answer, times


@pytest.mark.slow
def test_a_busy_server_is_asked_again_when_it_says_and_never_past_the_deadline(hostile, tmp_path):
    def in_2_s():  # an HTTP date (whole seconds): 1-2 s after it is asked
        return 503, {"Retry-After": email.utils.formatdate(time.time() + 2, usegmt=True)}

    script = {"/busy.jpg": answers((503, {"Retry-After": "1"}), then=jpeg(photo(90))),
              "/date.jpg": answers(in_2_s, then=jpeg(photo(91))),
              "/slow-down.jpg": answers((429, {}), (502, {}), then=jpeg(photo(92))),
              "/closed.jpg": answers(then=(503, {"Retry-After": "3600"})),
              "/gone.jpg": answers(then=None)}
    Hostile.files.update({path: answer for path, (answer, _) in script.items()})
    listing = tmp_path / "urls.txt"
    listing.write_text("".join(f"{hostile}{path}\n" for path in script))
    start = time.monotonic()
    r, _ = cli("--urls", listing, "--out", tmp_path / "out", "--min-size", "64", "--timeout", "2",
               "--deadline", "6", timeout=90)
    assert r.returncode == errors.OK, clean(r)
    got = {urlsplit(u).path: reason for u, reason in accounted(tmp_path / "out").items()}
    assert got == {"/busy.jpg": "kept", "/date.jpg": "kept", "/slow-down.jpg": "kept", "/closed.jpg": "http-error",
                   "/gone.jpg": "http-error"}, got
    times = {path: t for path, (_, t) in script.items()}
    assert 0.9 <= times["/busy.jpg"][1] - times["/busy.jpg"][0] < 3  # Retry-After: 1
    assert 0.8 <= times["/date.jpg"][1] - times["/date.jpg"][0] < 3.5  # Retry-After: an HTTP date
    gaps = [b - a for a, b in zip(times["/slow-down.jpg"], times["/slow-down.jpg"][1:])]
    assert len(gaps) == 2 and 0.4 <= gaps[0] < gaps[1]  # no Retry-After: a backoff that doubles
    # an hour's wait is past the 6 s deadline: given up at once; a 404 is final
    assert len(times["/closed.jpg"]) == 1 and len(times["/gone.jpg"]) == 1
    rejected = {urlsplit(row["url"]).path: row for row in lines(tmp_path / "out" / "rejected.jsonl")}
    assert "Retry-After 3600 is past the --deadline" in rejected["/closed.jpg"]["detail"]
    assert time.monotonic() - start < 60


@pytest.mark.slow
def test_url_list_accounts_for_every_url_and_holds_the_deadline(hostile, tmp_path):
    base = hostile
    Hostile.files.update({f"/short{i}.jpg": jpeg(photo(60 + i)) for i in range(4)})
    Hostile.files.update({f"/ok{i}.jpg": jpeg(photo(70 + i)) for i in range(12)})
    urls = [f"{base}/short{i}.jpg" for i in range(4)] + [f"{base}/drip.jpg", f"{base}/gone.jpg", "not a url"] + \
           [f"{base}/ok{i}.jpg" for i in range(12)]
    listing = tmp_path / "a-folder-with-a-rather-long-name-as-real-paths-have" / "product-urls.txt"
    listing.parent.mkdir()
    listing.write_text("\n".join(urls[:7]) + "\n\n" + "\n".join(urls[7:]) + "\n")
    deadline = 3
    r, seconds = cli("--urls", listing, "--out", tmp_path / "out", "--threads", "2", "--min-size", "64",
                     "--timeout", "1", "--deadline", deadline, timeout=90)
    text = clean(r)
    assert r.returncode == errors.OK, text
    assert seconds < deadline + 10, seconds  # start-up, icrawler's queue waits, one deadline
    got = accounted(tmp_path / "out")
    assert set(got) == set(urls), set(urls) ^ set(got)
    assert got[f"{base}/drip.jpg"] == "timeout" and got[f"{base}/gone.jpg"] == "http-error"
    assert {got[f"{base}/short{i}.jpg"] for i in range(4)} == {"connection-error"}
    assert sum(v == "kept" for v in got.values()) == 12
    # the summary off a terminal: whole headers, whole source names
    header = next(x for x in r.stdout.splitlines() if "engine" in x)
    assert all(h in header for h in ("keyword / source", "pages", "links", "downloaded", "rejected", "duplicates",
                                     "kept", "known")), header
    source = "".join(x.split("│")[2].strip() for x in r.stdout.splitlines() if x.startswith("│"))
    assert "…" not in r.stdout and source == str(listing), source  # folded onto lines, never cut



@pytest.mark.slow
def test_one_thread_held_by_slow_servers_still_fetches_every_url(hostile, tmp_path):
    """Found by an attacker: with its only download thread held by slow servers, icrawler's queue
    dropped the URLs after them, and they were written off as not fetched."""
    base = hostile
    Hostile.files.update({f"/late{i}.jpg": jpeg(photo(90 + i)) for i in range(8)})
    urls = [f"{base}/drip.jpg?a={i}" for i in range(2)] + [f"{base}/late{i}.jpg" for i in range(8)]
    listing = tmp_path / "urls.txt"
    listing.write_text("\n".join(urls) + "\n")
    r, _ = cli("--urls", listing, "--out", tmp_path / "out", "--threads", "1", "--min-size", "64",
               "--timeout", "1", "--deadline", 2, timeout=120)
    clean(r)
    got = accounted(tmp_path / "out")
    assert set(got) == set(urls) and [got[u] for u in urls[2:]] == ["kept"] * 8, got

# -- 5. a shop site: relative src, srcset, lazy loading, picture, og:image, robots.txt ------------

def shop(base: str) -> dict:
    pages = {
        "/robots.txt": b"User-agent: *\nDisallow: /private/\n",
        "/": f"""<html><head><meta property="og:image" content="/og.jpg"><title>Shop</title></head><body>
            <img src="/p0.jpg" alt="relative src">
            <img src="/p1-small.jpg" srcset="/p1-small.jpg 200w, /p1-large.jpg 800w, /p1-mid.jpg 400w">
            <img src="data:image/gif;base64,R0lGODlhAQABAAAAACw=" data-src="/p2.jpg" class="lazy">
            <picture><source type="image/webp" srcset="/p3.jpg 1x, /p3-2x.jpg 2x"><img src="/p3-fallback.jpg"></picture>
            <a href="cat/page1.html">category</a> <a href="#top">top</a> <a href="mailto:shop@example.com">mail</a>
            <a href="/private/secret.html">staff</a> <img src="/private/hidden.jpg">
            <a href="{base.replace('127.0.0.1', 'localhost')}/elsewhere.html">another host</a>
            </body></html>""".encode(),
        "/cat/page1.html": b'<html><body><img src="../p5.jpg"><img src="p6.jpg"><a href="page2.html">next</a>'
                            b'</body></html>',
        "/cat/page2.html": b'<html><body><img src="/p7.jpg"><a href="/cat/page3.html">next</a></body></html>',
        "/cat/page3.html": b'<html><body><img src="/p8.jpg"></body></html>',  # depth 3: beyond --max-depth 2
        "/private/secret.html": b'<html><body><img src="/p9.jpg"></body></html>',
    }
    names = ["og", "p0", "p1-small", "p1-mid", "p1-large", "p2", "p3", "p3-2x", "p3-fallback", "p5", "cat/p6",
             "p7", "p8", "p9", "private/hidden"]
    pages.update({f"/{n}.jpg": jpeg(photo(200 + i)) for i, n in enumerate(names)})
    return pages


SHOP_KEPT = {"/og.jpg", "/p0.jpg", "/p1-large.jpg", "/p2.jpg", "/p3-2x.jpg", "/p5.jpg", "/cat/p6.jpg", "/p7.jpg"}


@pytest.mark.slow
def test_site_crawl_finds_a_real_shops_images_and_keeps_to_the_rules(hostile, tmp_path):
    Hostile.files.update(shop(hostile))
    r, _ = cli("--site", hostile + "/", "--out", tmp_path / "out", "--max-depth", "2", "--min-size", "64",
               "--timeout", "2", "--deadline", "4", timeout=90)
    text = clean(r)
    assert r.returncode == errors.OK, text
    got = {urlsplit(u).path: reason for u, reason in accounted(tmp_path / "out").items()}
    assert {p for p, reason in got.items() if reason == "kept"} == SHOP_KEPT, got
    assert got["/private/hidden.jpg"] == "robots" and got["/private/secret.html"] == "robots"
    asked = {path for host, path in Hostile.requests}
    assert not asked & {"/private/secret.html", "/private/hidden.jpg", "/cat/page3.html", "/p8.jpg", "/p9.jpg",
                        "/p1-small.jpg", "/p1-mid.jpg", "/p3.jpg", "/p3-fallback.jpg", "/elsewhere.html"}
    assert {host for host, _ in Hostile.requests} == {"127.0.0.1"}
    assert sum(p == "/robots.txt" for p in asked) == 1


@pytest.mark.slow
def test_robots_wildcards_and_the_longest_rule_are_kept_as_rfc_9309_reads_them(hostile, tmp_path):
    """`*` and `$` in a rule, and an Allow longer than the Disallow it sits in (the standard library's
    parser lets the first two through and refuses the third)."""
    names = ["a.png", "b.jpg", "private-x/c.jpg", "shop/ok.jpg", "shop/no.jpg"]
    Hostile.files.update({
        "/robots.txt": b"User-agent: *\nDisallow: /*.png$\nDisallow: /private*/\nDisallow: /shop/\nAllow: /shop/ok.jpg\n",
        "/": "".join(f'<img src="/{n}">' for n in names).encode(),
        **{f"/{n}": jpeg(photo(400 + i)) for i, n in enumerate(names)}})
    r, _ = cli("--site", hostile + "/", "--out", tmp_path / "out", "--min-size", "64", "--timeout", "2",
               "--deadline", "4", timeout=90)
    assert r.returncode == errors.OK, clean(r)
    got = {urlsplit(u).path: reason for u, reason in accounted(tmp_path / "out").items()}
    assert {p: got.get(p) for p in ("/b.jpg", "/shop/ok.jpg")} == {"/b.jpg": "kept", "/shop/ok.jpg": "kept"}, got
    refused = {"/a.png", "/private-x/c.jpg", "/shop/no.jpg"}
    assert {p: got.get(p) for p in refused} == dict.fromkeys(refused, "robots"), got
    assert not refused & {path for _, path in Hostile.requests}


def test_a_site_page_that_is_busy_once_is_asked_again(hostile, tmp_path):
    start, times = answers((503, {"Retry-After": "1"}), then=b'<img src="/a.jpg">')
    Hostile.files.update({"/": start, "/a.jpg": jpeg(photo(421))})
    r, _ = cli("--site", hostile + "/", "--out", tmp_path / "out", "--min-size", "64", "--timeout", "2",
               "--deadline", "6", timeout=90)
    assert r.returncode == errors.OK, clean(r)
    assert len(times) == 2 and by_name(tmp_path / "out")["a.jpg"] == "kept"


def test_a_robots_txt_written_with_a_byte_order_mark_is_obeyed(hostile, tmp_path):
    Hostile.files.update({"/robots.txt": "\ufeffUser-agent: *\nDisallow: /\n".encode(),  # Windows Notepad's
                          "/": b'<img src="/a.jpg">', "/a.jpg": jpeg(photo(420))})
    r, _ = cli("--site", hostile + "/", "--out", tmp_path / "out", "--min-size", "64", "--timeout", "2",
               "--deadline", "4", timeout=90)
    assert r.returncode == errors.CRAWL_EMPTY, clean(r)
    assert {path for _, path in Hostile.requests} == {"/robots.txt"}


@pytest.mark.slow
def test_site_crawl_stops_at_max_pages_and_can_ignore_robots(hostile, tmp_path):
    Hostile.files.update(shop(hostile))
    store = ImageStore(tmp_path / "out", ImageLimits(min_side=64))
    opts = CrawlOptions(threads=2, timeout=2.0, deadline=4.0, retries=1, max_pages=1, robots=False)
    stats = run_crawl(tmp_path / "out", [], [], [hostile + "/"], [], [], opts, store, no_progress)
    got = {urlsplit(u).path: reason for u, reason in accounted(tmp_path / "out").items()}
    assert stats.rows[("site", hostile + "/")]["pages"] == 1
    assert {p for p, reason in got.items() if reason == "kept"} == {"/og.jpg", "/p0.jpg", "/p1-large.jpg", "/p2.jpg",
                                                                    "/p3-2x.jpg", "/private/hidden.jpg"}
    asked = [path for _, path in Hostile.requests]
    assert "/robots.txt" not in asked and "/cat/page1.html" not in asked


# -- 6. redirects to another host (here: another port) whose robots.txt says stay out -------------

class Redirecting(Hostile):
    """Hostile, plus ``redirects``: path -> where a 302 sends it (with a body that never ends when
    the path starts with /endless: a redirect's body is not worth reading)."""
    redirects: dict = {}

    def do_GET(self):
        path = urlsplit(self.path).path
        if path not in self.redirects:
            return super().do_GET()
        self.requests.append((self.headers.get("Host", "").split(":")[0], path))
        self.send_response(302)
        self.send_header("Location", self.redirects[path])
        self.end_headers()
        try:
            while path.startswith("/endless"):
                self.wfile.write(b"x" * 65536)
        except OSError:
            pass


@pytest.fixture
def two_hosts():
    """Two servers on 127.0.0.1 (two ports: two origins), each with its own files and access log."""
    servers, handlers = [], []
    for name in ("Shop", "Other"):
        handler = type(name, (Redirecting,), {"files": {}, "requests": [], "redirects": {}})
        httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        httpd.daemon_threads = True
        threading.Thread(target=httpd.serve_forever, daemon=True).start()
        servers.append(httpd)
        handlers.append(handler)
    yield [(f"http://127.0.0.1:{s.server_address[1]}", h) for s, h in zip(servers, handlers)]
    for s in servers:
        s.shutdown()


@pytest.mark.slow
def test_site_crawl_asks_robots_of_every_host_a_redirect_reaches_before_going(two_hosts, tmp_path):
    (shop_url, shop_host), (other_url, other_host) = two_hosts
    other_host.files.update({"/robots.txt": b"User-agent: *\nDisallow: /\n", "/img.jpg": jpeg(photo(301)),
                             "/page.html": f'<html><body><img src="{other_url}/secret.jpg"></body></html>'.encode(),
                             "/secret.jpg": jpeg(photo(302))})
    shop_host.files.update({"/": b'<html><body><img src="/own.jpg"><img src="/away.jpg"><img src="/endless.jpg">'
                                 b'<a href="/go.html">elsewhere</a></body></html>', "/own.jpg": jpeg(photo(303)),
                            "/here.jpg": jpeg(photo(304))})
    shop_host.redirects.update({"/away.jpg": f"{other_url}/img.jpg", "/go.html": f"{other_url}/page.html",
                                "/endless.jpg": "/here.jpg"})
    r, _ = cli("--site", shop_url + "/", "--out", tmp_path / "out", "--min-size", "64", "--timeout", "2",
               "--deadline", "4", timeout=90)
    text = clean(r)
    assert r.returncode == errors.OK, text
    got = accounted(tmp_path / "out")
    # the other host was asked for its robots.txt, and for nothing else
    assert [path for _, path in other_host.requests] == ["/robots.txt"], other_host.requests
    assert got[f"{shop_url}/away.jpg"] == "robots" and got[f"{shop_url}/go.html"] == "robots", got
    details = {x["url"]: x["detail"] for x in lines(tmp_path / "out" / "rejected.jsonl")}
    assert f"{other_url}/img.jpg" in details[f"{shop_url}/away.jpg"], details
    assert got[f"{shop_url}/own.jpg"] == "kept" and got[f"{shop_url}/endless.jpg"] == "kept", got


@pytest.mark.slow
def test_a_chain_of_redirects_is_asked_of_robots_at_every_hop(two_hosts, tmp_path):
    """Shop -> an allowed path on the other host -> a path its robots.txt disallows, and back from
    the other host to the shop: each hop is asked of its own host's robots before it is requested."""
    (shop_url, shop_host), (other_url, other_host) = two_hosts
    other_host.files.update({"/robots.txt": b"User-agent: *\nDisallow: /private/\n",
                             "/private/img.jpg": jpeg(photo(311)), "/fine.jpg": jpeg(photo(312))})
    other_host.redirects.update({"/hop.jpg": "/private/img.jpg", "/back.jpg": f"{shop_url}/fine-here.jpg"})
    shop_host.files.update({"/": b'<html><body><img src="/a.jpg"><img src="/b.jpg"></body></html>',
                            "/fine-here.jpg": jpeg(photo(313))})
    shop_host.redirects.update({"/a.jpg": f"{other_url}/hop.jpg", "/b.jpg": f"{other_url}/back.jpg"})
    r, _ = cli("--site", shop_url + "/", "--out", tmp_path / "out", "--min-size", "64", "--timeout", "2",
               "--deadline", "4", timeout=90)
    assert r.returncode == errors.OK, clean(r)
    got = accounted(tmp_path / "out")
    assert got[f"{shop_url}/a.jpg"] == "robots" and got[f"{shop_url}/b.jpg"] == "kept", got
    assert "/private/img.jpg" not in [path for _, path in other_host.requests], other_host.requests


@pytest.mark.parametrize("option", [("--deadline", "0"), ("--deadline", "nan"), ("--deadline", "inf"), ("--timeout", "-1")])
def test_times_that_are_no_seconds_are_one_line_and_exit_2(tmp_path, option):
    r, _ = cli("--urls", tmp_path / "none.txt", "--out", tmp_path / "out", *option)
    assert r.returncode == errors.USAGE and f"{option[0]} " in clean(r) and "Traceback" not in clean(r)
    assert not (tmp_path / "out").exists()
