"""A loopback gallery site with enough work for every stage to take seconds, and a switch that kills
the stage process at the N-th page or image request.

25 pages (an index and 24 gallery pages with long texts, a little slow to answer), about 250 image
URLs: tiny icons that are downloaded and rejected, textures (every other page) the classifier scores
and drops, crops of the demo photos it keeps, the same bytes at a second URL, missing and truncated
files, a logo on every page (site chrome) and a sale banner in the header of the last ten pages only
(not chrome: under half the pages).
The content is fixed (its own seed), so every run of the suite crawls the same site.
"""

from __future__ import annotations

import os
import random
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from loopback_site import Response, SiteServer, serve
from PIL import Image, ImageDraw

from harvest.demo_site import encode_jpeg, encode_png

GALLERIES = 24
ICONS_PER_PAGE = 6
TEXTURES_PER_PAGE = 1
PHOTOS_PER_PAGE = 2
#: demo photos whose crops the demo labels keep
PHOTOS = ("photos/chelsea.jpg", "photos/coffee-large.jpg")
#: paragraphs of text per gallery page: parsing them is the extract stage's work
PARAGRAPHS = 150
WORDS = ("harbour", "light", "canvas", "print", "room", "frame", "colour", "paper", "study", "tide", "artist")
PAGE_DELAY = 0.05
SALE_FROM = GALLERIES - 9  # galleries 15..24 carry the sale banner: 10 of 25 pages


def _icon(rng: random.Random) -> bytes:
    """A 40x40 glyph: too small to keep, but nothing in the markup says so before the download."""
    icon = Image.new("RGB", (40, 40), tuple(rng.randrange(256) for _ in range(3)))
    draw = ImageDraw.Draw(icon)
    draw.ellipse(
        (rng.randrange(15), rng.randrange(15), 25 + rng.randrange(15), 25 + rng.randrange(15)), fill=0
    )
    return encode_jpeg(icon)


def _texture(rng: random.Random) -> bytes:
    """A striped texture the classifier scores and no demo label keeps."""
    size = rng.randrange(96, 160)
    texture = Image.new("RGB", (size, size), tuple(rng.randrange(256) for _ in range(3)))
    draw = ImageDraw.Draw(texture)
    step = rng.randrange(6, 20)
    for x in range(0, size, step):
        draw.line(
            (x, 0, x + rng.randrange(-40, 40), size),
            fill=tuple(rng.randrange(256) for _ in range(3)),
            width=3,
        )
    return encode_jpeg(texture, quality=rng.randrange(70, 95))


def _crop(photo: Image.Image, rng: random.Random) -> bytes:
    """A different crop and size of a demo photo: the same subject, other bytes."""
    width, height = photo.size
    share = rng.uniform(0.7, 0.95)
    w, h = int(width * share), int(height * share)
    left, top = rng.randrange(width - w + 1), rng.randrange(height - h + 1)
    crop = photo.crop((left, top, left + w, top + h))
    if rng.random() < 0.5:
        crop = crop.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    target = rng.randrange(160, 240)
    crop = crop.resize((target, round(target * h / w)))
    return encode_jpeg(crop, quality=rng.randrange(78, 93))


PAGE = """<!doctype html><html><head><meta charset="utf-8"><title>{title}</title></head><body>
<header><a href="/index.html"><img src="/static/logo.png" alt="Harbour Gallery"></a>{banner}</header>
<nav><a href="/index.html">Home</a> {nav}</nav>
<main><h1>{title}</h1>
{body}
</main></body></html>
"""


