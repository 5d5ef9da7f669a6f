"""Stage 2, link extraction: stored pages -> image candidates, one row per unique image URL per run.

Pages hide their real images behind srcset, <picture>, lazy-load attributes and thumbnails linking to
the full-size file; each of those is read here so the download stage sees the best URL for an image.
"""

from __future__ import annotations

import logging
import re
import zlib
from dataclasses import dataclass

from bs4 import BeautifulSoup, Tag
from sqlalchemy import select, update

from harvest.config import HarvestConfig
from harvest.report import StageReport
from harvest.robots import RobotsCache, robots_skip_reason
from harvest.state.db import insert_ignore, session_scope
from harvest.state.models import Candidate, Page, Status
from harvest.storage import open_store
from harvest.urls import canonicalize, looks_like_image

log = logging.getLogger(__name__)

LAZY_ATTRIBUTES = ("data-src", "data-original", "data-lazy-src")
_DESCRIPTOR = re.compile(r"^(\d+(?:\.\d+)?)([wx])$")


@dataclass
class Found:
    url: str
    source: str
    alt: str | None = None
    title: str | None = None
    width: int | None = None
    height: int | None = None


def shard_of(url: str, num_shards: int) -> int:
    """Stable across processes and retries (unlike hash()), so a retried shard sees the same rows."""
    return zlib.crc32(url.encode("utf-8")) % num_shards


def parse_srcset(srcset: str) -> list[tuple[str, str | None]]:
    """(url, descriptor) pairs, split as the HTML spec does: URLs may contain commas (CDN transforms)."""
    items: list[tuple[str, str | None]] = []
    position, length = 0, len(srcset)
    while position < length:
        while position < length and (srcset[position].isspace() or srcset[position] == ","):
            position += 1
        start = position
        while position < length and not srcset[position].isspace():
            position += 1
        url = srcset[start:position]
        if not url:
            break
        if url.endswith(","):
            items.append((url.rstrip(","), None))
            continue
        start = position
        while position < length and srcset[position] != ",":
            position += 1
        descriptor = srcset[start:position].strip() or None
        items.append((url, descriptor))
    return items


def best_from_srcset(srcset: str) -> str | None:
    """The largest candidate of a srcset, by its w or x descriptor."""
    best: tuple[float, str] | None = None
    for url, descriptor in parse_srcset(srcset):
        size = 1.0
        match = _DESCRIPTOR.match(descriptor.split()[-1]) if descriptor else None
        if match:
            size = float(match.group(1)) * (1 if match.group(2) == "w" else 10_000)
        if best is None or size > best[0]:
            best = (size, url)
    return best[1] if best else None


def _int_attr(tag: Tag, name: str) -> int | None:
    value = str(tag.get(name) or "").strip().removesuffix("px")
    return int(value) if value.isdigit() else None


def _text(value) -> str | None:
    if value is None:
        return None
    text = " ".join(str(value).split())
    return text or None


def _img_url(img: Tag) -> tuple[str | None, str]:
    """The best URL an <img> offers: lazy-load attributes beat a placeholder src; srcset beats src."""
    for attribute in ("data-srcset", "srcset"):
        if img.get(attribute):
            url = best_from_srcset(str(img[attribute]))
            if url:
                return url, attribute
    for attribute in LAZY_ATTRIBUTES:
        if img.get(attribute):
            return str(img[attribute]), attribute
    src = img.get("src")
    return (str(src), "img") if src else (None, "img")


