"""What a page's markup says about the licence and author of each of its images.

Image-specific evidence: a ``rel="license"`` link, a Creative Commons URL or badge, or an author
link inside the image's ``<figure>`` (or its parent element when there is no figure), and a
JSON-LD ``ImageObject`` whose ``contentUrl``/``url`` is the image (``license``,
``acquireLicensePage``, ``creator``, ``creditText``, ``copyrightNotice``). Page-wide evidence: a
``rel="license"`` link elsewhere on the page, and a JSON-LD ``CreativeWork`` (an article, a web
page) with a ``license``. The download stage weighs these against the file's own metadata
(:func:`harvest.licences.resolve`).
"""

from __future__ import annotations

import json
import logging
from typing import Any

from bs4 import BeautifulSoup, Tag

from harvest.licences import spdx_from_text, spdx_from_url
from harvest.pages.found import Found
from harvest.urls import canonicalize

log = logging.getLogger(__name__)

#: JSON-LD read per page at most (a page that ships megabytes of it is not read for licences)
MAX_JSON_LD = 256 * 1024
_BADGE_HOSTS = ("licensebuttons.net", "i.creativecommons.org", "mirrors.creativecommons.org")
#: elements that hold a whole page or story, never one image's credit
_SECTIONS = {"html", "body", "main", "article", "section", "header", "footer", "nav", "aside"}


def _evidence(spdx: str | None, url: str | None, found: str, scope: str, **extra: Any) -> dict:
    row = {"license": spdx, "url": url, "found": found, "scope": scope}
    row.update({name: value for name, value in extra.items() if value})
    return row


def _name(value: Any) -> str | None:
    """A schema.org Person/Organization or plain text as a name; lists joined."""
    if isinstance(value, str):
        return value.strip() or None
    if isinstance(value, dict):
        return _name(value.get("name"))
    if isinstance(value, list):
        names = [n for n in (_name(v) for v in value) if n]
        return ", ".join(names) or None
    return None


def _url(value: Any) -> str | None:
    if isinstance(value, str):
        return value.strip() or None
    if isinstance(value, dict):
        return _url(value.get("@id") or value.get("url"))
    if isinstance(value, list) and value:
        return _url(value[0])
    return None


def _json_ld_objects(soup: BeautifulSoup) -> list[dict]:
    objects: list[dict] = []
    budget = MAX_JSON_LD
    for script in soup.find_all("script", type="application/ld+json"):
        text = script.string or script.get_text() or ""
        budget -= len(text)
        if budget < 0:
            break
        try:
            data = json.loads(text)
        except ValueError:
            continue
        stack = [data]
        while stack and len(objects) < 1000:
            item = stack.pop()
            if isinstance(item, list):
                stack.extend(item)
            elif isinstance(item, dict):
                objects.append(item)
                for key in ("@graph", "image", "associatedMedia", "hasPart", "mainEntity"):
                    if isinstance(item.get(key), list | dict):
                        stack.append(item[key])
    return objects


def _types(obj: dict) -> set[str]:
    kind = obj.get("@type")
    return {kind} if isinstance(kind, str) else {k for k in kind or [] if isinstance(k, str)}


def _from_json_ld(obj: dict, found: str, scope: str) -> dict:
    url = _url(obj.get("license"))
    return _evidence(
        spdx_from_url(url) or spdx_from_text(url),
        url,
        found,
        scope,
        author=_name(obj.get("creator")) or _name(obj.get("author")),
        credit=_name(obj.get("creditText")),
        copyright=_name(obj.get("copyrightNotice")),
        acquire=_url(obj.get("acquireLicensePage")),
    )


def _near(element: Tag) -> Tag | None:
    """The markup that belongs to an image: its figure, else its parent element when that holds
    no other picture (a credit in an article holding several figures belongs to none in particular)."""
    figure = element if element.name == "figure" else element.find_parent("figure")
    if figure is not None:
        return figure
    parent = element.parent
    if not isinstance(parent, Tag) or parent.name in _SECTIONS or parent.find("figure") is not None:
        return None
    others = [img for img in parent.find_all("img") if img is not element and not _is_badge(img)]
    return None if others else parent


