"""Script-fed pages: whether a page needs its scripts run to show its images, and which images its
scripts fetched.

A gallery that fetches a JSON list and draws each photo from a ``blob:`` URL has nothing in its HTML
as sent. In the automatic render mode (``render: auto``), a page is rendered only when its static
HTML names no content image and it has scripts (:func:`render_reason`). While it renders, the
browser notes what the scripts fetched (web/render.py); :func:`script_record` turns those notes into
the page's script-found images, staged beside the rendered HTML, and :func:`apply_script_record`
gives each candidate of the page how it was found (``found_by``):

- ``{"how": "script-json", "response": <JSON URL>, "path": "$.photos[2].src"}``: an image URL in a
  JSON answer a script fetched (its sibling ``alt``/``title``/``caption`` become the candidate's text);
- ``{"how": "script-blob", "response": <URL>, "sha256": ...}``: a ``blob:`` image whose bytes are
  those of a response the page fetched, so that URL is the image's;
- ``{"how": "rendered-dom"}``: in the DOM after rendering, not in the HTML as sent.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterator
from dataclasses import asdict

from harvest.pages.base_href import parse_page
from harvest.pages.found import Found
from harvest.pages.roles import avatar_reason, emoji_reason, logo_reason, tokens
from harvest.urls import canonicalize, looks_like_image

log = logging.getLogger(__name__)

SOURCE_JSON = "script-json"
SOURCE_BLOB = "script-blob"
RENDERED_DOM = "rendered-dom"
#: script types that are data, not code
_DATA_SCRIPTS = {"application/ld+json", "application/json", "text/template", "text/x-template", "importmap"}
#: JSON keys whose value is an image even without an image file extension (an API's /media/123)
_IMAGE_KEYS = {"image", "img", "photo", "picture", "thumb", "thumbnail", "src", "poster", "original"}
#: keys of a smaller rendition: the object's other image is preferred
_SMALL_KEYS = {"thumb", "thumbnail", "small", "preview", "tiny", "mini", "sq", "square"}
#: keys whose string describes the image
_TEXT_KEYS = ("alt", "title", "caption", "description", "name", "label")
#: JSON nesting walked at most, and image URLs read from one answer at most
MAX_DEPTH = 32
MAX_JSON_IMAGES = 5_000
_INDEX = re.compile(r"\[\d+\]")


def has_scripts(html: bytes | str, page_url: str) -> bool:
    """Whether the page runs scripts: a ``<script src>`` or an inline script that is code, not data."""
    parsed = parse_page(html, page_url)
    if parsed is None:
        return False
    doc, _ = parsed
    for script in doc.xpath("//script"):
        kind = (script.get("type") or "").split(";")[0].strip().lower()
        if kind in _DATA_SCRIPTS:
            continue
        if script.get("src") or (script.text or "").strip():
            return True
    return False


def render_reason(html: bytes | str, page_url: str, content_images: int) -> str | None:
    """Why the automatic mode renders this page (None: the HTML as sent is read as it is).
    ``content_images`` counts the images the static HTML names that are not junk, chrome or a role."""
    if content_images:
        return None
    if not has_scripts(html, page_url):
        return None
    return "no content image in the HTML as sent, and it has scripts"


def _key_tokens(path: str) -> set[str]:
    return tokens(_INDEX.sub(" ", path))


def _image_url(value: str, key: str, base: str) -> str | None:
    """``value`` as an absolute image URL, when it names one: an image file, or any http(s) URL
    under a key that names an image (``"photo": "/media/123"``)."""
    text = value.strip()
    if not text or len(text) > 2048 or any(c.isspace() for c in text):
        return None
    if text.startswith(("data:", "blob:", "javascript:", "#", "mailto:")):
        return None
    looks_like_path = "/" in text or text.startswith(("http:", "https:")) or "." in text
    if not looks_like_path:
        return None
    url = canonicalize(text, base)
    if url is None:
        return None
    if looks_like_image(url) or tokens(key) & _IMAGE_KEYS:
        return url
    return None


def _text_of(obj: dict) -> str | None:
    for key in _TEXT_KEYS:
        value = obj.get(key)
        if isinstance(value, str) and value.strip() and len(value) <= 500:
            return value.strip()
    return None


def _role(url: str, alt: str | None, path: str) -> str | None:
    """What the JSON's keys say the image is for (``"author": {"avatar_url": ...}``)."""
    marks = _key_tokens(path)
    reason = emoji_reason(url, alt, marks) or avatar_reason(url, alt, marks, None, None)
    reason = reason or logo_reason(url, alt, marks, None, url)
    return f"{reason.split(' (')[0]} (named so in the script's JSON at {path})" if reason else None