def find_images(html: bytes | str, page_url: str) -> list[Found]:
    soup = BeautifulSoup(html, "lxml")
    base = page_url
    base_tag = soup.find("base", href=True)
    if base_tag:
        base = canonicalize(str(base_tag["href"]), page_url) or page_url
    found: list[Found] = []

    def add(raw: str | None, source: str, tag: Tag | None = None, alt=None, title=None) -> None:
        if not raw or raw.strip().lower().startswith("data:"):
            return
        url = canonicalize(raw, base)
        if not url:
            return
        width = _int_attr(tag, "width") if tag is not None else None
        height = _int_attr(tag, "height") if tag is not None else None
        found.append(Found(url, source, _text(alt), _text(title), width, height))

    for meta in soup.find_all("meta"):
        prop = (meta.get("property") or meta.get("name") or "").lower()
        if prop in ("og:image", "og:image:url", "twitter:image"):
            add(meta.get("content"), prop)

    wrapped: set[int] = set()
    for link in soup.find_all("a", href=True):
        img = link.find("img")
        if img is not None and looks_like_image(canonicalize(str(link["href"]), base) or ""):
            wrapped.add(id(img))
            add(str(link["href"]), "a[href]", None, img.get("alt"), img.get("title") or link.get("title"))

    for picture in soup.find_all("picture"):
        img = picture.find("img")
        for source in picture.find_all("source"):
            srcset = source.get("srcset") or source.get("data-srcset")
            if srcset:
                add(best_from_srcset(str(srcset)), "picture", None, img.get("alt") if img else None)
                if img is not None:
                    wrapped.add(id(img))  # the <img> is only the fallback of a larger <source>

    for img in soup.find_all("img"):
        if id(img) in wrapped:
            continue
        url, source = _img_url(img)
        add(url, source, img, img.get("alt"), img.get("title"))

    unique: dict[str, Found] = {}
    for item in found:
        first = unique.setdefault(item.url, item)
        if first is not item:  # the same image named twice (og:image and <img>): keep what each knows
            first.alt = first.alt or item.alt
            first.title = first.title or item.title
            first.width = first.width or item.width
            first.height = first.height or item.height
    return list(unique.values())


def _skip_reason(item: Found, cfg: HarvestConfig) -> str | None:
    if item.url.lower().split("?")[0].endswith(".svg"):
        return "SVG images are not harvested"
    if item.width and item.height and (item.width < cfg.min_width or item.height < cfg.min_height):
        return f"declared size {item.width}x{item.height} below minimum {cfg.min_width}x{cfg.min_height}"
    return None


def _robots(cfg: HarvestConfig) -> RobotsCache | None:
    if not cfg.respect_robots:
        return None
    from harvest.crawl import make_client

    return RobotsCache(make_client(cfg), cfg.user_agent)


def _robots_reason(robots: RobotsCache | None, url: str) -> str | None:
    """Disallowed images are skipped here, before download; an unreachable robots.txt leaves the
    image to the download stage, which records its own failure."""
    reason = robots_skip_reason(robots, url)
    if reason and robots is not None and robots.rules_for(url).unavailable:
        return None
    return reason


def run_extract(cfg: HarvestConfig) -> StageReport:
    report = StageReport("extract")
    store = open_store(cfg.staging, cfg.s3)
    with session_scope(cfg.database_url) as session:
        pages = session.scalars(
            select(Page)
            .where(
                Page.run_id == cfg.run_id,
                Page.status == Status.DONE,
                Page.extract_status == Status.PENDING,
            )
            .order_by(Page.id)
        ).all()
    new_candidates = 0
    robots = _robots(cfg)
    for index, page in enumerate(pages, 1):
        try:
            items = find_images(store.get(page.content_key), page.final_url or page.url)
        except Exception as exc:  # one broken page must not stop the others
            log.warning("extract: %s: %s", page.url, exc)
            with session_scope(cfg.database_url) as session:
                session.execute(
                    update(Page)
                    .where(Page.id == page.id)
                    .values(extract_status=Status.FAILED, error=f"extraction failed: {exc}")
                )
            report.count("failed", f"extraction failed: {type(exc).__name__}")
            continue
        rows = []
        for item in items:
            reason = _skip_reason(item, cfg) or _robots_reason(robots, item.url)
            rows.append(
                {
                    "run_id": cfg.run_id,
                    "url": item.url,
                    "page_url": page.final_url or page.url,
                    "source": item.source,
                    "alt": item.alt,
                    "title": item.title,
                    "shard": shard_of(item.url, cfg.num_shards),
                    "status": Status.SKIPPED if reason else Status.PENDING,
                    "error": reason,
                    "attempts": 0,
                }
            )
            if reason:
                report.count("skipped", reason)
        with session_scope(cfg.database_url) as session:
            new_candidates += insert_ignore(session, Candidate, rows, ["run_id", "url"])
            session.execute(update(Page).where(Page.id == page.id).values(extract_status=Status.DONE))
        report.count("done")
        if index % 50 == 0:
            log.info("extract: %d/%d pages, %d candidates", index, len(pages), new_candidates)
    report.extra["candidates"] = new_candidates
    log.info("%s; %d new candidates", report, new_candidates)
    return report
