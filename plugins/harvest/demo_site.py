"""A small offline website of real photos and typical junk, served on loopback.

It is built at run time from sample photos that scikit-image, scikit-learn and matplotlib ship, plus
generated junk (logo, icons, a 1x1 tracker, a banner, a broken file, a missing file), and it uses
the patterns that hide images on real sites (srcset, <picture>, lazy loading, linked thumbnails,
og:image). ``make harvest`` crawls it; the tests crawl it and know exactly what must come out.
"""

from __future__ import annotations

import functools
import io
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

#: Labels that select the demo's photos; each maps to the photo files the classifier should keep.
DEMO_LABELS = ("Egyptian cat", "espresso", "palace", "daisy")


@dataclass(frozen=True)
class Photo:
    file: str
    label: str | None  # the demo label it should be kept under, None if no demo label applies


PHOTOS = {
    "cat": Photo("photos/chelsea.jpg", "egyptian_cat"),
    "coffee": Photo("photos/coffee-large.jpg", "espresso"),
    "hopper": Photo("photos/grace-hopper.jpg", None),
    "china": Photo("photos/china.jpg", "palace"),
    "flower": Photo("photos/flower.jpg", "daisy"),
    "astronaut": Photo("photos/astronaut.jpg", None),
}


def _sample_photos() -> dict[str, Image.Image]:
    from matplotlib import cbook
    from skimage import data
    from sklearn.datasets import load_sample_image

    with Image.open(cbook.get_sample_data("grace_hopper.jpg")) as hopper:
        hopper_rgb = hopper.convert("RGB")
    return {
        "cat": Image.fromarray(data.chelsea()),
        "coffee": Image.fromarray(data.coffee()),
        "hopper": hopper_rgb,
        "china": Image.fromarray(load_sample_image("china.jpg")),
        "flower": Image.fromarray(load_sample_image("flower.jpg")),
        "astronaut": Image.fromarray(data.astronaut()),
    }


def encode_jpeg(image: Image.Image, quality: int = 90) -> bytes:
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, "JPEG", quality=quality)
    return buffer.getvalue()


def encode_png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def _logo() -> Image.Image:
    logo = Image.new("RGBA", (160, 48), (255, 255, 255, 0))
    draw = ImageDraw.Draw(logo)
    draw.rounded_rectangle((0, 0, 159, 47), radius=10, fill=(30, 90, 200, 255))
    draw.text((14, 16), "PetNews", fill=(255, 255, 255, 255))
    return logo


def _banner() -> Image.Image:
    """A wide advertising banner: big enough to download, nothing the classifier should keep."""
    banner = Image.new("RGB", (728, 90), (250, 210, 40))
    draw = ImageDraw.Draw(banner)
    draw.text((20, 35), "SALE - 50% OFF - CLICK HERE", fill=(0, 0, 0))
    return banner


def _pattern() -> Image.Image:
    rng = np.random.default_rng(7)
    return Image.fromarray(rng.integers(0, 255, size=(200, 300, 3), dtype=np.uint8))


PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>{title}</title>
<link rel="icon" href="/static/favicon.png">{head}</head>
<body>
<header><a href="/index.html"><img src="/static/logo.png" alt="PetNews logo" width="160" height="48"></a>
<nav><a href="/index.html">Home</a> <a href="/gallery.html">Gallery</a> <a href="/blog/coffee.html">Coffee</a>
<img src="/static/share.png" alt="share" width="24" height="24"></nav></header>
<main>{body}</main>
<footer><img src="/static/pixel.gif" width="1" height="1" alt="">
<a href="https://elsewhere.example.org/">a site we link to</a></footer>
</body></html>
"""

PAGES = {
    "index.html": (
        "Pet news",
        '<meta property="og:image" content="/photos/chelsea.jpg">',
        """<h1>Our office cat</h1>
<figure><img src="/photos/chelsea.jpg" alt="Chelsea the cat"><figcaption>Chelsea</figcaption></figure>
<p><a href="/gallery.html">See the gallery</a> or read <a href="/blog/coffee.html#top">about coffee</a>.</p>
<img src="/ads/banner.jpg" alt="advertisement">""",
    ),
    "gallery.html": (
        "Gallery",
        "",
        """<h1>Gallery</h1>
