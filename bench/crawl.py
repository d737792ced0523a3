"""Crawl speed from a local site of real photos, and where the time goes.

Serves ../shared/data/product-photos (or --photos) on 127.0.0.1 and crawls it through icrawler
with a URL list. Prints images/s kept and the share of the wall time the downloader threads spent
checking and hashing (decode, EXIF, convert, phash, encode) versus downloading.

    python -m bench.crawl [--photos DIR] [--count 300] [--threads 4]
"""

from __future__ import annotations

import argparse
import functools
import shutil
import tempfile
import threading
import time
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from stampcheck.crawler.run import CrawlOptions, run_crawl
from stampcheck.crawler.store import ImageStore
from stampcheck.images import ImageLimits, find_images
from stampcheck.progress import no_progress

DEFAULT_PHOTOS = Path(__file__).resolve().parents[2] / "shared" / "data" / "product-photos"


class Quiet(SimpleHTTPRequestHandler):
    def log_message(self, *a):
        pass


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--photos", type=Path, default=DEFAULT_PHOTOS)
    ap.add_argument("--count", type=int, default=300)
    ap.add_argument("--threads", type=int, default=4)
    args = ap.parse_args()
    files = find_images([args.photos])[: args.count]
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(args.photos)))
    httpd.daemon_threads = True
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    tmp = Path(tempfile.mkdtemp(prefix="bench-crawl-"))
    try:
        base = f"http://127.0.0.1:{httpd.server_address[1]}/"
        (tmp / "urls.txt").write_text("".join(base + f.relative_to(args.photos).as_posix() + "\n" for f in files))
        store = ImageStore(tmp / "out", ImageLimits(min_side=64), max_size=1024)
        start = time.perf_counter()
        stats = run_crawl(tmp / "out", [], [], [], [tmp / "urls.txt"], [], CrawlOptions(max_num=0, threads=args.threads),
                          store, no_progress)
        wall = time.perf_counter() - start
        row = next(iter(stats.rows.values()))
        busy = store.check_seconds / args.threads  # thread-seconds spread over the threads
        print(f"{len(files)} URLs, {row['kept']} kept, {row['duplicates']} duplicates, {row['rejected']} rejected, "
              f"{args.threads} threads")
        print(f"kept per second      : {row['kept'] / wall:7.1f} images/s (wall {wall:.1f} s, icrawler's"
              " ~1 s queue wait included)")
        print(f"checking and hashing : {busy / wall:7.1%} of wall time per thread")
        print(f"downloading and rest : {1 - busy / wall:7.1%}")
    finally:
        httpd.shutdown()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
