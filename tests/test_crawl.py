"""The crawl stage through icrawler for real, against HTTP servers started on 127.0.0.1."""

import io
import json
import signal
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import numpy as np
import pytest
from PIL import Image
from requests.adapters import HTTPAdapter

from stampcheck.crawler.run import CrawlOptions, run_crawl
from stampcheck.crawler.store import NEAR_DISTANCE, ImageStore
from stampcheck import errors
from stampcheck.images import ImageLimits
from stampcheck.progress import no_progress
from tests.conftest import huge_header_png, photo

ROOT = Path(__file__).resolve().parents[1]


def jpeg(img, quality=90) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def site_files() -> dict[str, bytes]:
    """Good, unique images and every kind of bad one, by URL path."""
    files = {f"/img/good{i}.jpg": jpeg(photo(100 + i)) for i in range(5)}
    files["/img/copy.jpg"] = files["/img/good0.jpg"]  # exact duplicate
    files["/img/resized.jpg"] = jpeg(photo(101).resize((240, 180)), quality=70)  # near-duplicate of good1
    files["/img/page.jpg"] = b"<html><body>404 not found</body></html>"
    files["/img/truncated.jpg"] = jpeg(photo(120))[:2000]
    files["/img/empty.jpg"] = b""
    tiny = io.BytesIO()
    Image.new("RGB", (1, 1)).save(tiny, "PNG")
    files["/img/tiny.jpg"] = tiny.getvalue()
    files["/img/bomb.jpg"] = huge_header_png()
    return files


EXPECTED_REJECTS = {"/img/page.jpg": "not-an-image", "/img/truncated.jpg": "truncated", "/img/empty.jpg": "empty",
                    "/img/tiny.jpg": "too-small", "/img/bomb.jpg": "too-large", "/img/slow.jpg": "timeout",
                    "/img/loop.jpg": "http-error", "/img/missing.jpg": "http-error"}


class Site(BaseHTTPRequestHandler):
    files: dict = {}
    pages: dict = {}

    def log_message(self, *a):
        pass

    def do_GET(self):
        path = urlsplit(self.path).path
        query = parse_qs(urlsplit(self.path).query)
        if path == "/img/slow.jpg":  # drips bytes forever: only a total deadline stops it
            self.send_response(200)
            self.send_header("Content-Type", "image/jpeg")
            self.end_headers()
            try:
                for _ in range(40):
                    self.wfile.write(b"\xff")
                    self.wfile.flush()
                    time.sleep(0.25)
            except OSError:
                pass
            return
        if path.startswith("/img/late"):  # many downloads in flight when --max is reached
            time.sleep(0.3)
        if path == "/img/loop.jpg":
            self.send_response(302)
            self.send_header("Location", "/img/loop.jpg")
            self.end_headers()
            return
        body = self.files.get(path)
        if body is None:
            page = self.pages.get(path)
            body = page(query) if callable(page) else page
        if body is None:
            self.send_response(404)
            self.end_headers()
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Site)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{httpd.server_address[1]}"
    Site.files = site_files()
    links = sorted(Site.files) + ["/img/slow.jpg", "/img/loop.jpg", "/img/missing.jpg"]
    Site.pages = {
        "/": f'<html><body><a href="{base}/more.html">more</a>'
             + "".join(f'<img src="{base}{p}">' for p in links[:6]) + "</body></html>",
        "/more.html": "<html><body>" + "".join(f'<a href="{base}{p}">x</a>' for p in links[6:]) + "</body></html>",
    }
    Site.pages = {k: v.encode() for k, v in Site.pages.items()}
    yield base, links
    httpd.shutdown()


def opts(**kw):
    return CrawlOptions(**{**dict(max_num=100, threads=3, timeout=2.0, deadline=3.0, retries=1), **kw})


def crawl(out, session_hook=None, **kw):
    args = dict(keywords=[], engines=[], sites=[], url_files=[], folders=[])
    args.update(kw)
    with ImageStore(out, ImageLimits(min_side=64)) as store:  # the next crawl into out may start at once
        stats = run_crawl(out, opts=opts(), store=store, progress=no_progress, session_hook=session_hook, **args)
    return store, stats


def manifest(out):
    return [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]


def rejected(out):
    return [json.loads(line) for line in (out / "rejected.jsonl").read_text().splitlines()]