def _is_badge(img: Tag) -> bool:
    """A licence badge (88x31 and the like) rather than a picture."""
    src = str(img.get("src") or "")
    width = str(img.get("width") or "")
    return any(host in src for host in _BADGE_HOSTS) or (width.isdigit() and int(width) <= 120)


def _from_container(container: Tag, base: str) -> dict | None:
    """rel=license links, CC links and badges, and the author inside one image's container."""
    where = "figure" if container.name == "figure" else f"<{container.name}> around the image"
    author_tag = container.select_one('[rel~="author"], [itemprop="creator"], .author, .credit, .creator')
    author = author_tag.get_text(" ", strip=True) if author_tag is not None else None
    for link in container.find_all(["a", "link"], href=True):
        rel = [r.lower() for r in link.get("rel") or []]
        href = canonicalize(str(link["href"]), base) or str(link["href"])
        spdx = spdx_from_url(href)
        if "license" in rel or spdx:
            how = "rel=license" if "license" in rel else "Creative Commons link"
            return _evidence(spdx, href, f"{how} in the {where}", "image", author=author)
    for badge in container.find_all("img", src=True):
        src = canonicalize(str(badge["src"]), base) or str(badge["src"])
        if any(host in src for host in _BADGE_HOSTS) and spdx_from_url(src):
            return _evidence(
                spdx_from_url(src), src, f"Creative Commons badge in the {where}", "image", author=author
            )
    text = container.get_text(" ", strip=True)
    if "all rights reserved" in text.lower():
        return _evidence(
            None, None, f"'All rights reserved' in the {where}", "image", author=author, copyright=text[:300]
        )
    if author:
        return _evidence(None, None, f"author in the {where}", "image", author=author)
    return None


def _page_wide(soup: BeautifulSoup, objects: list[dict], base: str) -> dict | None:
    for link in soup.find_all(["a", "link"], href=True, rel=True):
        rel = [r.lower() for r in link.get("rel") or []]
        if "license" in rel and link.find_parent("figure") is None:
            href = canonicalize(str(link["href"]), base) or str(link["href"])
            return _evidence(spdx_from_url(href), href, "rel=license of the page", "page")
    for obj in objects:
        if obj.get("license") and not (_types(obj) & {"ImageObject"}):
            return _from_json_ld(obj, "JSON-LD license of the page", "page")
    return None


def annotate_licences(soup: BeautifulSoup, items: list[Found], base: str) -> None:
    """Set each item's ``licence`` evidence from the page's markup (image-specific first)."""
    objects = _json_ld_objects(soup)
    images: dict[str, dict] = {}
    for obj in objects:
        if "ImageObject" in _types(obj):
            for key in ("contentUrl", "url"):
                url = canonicalize(str(obj.get(key) or ""), base) if obj.get(key) else None
                if url:
                    images.setdefault(url, obj)
    page = _page_wide(soup, objects, base)
    for item in items:
        pieces: list[dict] = []
        ld = next((images[u] for u in (item.url, *item.variant_urls()) if u in images), None)
        if ld is not None:
            pieces.append(_from_json_ld(ld, "JSON-LD ImageObject", "image"))
        for element in item.elements:
            container = _near(element)
            found = _from_container(container, base) if container is not None else None
            if found is not None:
                pieces.append(found)
        item.licence = _combined(pieces, page)


def _combined(pieces: list[dict], page: dict | None) -> dict | None:
    """The image-specific evidence with a licence (else the first said, an "All rights reserved"
    included), the page-wide licence when the image's own markup names none, and the first author
    and credit any of them names."""
    evidence = next((p for p in pieces if p.get("license")), None) or (pieces[0] if pieces else None)
    reserved = evidence is not None and "All rights" in evidence["found"]
    if page is not None and (evidence is None or (not evidence.get("license") and not reserved)):
        evidence = page
    if evidence is None:
        return None
    extra = {name: next((p[name] for p in pieces if p.get(name)), None) for name in ("author", "credit")}
    return {**evidence, **{name: value for name, value in extra.items() if value and not evidence.get(name)}}