def _objects(value, path: str, depth: int = 0) -> Iterator[tuple[str, dict | list]]:
    """Every object and list in a JSON document, with its JSONPath-like path, breadth bounded."""
    if depth > MAX_DEPTH:
        return
    if isinstance(value, dict):
        yield path, value
        for key, child in value.items():
            if isinstance(child, dict | list):
                yield from _objects(child, f"{path}.{key}", depth + 1)
    elif isinstance(value, list):
        yield path, value
        for index, child in enumerate(value):
            if isinstance(child, dict | list):
                yield from _objects(child, f"{path}[{index}]", depth + 1)


def json_images(text: str, response_url: str, page_base: str) -> list[dict]:
    """The images a JSON answer names: one entry per object (its preferred image; the object's other
    images as its renditions), and one per image URL in a list of strings. Relative URLs resolve
    against the page, as the script that puts them into an ``<img>`` resolves them."""
    try:
        document = json.loads(text)
    except ValueError:
        return []
    found: list[dict] = []
    for path, node in _objects(document, "$"):
        if len(found) >= MAX_JSON_IMAGES:
            break
        if isinstance(node, list):
            for index, value in enumerate(node):
                url = _image_url(value, "", page_base) if isinstance(value, str) else None
                if url and looks_like_image(url):
                    found.append(_entry(url, [], None, f"{path}[{index}]", response_url))
            continue
        urls = [
            (key, url)
            for key, value in node.items()
            if isinstance(value, str) and (url := _image_url(value, str(key), page_base))
        ]
        if not urls:
            continue
        alt = _text_of(node)
        content = [(key, url) for key, url in urls if not _role(url, alt, f"{path}.{key}")]
        for key, url in urls:
            if (key, url) not in content:
                found.append(_entry(url, [], alt, f"{path}.{key}", response_url))
        if content:
            content.sort(key=lambda pair: bool(tokens(str(pair[0])) & _SMALL_KEYS))
            key, url = content[0]
            variants = [{"url": u, "descriptor": str(k)} for k, u in content[1:] if u != url]
            found.append(_entry(url, variants, alt, f"{path}.{key}", response_url))
    return found


def _entry(url: str, variants: list[dict], alt: str | None, path: str, response_url: str) -> dict:
    return {
        "url": url,
        "variants": variants,
        "alt": alt,
        "role": _role(url, alt, path),
        "found_by": {"how": SOURCE_JSON, "response": response_url, "path": path},
    }


def script_record(rendered, page_url: str, reason: str, static_images: list[str]) -> dict:
    """What the page's scripts fetched and drew (web/script_capture.Rendered), as staged beside its HTML;
    ``static_images`` are the image URLs the HTML as sent named."""
    images: list[dict] = []
    for response in rendered.responses:
        if response.json is not None:
            images += json_images(response.json, response.url, page_url)
    blobs = [asdict(blob) for blob in rendered.blobs]
    return {
        "page_url": page_url,
        "reason": reason,
        "static_images": static_images,
        "seconds": rendered.seconds,
        "fetched": [response.url for response in rendered.responses],
        "json_images": images,
        "blobs": blobs,
    }


def script_record_key(content_key: str) -> str:
    """Where a rendered page's script record is staged: beside its HTML (pages/<sha>.html)."""
    return content_key.removesuffix(".html") + ".scripts.json"


def apply_script_record(items: list[Found], record: dict | None) -> list[Found]:
    """The page's candidates with how each was found; images only a JSON answer names are added."""
    if record is None:
        return items
    static_urls = set(record.get("static_images") or [])
    by_url = {item.url: item for item in items}
    for blob in record.get("blobs", []):
        item = by_url.get(blob.get("response_url") or "")
        if item is not None:
            item.source = SOURCE_BLOB
            item.found_by = {"how": SOURCE_BLOB, "response": blob["response_url"], "sha256": blob["sha256"]}
    for entry in record.get("json_images", []):
        item = by_url.get(entry["url"])
        if item is None:
            item = Found(
                entry["url"],
                SOURCE_JSON,
                alt=entry.get("alt"),
                variants=list(entry.get("variants") or []),
                role=entry.get("role"),
            )
            items.append(item)
            by_url[item.url] = item
        if item.found_by is None:
            item.found_by = dict(entry["found_by"])
            item.alt = item.alt or entry.get("alt")
            item.role = item.role or entry.get("role")
    for item in items:
        if item.found_by is None and item.url not in static_urls:
            item.found_by = {"how": RENDERED_DOM}
    return items


def untraced_blobs(record: dict | None) -> list[dict]:
    """The blob: images the page drew that no fetched response explains, with the reason."""
    return [blob for blob in (record or {}).get("blobs", []) if not blob.get("response_url")]