def check_good_and_bad(out, base):
    kept = manifest(out)
    assert len(kept) == 5  # good0..4; the copy and the resized one are duplicates
    assert {Path(urlsplit(k["url"]).path).name for k in kept} <= {f"good{i}.jpg" for i in range(5)} | {"copy.jpg", "resized.jpg"}
    for k in kept:
        f = out / "images" / k["file"]
        assert f.name.startswith(k["sha256"][:20]) and Image.open(f).size == (k["width"], k["height"])
    reasons = {urlsplit(r["url"]).path: r["reason"] for r in rejected(out)}
    for path, reason in EXPECTED_REJECTS.items():
        assert reasons.get(path) == reason, (path, reasons.get(path))
    dup = [r for r in rejected(out) if r["reason"] in ("duplicate", "near-duplicate")]
    assert len(dup) == 2
    assert sorted(p.name for p in (out / "images").iterdir()) == sorted(k["file"] for k in kept)


@pytest.mark.slow
def test_url_list_keeps_exactly_the_good_unique_images(server, tmp_path):
    base, links = server
    (tmp_path / "urls.txt").write_text("".join(f"{base}{p}\n" for p in links) + "ftp://example.invalid/x.jpg\n")
    store, stats = crawl(tmp_path / "out", url_files=[tmp_path / "urls.txt"])
    check_good_and_bad(tmp_path / "out", base)
    assert any(r["reason"] == "bad-scheme" for r in rejected(tmp_path / "out"))
    row = stats.rows[("urls", str(tmp_path / "urls.txt"))]
    assert row["kept"] == 5 and row["duplicates"] == 2 and row["links"] == len(links) + 1


def test_max_is_exact_with_many_threads(server, tmp_path):
    base, _ = server
    late = [f"/img/late{i}.jpg" for i in range(12)]
    Site.files.update({p: jpeg(photo(300 + i)) for i, p in enumerate(late)})
    (tmp_path / "urls.txt").write_text("".join(f"{base}{p}\n" for p in late))
    out = tmp_path / "out"
    run_crawl(out, keywords=[], engines=[], sites=[], url_files=[tmp_path / "urls.txt"], folders=[],
              opts=opts(max_num=3, threads=6), store=ImageStore(out, ImageLimits(min_side=64)), progress=no_progress)
    assert len(manifest(out)) == 3 and len(list((out / "images").iterdir())) == 3
    reasons = [r["reason"] for r in rejected(out)]
    assert len(reasons) == 9 and set(reasons) <= {"over-max", "not-fetched"}, reasons


@pytest.mark.slow
def test_site_crawl_follows_links(server, tmp_path):
    base, _ = server
    store, stats = crawl(tmp_path / "out", sites=[base + "/"])
    check_good_and_bad(tmp_path / "out", base)
    assert stats.rows[("site", base + "/")]["pages"] >= 2


@pytest.mark.slow
def test_second_run_adds_nothing(server, tmp_path):
    base, links = server
    (tmp_path / "urls.txt").write_text("".join(f"{base}{p}\n" for p in links))
    crawl(tmp_path / "out", url_files=[tmp_path / "urls.txt"])
    first = manifest(tmp_path / "out")
    _, stats = crawl(tmp_path / "out", url_files=[tmp_path / "urls.txt"])
    assert manifest(tmp_path / "out") == first
    row = stats.rows[("urls", str(tmp_path / "urls.txt"))]
    assert row["kept"] == 0 and row["known"] >= 5


class Rewrite(HTTPAdapter):
    """Sends requests for a search engine's host to the local server, path and query kept."""

    def __init__(self, base):
        super().__init__()
        self.base = base

    def send(self, request, **kwargs):
        parts = urlsplit(request.url)
        request.url = self.base + parts.path + ("?" + parts.query if parts.query else "")
        return super().send(request, **kwargs)


def engine_hook(base):
    def hook(session):
        for host in ("https://www.bing.com", "https://www.google.com", "http://image.baidu.com"):
            session.mount(host, Rewrite(base))
    return hook


def result_pages(base, links):
    good = [f"{base}{p}" for p in links if "good" in p or "copy" in p]

    def bing(q):
        if q.get("q") == ["nothing"] or q.get("first") != ["0"]:
            return b"<html><body></body></html>"
        items = "".join(f'<div class="imgpt"><a m="{{&quot;murl&quot;:&quot;{u}&quot;}}">x</a></div>' for u in good)
        return f"<html><body>{items}</body></html>".encode()

    def google(q):
        if q.get("q") == ["nothing"] or q.get("ijn") != ["0"]:
            return b"<html><body><script>var x = 1;</script></body></html>"
        return ("<html><body><script>AF_initDataCallback({data:[" + ",".join(f'["{u}",348,348]' for u in good)
                + "]});</script></body></html>").encode()

    def baidu(q):
        if q.get("word") == ["nothing"] or q.get("pn") != ["0"]:
            return b'{"data": []}'
        return json.dumps({"data": [{"hoverURL": u} for u in good] + [{}]}).encode()

    return {"/images/async": bing, "/search": google, "/search/acjson": baidu}


