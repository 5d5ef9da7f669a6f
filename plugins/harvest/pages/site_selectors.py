"""What a site profile's CSS selectors pick from a page: the links to follow, the elements that
hold its images, and the page fields attached to each image.
"""

from __future__ import annotations

from bs4 import BeautifulSoup, Tag

from harvest.settings.site_profiles import SiteProfile
from harvest.urls import canonicalize, looks_like_image


def followed_links(soup: BeautifulSoup, page_url: str, base: str, profile: SiteProfile) -> list[str]:
    """Links matched by the profile's ``follow`` selectors (a selected element that is not a link
    contributes the links inside it)."""
    links: list[str] = []
    for selector in profile.follow:
        for element in soup.select(selector):
            anchors = [element] if element.name == "a" else element.select("a[href]")
            for anchor in anchors:
                url = canonicalize(str(anchor.get("href") or ""), base)
                if url and url not in links and not looks_like_image(url):
                    links.append(url)
    return links


def selected_elements(soup: BeautifulSoup, profile: SiteProfile) -> list[Tag]:
    return [element for selector in profile.images for element in soup.select(selector)]


def page_fields(soup: BeautifulSoup, profile: SiteProfile) -> dict[str, str] | None:
    """The profile's fields for this page: first match's attribute or text (absent: left out)."""
    values: dict[str, str] = {}
    for name, selector, attribute in profile.fields:
        element = soup.select_one(selector)
        if element is None:
            continue
        raw = element.get(attribute) if attribute else element.get_text(" ")
        text = " ".join(str(raw or "").split())
        if text:
            values[name] = text
    return values or None
