"""Crawler benchmarks: extraction speed over large generated pages, and the request rate one host
sees under the default politeness settings.

Run with ``make bench`` (or ``PYTHONPATH=plugins python bench/bench_crawl.py``).
"""

from __future__ import annotations

import random
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "plugins"))

from harvest.pages.images import extract_page  # noqa: E402
from harvest.settings.config import HarvestConfig  # noqa: E402
from harvest.web.http import HttpClient  # noqa: E402
from harvest.web.politeness import HostGate  # noqa: E402

PAGES = 40
IMAGES_PER_PAGE = 150
PARAGRAPHS_PER_PAGE = 400
REQUESTS = 24
THREADS = 8
#: pages per second a 2-core CI machine should reach on these ~400 KB pages
EXTRACT_TARGET = 3.0


def _image(rng: random.Random, page: int, n: int) -> str:
    base = f"https://cdn.example/img/{page}/{n}"
    kind = n % 6
    if kind == 0:
        return f'<figure><img src="{base}-300.jpg" srcset="{base}-300.jpg 300w, {base}-1200.jpg 1200w" alt="Photo {n}"><figcaption>Caption {n}</figcaption></figure>'
    if kind == 1:
        return f'<img class="lazy" src="/blank.gif" data-src="{base}.jpg" width="800" height="600" alt="Lazy {n}">'
    if kind == 2:
        return f'<picture><source type="image/webp" srcset="{base}.webp 1x, {base}@2x.webp 2x"><img src="{base}.jpg" alt="P {n}"></picture>'
    if kind == 3:
        return f'<a href="{base}-full.jpg"><img src="{base}-thumb.jpg" alt="T {n}"></a>'
    if kind == 4:
        return f'<div style="background-image: url({base}-bg.jpg)"></div>'
    return f'<img src="{base}-icon.png" width="{rng.randint(8, 40)}" height="16">'


def generated_page(page: int) -> bytes:
    rng = random.Random(page)
    words = ["cat", "dog", "garden", "river", "photo", "summer", "light", "city", "market", "bridge"]
    parts = [
        "<!doctype html><html><head><title>Page</title>",
        f'<meta property="og:image" content="https://cdn.example/og/{page}.jpg">',
        '<link rel="icon" href="/favicon.ico"></head><body><header><img src="/logo.png" alt="logo"></header><main><article>',
    ]
    images = iter(range(IMAGES_PER_PAGE))
    for paragraph in range(PARAGRAPHS_PER_PAGE):
        text = " ".join(rng.choice(words) for _ in range(120))
        parts.append(f'<p>{text} <a href="/p/{page}/{paragraph}.html">more</a></p>')
        if paragraph % 3 == 0:
            n = next(images, None)
            if n is not None:
                parts.append(_image(rng, page, n))
    parts.append(
        '</article></main><footer><img src="/pixel.gif" width="1" height="1"></footer></body></html>'
    )
    return "".join(parts).encode()


def bench_extraction() -> tuple[float, float, int]:
    pages = [generated_page(i) for i in range(PAGES)]
    megabytes = sum(len(p) for p in pages) / 1e6
    started = time.perf_counter()
    found = 0
    for i, html in enumerate(pages):
        found += len(extract_page(html, f"https://site.example/p/{i}.html").items)
    seconds = time.perf_counter() - started
    return PAGES / seconds, megabytes / seconds, found


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format, *args):  # noqa: A002
        pass

    def do_GET(self):
        server = self.server
        with server.lock:
            server.in_flight += 1
            server.peak = max(server.peak, server.in_flight)
            server.starts.append(time.monotonic())
        time.sleep(0.02)  # a little server work, so requests could overlap
        body = b"<html><body>ok</body></html>"
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
        with server.lock:
            server.in_flight -= 1


def bench_politeness(delay: float | None = None) -> tuple[float, int, float, int]:
    """Requests/s and peak concurrency one host sees; ``delay`` overrides the default host delay."""
    defaults = HarvestConfig(run_id="", seeds=(), labels=(), destination="", staging="", database_url="")
    if delay is not None:
        defaults = defaults.with_(host_delay=delay)
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.daemon_threads = True
    server.lock, server.in_flight, server.peak, server.starts = threading.Lock(), 0, 0, []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    gate = HostGate(defaults.host_concurrency, defaults.host_delay, defaults.host_failure_limit)
    client = HttpClient("bench/1.0", allow_private_networks=True, gate=gate)
    base = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        with ThreadPoolExecutor(max_workers=THREADS) as pool:
            list(pool.map(lambda i: client.get(f"{base}/p{i}", 10_000), range(REQUESTS)))
    finally:
        server.shutdown()
        server.server_close()
    starts = sorted(server.starts)
    rate = (len(starts) - 1) / (starts[-1] - starts[0])
    return rate, server.peak, defaults.host_delay, defaults.host_concurrency


def main() -> int:
    pages_per_second, mb_per_second, found = bench_extraction()
    rate, peak, delay, concurrency = bench_politeness()
    _, peak_no_delay, _, _ = bench_politeness(delay=0.0)
    allowed_rate = 1 / delay
    rows = [
        (
            "extraction",
            f"{pages_per_second:.1f} pages/s ({mb_per_second:.1f} MB/s, {found} images)",
            f">= {EXTRACT_TARGET} pages/s",
            pages_per_second >= EXTRACT_TARGET,
        ),
        (
            "requests/s at one host",
            f"{rate:.2f} req/s ({REQUESTS} requests, {THREADS} threads)",
            f"<= {allowed_rate:.1f} (delay {delay}s)",
            rate <= allowed_rate * 1.05,
        ),
        ("peak concurrent at one host", str(peak), f"<= {concurrency}", peak <= concurrency),
        (
            "peak concurrent, delay 0",
            f"{peak_no_delay} (the cap alone holds {THREADS} threads back)",
            f"<= {concurrency}",
            peak_no_delay <= concurrency,
        ),
    ]
    print(f"{'crawl benchmark':30} {'measured':52} {'target':22} ok")
    for name, measured, target, ok in rows:
        print(f"{name:30} {measured:52} {target:22} {'yes' if ok else 'NO'}")
    print(f"({PAGES} generated pages of ~{len(generated_page(0)) // 1024} KB, {IMAGES_PER_PAGE} images each)")
    return 0 if all(row[3] for row in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