@pytest.mark.slow
@pytest.mark.parametrize("engine", ["bing", "google", "baidu"])
def test_search_engine_end_to_end(server, tmp_path, engine):
    base, links = server
    Site.pages.update(result_pages(base, links))
    store, stats = crawl(tmp_path / "out", session_hook=engine_hook(base), keywords=["milk carton"], engines=[engine])
    row = stats.rows[(engine, "milk carton")]
    assert row["pages"] >= 1 and row["links"] == 6 and row["kept"] == 5 and row["duplicates"] == 1
    assert {k["engine"] for k in manifest(tmp_path / "out")} == {engine}
    assert {k["keyword"] for k in manifest(tmp_path / "out")} == {"milk carton"}


@pytest.mark.slow
def test_zero_results_warn_and_name_the_engine(server, tmp_path):
    base, links = server
    Site.pages.update(result_pages(base, links))
    r = subprocess.run([sys.executable, "-c", f"""
import sys
sys.argv = ['stampcheck', 'crawl', '-k', 'nothing', '--engine', 'google', '--out', {str(tmp_path / 'o')!r},
            '--timeout', '2']
from tests.test_crawl import engine_hook
import stampcheck.crawler.run as run
original = run.crawl_engine
run.crawl_engine = lambda *a, **k: original(*a[:5], session_hook=engine_hook({base!r}))
from stampcheck.app.cli import main
main()
"""], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert r.returncode == errors.CRAWL_EMPTY, r.stderr  # nothing kept: not a success a script can miss
    text = r.stdout + r.stderr
    assert "google found no image links for 'nothing'" in " ".join(text.split()) and "--engine bing" in text


def test_from_dir_goes_through_the_same_checks(tmp_path):
    folder = tmp_path / "mine"
    folder.mkdir()
    for i in range(3):
        photo(i).save(folder / f"p{i}.jpg")
    (folder / "broken.jpg").write_bytes(b"nope")
    photo(0).save(folder / "again.png")
    store, stats = crawl(tmp_path / "out", folders=[folder])
    kept = manifest(tmp_path / "out")
    assert len(kept) == 3 and all(k["engine"] == "dir" and k["url"].startswith("file://") for k in kept)
    reasons = {Path(r["url"]).name: r["reason"] for r in rejected(tmp_path / "out")}
    assert reasons["broken.jpg"] == "not-an-image"
    # again.png is p0.jpg re-encoded: whichever comes first is kept, the other is a duplicate
    assert [reasons.get(n) for n in ("again.png", "p0.jpg") if n in reasons] in (["duplicate"], ["near-duplicate"])


@pytest.mark.slow
def test_killed_run_resumes_to_the_same_set(server, tmp_path):
    base, links = server
    Site.files.update({f"/img/extra{i}.jpg": jpeg(photo(300 + i)) for i in range(30)})
    urls = [f"{base}/img/extra{i}.jpg" for i in range(30)] + [f"{base}{p}" for p in links if "slow" not in p]
    (tmp_path / "urls.txt").write_text("".join(u + "\n" for u in urls))
    cmd = [sys.executable, "-m", "stampcheck", "crawl", "--urls", str(tmp_path / "urls.txt"), "--threads", "2",
           "--min-size", "64", "--timeout", "2", "--delay", "0.1"]
    clean = subprocess.run(cmd + ["--out", str(tmp_path / "clean")], capture_output=True, text=True, cwd=ROOT, timeout=180)
    assert clean.returncode == 0, clean.stderr
    proc = subprocess.Popen(cmd + ["--out", str(tmp_path / "cut")], cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + 60
    while time.time() < deadline and len(list((tmp_path / "cut" / "images").glob("*.jpg"))) < 8:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (tmp_path / "cut" / "manifest.jsonl").exists() or len(manifest(tmp_path / "cut")) < 35
    again = subprocess.run(cmd + ["--out", str(tmp_path / "cut")], capture_output=True, text=True, cwd=ROOT, timeout=180)
    assert again.returncode == 0, again.stderr
    a, b = manifest(tmp_path / "clean"), manifest(tmp_path / "cut")
    assert len(a) == len(b) == 35
    ph = np.array([int(k["phash"], 16) for k in a], dtype=np.uint64)
    for k in b:  # the same pictures (of a near-duplicate pair either copy may be the one kept)
        d = np.unpackbits((ph ^ np.uint64(int(k["phash"], 16))).view(np.uint8).reshape(-1, 8), axis=1).sum(1)
        assert d.min() <= NEAR_DISTANCE
    assert not list((tmp_path / "cut" / "images").glob(".*"))
    assert sorted(p.name for p in (tmp_path / "cut" / "images").iterdir()) == sorted(k["file"] for k in b)