<a href="/photos/grace-hopper.jpg"><img src="/thumbs/grace-hopper-thumb.jpg" alt="Grace Hopper"></a>
<picture><source type="image/jpeg" srcset="/photos/china.jpg 640w, /thumbs/china-small.jpg 320w">
<img src="/thumbs/china-small.jpg" alt="A palace in China"></picture>
<img class="lazy" src="/static/placeholder.gif" data-src="/photos/flower.jpg" alt="A flower">
<img src="/photos/missing.jpg" alt="this file is gone">
<img src="/photos/broken.jpg" alt="a corrupt upload">
<img src="/photos/noise.png" alt="texture">
<p><a href="/blog/astronaut.html">Next page</a></p>""",
    ),
    "blog/coffee.html": (
        "Coffee",
        "",
        """<h1>Morning coffee</h1>
<img src="/thumbs/coffee-small.jpg" srcset="/thumbs/coffee-small.jpg 300w, /photos/coffee-large.jpg 600w"
 alt="An espresso on a saucer">
<img src="/photos/chelsea-copy.jpg" alt="The cat again, re-uploaded">""",
    ),
    "blog/astronaut.html": (
        "Space",
        "",
        """<h1>Astronaut</h1><img src="/photos/astronaut.jpg" alt="An astronaut">
<p><a href="/blog/deep.html">Deeper</a></p>""",
    ),
    "blog/deep.html": (
        "Too deep",
        "",
        """<h1>Only reached with max_depth 3</h1><img src="/photos/deep-cat.jpg" alt="A cat far away">""",
    ),
}


def build_site(root: Path) -> Path:
    """Write the demo site into ``root`` (idempotent) and return it."""
    root = Path(root)
    photos = _sample_photos()
    files: dict[str, bytes] = {
        "photos/chelsea.jpg": encode_jpeg(photos["cat"]),
        "photos/chelsea-copy.jpg": encode_jpeg(photos["cat"]),  # same bytes at another URL
        "photos/deep-cat.jpg": encode_jpeg(photos["cat"].transpose(Image.Transpose.FLIP_LEFT_RIGHT)),
        "photos/coffee-large.jpg": encode_jpeg(photos["coffee"]),
        "thumbs/coffee-small.jpg": encode_jpeg(photos["coffee"].resize((300, 200))),
        "photos/grace-hopper.jpg": encode_jpeg(photos["hopper"]),
        "thumbs/grace-hopper-thumb.jpg": encode_jpeg(photos["hopper"].resize((96, 112))),
        "photos/china.jpg": encode_jpeg(photos["china"]),
        "thumbs/china-small.jpg": encode_jpeg(photos["china"].resize((320, 213))),
        "photos/flower.jpg": encode_jpeg(photos["flower"]),
        "photos/astronaut.jpg": encode_jpeg(photos["astronaut"]),
        "photos/broken.jpg": encode_jpeg(photos["cat"])[:600],  # truncated upload
        "photos/noise.png": encode_png(_pattern()),
        "ads/banner.jpg": encode_jpeg(_banner()),
        "static/logo.png": encode_png(_logo()),
        "static/favicon.png": encode_png(Image.new("RGB", (16, 16), (30, 90, 200))),
        "static/share.png": encode_png(Image.new("RGB", (24, 24), (20, 20, 20))),
        "static/pixel.gif": b"GIF89a\x01\x00\x01\x00\x80\x00\x00\x00\x00\x00\xff\xff\xff!\xf9\x04\x01\x00"
        b"\x00\x00\x00,\x00\x00\x00\x00\x01\x00\x01\x00\x00\x02\x02D\x01\x00;",
        "static/placeholder.gif": b"GIF89a\x01\x00\x01\x00\x80\x00\x00\x00\x00\x00\xff\xff\xff!\xf9\x04\x01"
        b"\x00\x00\x00\x00,\x00\x00\x00\x00\x01\x00\x01\x00\x00\x02\x02D\x01\x00;",
    }
    for name, (title, head, body) in PAGES.items():
        files[name] = PAGE.format(title=title, head=head, body=body).encode("utf-8")
    for name, content in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.exists() or path.read_bytes() != content:
            path.write_bytes(content)
    return root


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args) -> None:  # noqa: A002 - signature from the base class
        pass


@contextmanager
def serve(root: Path, host: str = "127.0.0.1", port: int = 0) -> Iterator[str]:
    """Serve ``root`` over HTTP on loopback; yields the base URL and stops the server afterwards."""
    handler = functools.partial(_QuietHandler, directory=str(root))
    server = ThreadingHTTPServer((host, port), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, name="demo-site", daemon=True)
    thread.start()
    try:
        yield f"http://{host}:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