def build(demo_root: Path) -> dict[str, tuple[str, Response]]:
    """Every route of the site: path -> (kind of request, response); kinds are "page" and "image"."""
    rng = random.Random(20261130)
    photos = [Image.open(demo_root / name).convert("RGB") for name in PHOTOS]
    routes: dict[str, tuple[str, Response]] = {}

    def image(path: str, body: bytes, content_type: str = "image/jpeg") -> str:
        routes[path] = ("image", Response(body, content_type=content_type))
        return path

    logo = Image.new("RGB", (180, 64), (20, 60, 120))
    ImageDraw.Draw(logo).text((18, 24), "Harbour Gallery", fill=(255, 255, 255))
    image("/static/logo.png", encode_png(logo), "image/png")
    sale = Image.new("RGB", (320, 72), (230, 40, 40))
    ImageDraw.Draw(sale).text((20, 30), "SUMMER SALE - PRINTS 30% OFF", fill=(255, 255, 255))
    image("/static/sale.png", encode_png(sale), "image/png")

    pages: dict[str, str] = {}
    links = " ".join(f'<a href="/gallery/{n}.html">Room {n}</a>' for n in range(1, GALLERIES + 1))
    pages["/index.html"] = PAGE.format(title="Harbour Gallery", banner="", nav="", body=f"<p>{links}</p>")
    mirrored: list[tuple[str, bytes]] = []
    for n in range(1, GALLERIES + 1):
        items = []
        for i in range(PHOTOS_PER_PAGE):
            body = _crop(photos[(n + i) % len(photos)], rng)
            path = image(f"/art/{n}/photo-{i}.jpg", body)
            items.append(
                f'<figure><img src="{path}" alt="Room {n}, work {i}"><figcaption>Work {i}</figcaption></figure>'
            )
            mirrored.append((path, body))
        for i in range(TEXTURES_PER_PAGE if n % 2 else 0):
            items.append(f'<img src="{image(f"/art/{n}/texture-{i}.jpg", _texture(rng))}" alt="texture">')
        items.extend(
            f'<img src="{image(f"/icons/{n}/{i}.jpg", _icon(rng))}" alt="">' for i in range(ICONS_PER_PAGE)
        )
        if n > 1:  # the previous room's first work again, at a mirror URL: same bytes, stored once
            source, body = mirrored[-2 * PHOTOS_PER_PAGE]
            items.append(f'<img src="{image("/mirror" + source, body)}" alt="from the previous room">')
        if n % 4 == 0:
            items.append(f'<img src="/art/{n}/gone.jpg" alt="removed">')  # 404
        if n % 6 == 0:
            items.append(f'<img src="{image(f"/art/{n}/cut.jpg", _crop(photos[0], rng)[:500])}" alt="cut">')
        items.extend(
            "<p>" + " ".join(rng.choice(WORDS) for _ in range(40)) + "</p>" for _ in range(PARAGRAPHS)
        )
        nav = f'<a href="/gallery/{n % GALLERIES + 1}.html">Next room</a>'
        banner = '<img src="/static/sale.png" alt="Summer sale">' if n >= SALE_FROM else ""
        pages[f"/gallery/{n}.html"] = PAGE.format(
            title=f"Room {n}", banner=banner, nav=nav, body="\n".join(items)
        )
    for path, html in pages.items():
        routes[path] = ("page", Response(html.encode("utf-8"), delay=PAGE_DELAY))
    return routes


class KillSwitch:
    """Sends SIGKILL to a process when the site has served it the N-th request of one kind."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.pid: int | None = None
        self.kind = ""
        self.at = 0
        self.seen: dict[str, int] = {}
        self.fired = False

    def arm(self, pid: int, kind: str, at: int) -> None:
        with self.lock:
            self.pid, self.kind, self.at, self.fired = pid, kind, at, False
            self.seen = {}

    def count(self) -> None:
        """Count requests without killing (to measure a clean run)."""
        self.arm(0, "", 0)

    def disarm(self) -> dict[str, int]:
        with self.lock:
            self.pid = None
            return dict(self.seen)

    def request(self, kind: str) -> None:
        with self.lock:
            self.seen[kind] = self.seen.get(kind, 0) + 1
            if self.pid and kind == self.kind and self.seen[kind] == self.at and not self.fired:
                os.kill(self.pid, signal.SIGKILL)
                self.fired = True


@contextmanager
def crash_site(demo_root: Path) -> Iterator[tuple[SiteServer, KillSwitch]]:
    switch = KillSwitch()

    def counted(kind: str, response: Response):
        def route(_site: SiteServer, _path: str) -> Response:
            switch.request(kind)
            return response

        return route

    with serve() as site:
        site.routes = {path: counted(kind, response) for path, (kind, response) in build(demo_root).items()}
        yield site, switch
