"""HTML page -> the images it shows, once each, with their best URL and what the page says about them."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from bs4 import BeautifulSoup

from harvest.pages.base_href import document_base
from harvest.pages.budget import ExtractBudget
from harvest.pages.found import Collector, Found
from harvest.pages.htmltext import html_text
from harvest.pages.image_sources import collect_page_images
from harvest.pages.licence_markup import annotate_licences
from harvest.pages.roles import repeated_small_images
from harvest.pages.site_selectors import page_fields, selected_elements
from harvest.pages.stylesheets import StagedSheet, collect_stylesheets
from harvest.settings.config import HarvestConfig
from harvest.settings.site_profiles import SiteProfile
from harvest.urls import host_of

_TRACKER_NAME = re.compile(r"/(pixel|beacon|track(ing)?|1x1|spacer|clear)\.(gif|png)$")
_SPRITE = re.compile(r"sprite", re.IGNORECASE)


@dataclass
class PageImages:
    items: list[Found]
    data_uris: int = 0  # inline images: nothing to fetch, counted so the skip is visible
    #: the page's <meta name=... content=...> pairs: opt-outs for its images (harvest.web.optout)
    metas: list[tuple[str, str]] = field(default_factory=list)


def find_images(html: bytes | str, page_url: str) -> list[Found]:
    """Every image a page shows, once each, with its best URL and what the page says about it."""
    return extract_page(html, page_url).items


def extract_page(
    html: bytes | str,
    page_url: str,
    profile: SiteProfile | None = None,
    budget: ExtractBudget | None = None,
    stylesheets: Callable[[str], StagedSheet | None] | None = None,
) -> PageImages:
    """The page's images; a site profile narrows them to its ``images`` selectors (the others are
    kept as junk so the skip is recorded) and attaches its ``fields`` to each. Raises
    ExtractionBudgetExceeded when the page needs more than ``budget`` (default: no limit).
    ``stylesheets`` gives the staged copy of a linked stylesheet by URL (pages/stylesheets.py);
    without it only the page's own ``<style>`` blocks are read."""
    soup = BeautifulSoup(html_text(html), "lxml")
    base_tag = soup.find("base", href=True)
    collect = Collector(document_base(page_url, base_tag["href"] if base_tag else None), budget)
    collect.budget.check()
    collect_page_images(soup, collect)
    collect_stylesheets(soup, collect, stylesheets)
    items = collect.merged()
    for url, reason in repeated_small_images(items).items():
        for item in items:
            if item.url == url and not item.role:
                item.role = reason
    if profile is not None:
        _apply_profile(soup, items, profile, collect.budget)
    annotate_licences(soup, items, collect.base)
    for item in items:  # a tag holds its whole page: kept, every page of a run would stay in memory
        item.elements = []
    metas = [
        (str(m["name"]), str(m.get("content") or "")) for m in soup.find_all("meta", attrs={"name": True})
    ]
    return PageImages(items, collect.data_uris, metas)


def _apply_profile(
    soup: BeautifulSoup, items: list[Found], profile: SiteProfile, budget: ExtractBudget
) -> None:
    fields = page_fields(soup, profile)
    selected = {id(element) for element in selected_elements(soup, profile)} if profile.images else None
    for item in items:
        budget.check()
        item.fields = fields
        if selected is None or item.junk:
            continue
        chosen = any(
            id(element) in selected or any(id(parent) in selected for parent in element.parents)
            for element in item.elements
        )
        if not chosen:
            item.junk = f"not selected by site profile {profile.name}"


def markup_junk_reason(item: Found, cfg: HarvestConfig, roles: bool = True) -> str | None:
    """Why an image is junk, decided before download from the markup alone (None: fetch it).
    ``roles=False`` leaves out what the markup says the image is for (avatar, emoji, logo), for a
    caller that ranks another reason (site chrome) before it."""
    path = urlsplit(item.url).path.lower()
    if item.junk:
        return item.junk
    if path.endswith(".svg") and not cfg.allow_svg:
        return "SVG images are not harvested"
    if item.width and item.height and (item.width < cfg.min_width or item.height < cfg.min_height):
        return f"declared size {item.width}x{item.height} below minimum {cfg.min_width}x{cfg.min_height}"
    if item.width and item.height is None and item.width < cfg.min_width and item.source.endswith("srcset"):
        return f"largest srcset width {item.width} below minimum width {cfg.min_width}"
    if _TRACKER_NAME.search(path):
        return "tracking pixel or spacer (by file name)"
    if _SPRITE.search(path.rsplit("/", 1)[-1]):
        return "CSS sprite sheet"
    return item.role if roles else None


def chrome_images(
    pages: list[tuple[str, list[Found]]], min_pages: int = 3, share: float = 0.5
) -> dict[str, str]:
    """Images in header/nav/footer that repeat on most pages of their site (logos, social buttons),
    with the reason they are skipped."""
    pages_per_host: Counter[str] = Counter()
    chrome_hits: Counter[str] = Counter()
    host_of_image: dict[str, str] = {}
    for page_url, items in pages:
        host = host_of(page_url)
        pages_per_host[host] += 1
        for item in items:
            if item.in_chrome:
                chrome_hits[item.url] += 1
                host_of_image[item.url] = host
    reasons = {}
    for url, hits in chrome_hits.items():
        total = pages_per_host[host_of_image[url]]
        if total >= min_pages and hits >= share * total:
            reasons[url] = f"site chrome: in header/nav/footer on {hits} of {total} pages"
    return reasons
