"""Stage 2, link extraction: stored pages -> image candidates, one row per unique image URL per run.

Pages hide their real images behind srcset, <picture>, lazy-load attributes and thumbnails linking to
the full-size file; each of those is read here so the download stage sees the best URL for an image.
"""

from __future__ import annotations

import json
import logging
import pickle
import re
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from bs4 import BeautifulSoup, Tag
from sqlalchemy import select, update

from harvest.pages.htmltext import html_text
from harvest.pages.site_selectors import page_fields, selected_elements
from harvest.report import StageReport
from harvest.settings.config import HarvestConfig
from harvest.settings.site_profiles import SiteProfile, load_site_profiles, site_profile_for
from harvest.state.db import insert_ignore, session_scope
from harvest.state.models import Candidate, Page, Status
from harvest.storage import StorageError, open_store
from harvest.urls import canonicalize, host_of, looks_like_image, shard_of
from harvest.web.robots import RobotsCache, robots_skip_reason

log = logging.getLogger(__name__)

LAZY_ATTRIBUTES = ("data-src", "data-original", "data-lazy-src", "data-lazy", "data-full-src")
LAZY_SRCSET_ATTRIBUTES = ("data-srcset", "data-lazy-srcset", "srcset")
SOCIAL_META = ("og:image", "og:image:url", "og:image:secure_url", "twitter:image", "twitter:image:src")
ICON_RELS = {"icon", "apple-touch-icon", "apple-touch-icon-precomposed", "mask-icon", "fluid-icon"}
#: <picture><source type> values the download stage can decode and keep.
DECODABLE_TYPES = {
    "image/jpeg",
    "image/jpg",
    "image/png",
    "image/gif",
    "image/webp",
    "image/bmp",
    "image/tiff",
}
CHROME_TAGS = {"header", "nav", "footer"}
SECTION_TAGS = {
    "body",
    "html",
    "[document]",
    "main",
    "article",
    "section",
    "header",
    "footer",
    "nav",
    "aside",
}
#: MediaWiki links a thumbnail to its description page (/wiki/File:Cat.jpg), not to the image file.
_FILE_PAGE = re.compile(r"/(?:File|Image|Datei|Fichier|Archivo|Bestand):[^/]*$", re.IGNORECASE)
CHROME_ROLES = {"banner", "navigation", "contentinfo"}
BLOCK_TAGS = {
    "p",
    "figure",
    "li",
    "td",
    "th",
    "dd",
    "blockquote",
    "section",
    "article",
    "div",
    "aside",
    "main",
}
NEARBY_TEXT_CHARS = 300
# Every pattern below runs on text a site chooses (attribute values, URLs of up to a whole page):
# each is a literal, an alternation of literals or anchored with single-position quantifiers, so a
# search costs time linear in the text. Anything needing more (CSS) is scanned by code.
#: Placeholders lazy-loading scripts put in ``src`` until the real image scrolls into view: one of
#: these words in the file name of a .gif, .png or .svg (see _is_placeholder).
_PLACEHOLDER_WORD = re.compile(r"placeholder|blank|spacer|transparent|lazy|loading|grey|gray|empty")
_PLACEHOLDER_TYPES = (".gif", ".png", ".svg")
_TRACKER_NAME = re.compile(r"/(pixel|beacon|track(ing)?|1x1|spacer|clear)\.(gif|png)$")
_SPRITE = re.compile(r"sprite", re.IGNORECASE)
_DESCRIPTOR = re.compile(r"^(\d+(?:\.\d+)?)([wx])$")
#: CSS properties whose url() values are images of the element (a custom property such as
#: ``--hero-background`` counts too, as it usually feeds one of them)
_BACKGROUND_PROPERTIES = ("background", "background-image")
#: a style attribute in pieces: a run of ordinary characters, or one character that matters
_CSS_TOKEN = re.compile(r"""[^"'()\\;\n]+|\\.?|.""", re.DOTALL)
_URL_OPEN = re.compile(r"url\(", re.IGNORECASE)
_SPACES = re.compile(r"\s*")
_UNQUOTED_URL = re.compile(r"""[^()"'\s]*""")


class ExtractionBudgetExceeded(Exception):
    """A page needed more work than the run allows for one page; the message says which limit."""


class ExtractBudget:
    """What extracting one page may take: ``seconds`` from the start, and ``max_images`` images
    named (every mention counts, a data: URI too). Checked as the page's images are collected, so a
    page built to make extraction slow stops at the budget instead of holding the stage."""

    def __init__(self, seconds: float = 30.0, max_images: int = 10_000):
        self.seconds = seconds
        self.max_images = max_images
        self.deadline = time.monotonic() + seconds
        self.images = 0

    def image(self) -> None:
        self.images += 1
        if self.images > self.max_images:
            raise ExtractionBudgetExceeded(
                f"more than {self.max_images} images named on the page (HARVEST_EXTRACT_MAX_IMAGES)"
            )
        self.check()

    def check(self) -> None:
        if time.monotonic() > self.deadline:
            raise ExtractionBudgetExceeded(
                f"extraction took more than {self.seconds:g}s (HARVEST_EXTRACT_SECONDS); "
                f"{self.images} images named so far"
            )


def _style_declarations(style: str) -> list[tuple[str, str]]:
    """(property, value) of each declaration of a style attribute, split at the semicolons outside
    strings and parentheses (a data: URI or a URL may hold one), in one pass over the text."""
    declarations: list[tuple[str, str]] = []
    current: list[str] = []
    quote, depth = "", 0
    for match in _CSS_TOKEN.finditer(style):
        token = match.group()
        if quote:
            if token == quote or token == "\n":
                quote = ""
        elif token in ('"', "'"):
            quote = token
        elif token == "(":
            depth += 1
        elif token == ")":
            depth = max(depth - 1, 0)
        elif token == ";" and depth == 0:
            declarations.append(_declaration("".join(current)))
            current = []
            continue
        current.append(token)
    declarations.append(_declaration("".join(current)))
    return declarations


def _declaration(text: str) -> tuple[str, str]:
    name, _, value = text.partition(":")
    return name.strip().lower(), value


def _css_urls(value: str) -> list[str]:
    """The arguments of the ``url(...)`` functions in a CSS value, quoted or not. Scanned left to
    right without going back, so a value of ``url(`` a million times costs one pass."""
    urls: list[str] = []
    position = 0
    while (opening := _URL_OPEN.search(value, position)) is not None:
        start = _SPACES.match(value, opening.end()).end()
        quote = value[start : start + 1]
        if quote in ('"', "'"):
            end = value.find(quote, start + 1)
            if end < 0:
                break  # the string never closes: the rest of the value is inside it
            url, after = value[start + 1 : end], end + 1
        else:
            after = _UNQUOTED_URL.match(value, start).end()
            url = value[start:after]
        after = _SPACES.match(value, after).end()
        if value[after : after + 1] == ")" and url.strip():
            urls.append(url.strip())
            after += 1
        position = max(after, opening.end())
    return urls


def background_urls(style: str) -> list[str]:
    """Image URLs of an inline style's ``background`` and ``background-image`` declarations."""
    return [
        url
        for name, value in _style_declarations(style)
        if name.endswith(_BACKGROUND_PROPERTIES)
        for url in _css_urls(value)
    ]


@dataclass
class Found:
    url: str
    source: str
    alt: str | None = None
    title: str | None = None
    width: int | None = None
    height: int | None = None
    caption: str | None = None
    nearby_text: str | None = None
    variants: list[dict] = field(default_factory=list)
    in_chrome: bool = False
    junk: str | None = None  # a reason known from the markup alone (favicon, placeholder)
    fields: dict | None = None
    elements: list = field(default_factory=list, compare=False, repr=False)  # where the page names it

    def variant_urls(self) -> set[str]:
        return {variant["url"] for variant in self.variants}


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


def _descriptor_size(descriptor: str | None) -> tuple[float, int | None]:
    """Sort key of a srcset descriptor, and the width in pixels when it is a w descriptor."""
    match = _DESCRIPTOR.match(descriptor.split()[-1]) if descriptor else None
    if not match:
        return 1.0, None
    value = float(match.group(1))
    if match.group(2) == "w":
        return value, int(value)
    return value * 10_000, None


def ranked_srcset(srcset: str) -> list[tuple[str, str | None, int | None]]:
    """(url, descriptor, width) of a srcset, largest first (ties keep document order)."""
    entries = [(url, descriptor, *_descriptor_size(descriptor)) for url, descriptor in parse_srcset(srcset)]
    order = sorted(range(len(entries)), key=lambda i: -entries[i][2])
    return [(entries[i][0], entries[i][1], entries[i][3]) for i in order]


def best_from_srcset(srcset: str) -> str | None:
    """The largest candidate of a srcset, by its w or x descriptor."""
    ranked = ranked_srcset(srcset)
    return ranked[0][0] if ranked else None


def _int_attr(tag: Tag, name: str) -> int | None:
    value = str(tag.get(name) or "").strip().removesuffix("px")
    return int(value) if value.isdigit() else None


def _text(value) -> str | None:
    if value is None:
        return None
    text = " ".join(str(value).split())
    return text or None


def _is_data_uri(raw: str | None) -> bool:
    return bool(raw) and raw.strip().lower().startswith("data:")


def _is_placeholder(raw: str | None) -> bool:
    """A data: URI, or a .gif/.png/.svg whose file name has a placeholder word (blank.gif)."""
    if not raw:
        return False
    if _is_data_uri(raw):
        return True
    path = raw.split("?", 1)[0].lower()
    if not path.endswith(_PLACEHOLDER_TYPES):
        return False
    name = path[path.rfind("/") + 1 : -len(".gif")]
    return _PLACEHOLDER_WORD.search(name) is not None


def _in_chrome(tag: Tag) -> bool:
    """Inside the site's header, navigation or footer (an <article>'s own header is content)."""
    if tag.find_parent(["article", "main"]) is not None or str(tag.get("role") or "") == "main":
        return False
    for parent in tag.parents:
        if str(parent.get("role") or "").lower() == "main":
            return False
        if parent.name in CHROME_TAGS or str(parent.get("role") or "").lower() in CHROME_ROLES:
            return True
    return False


def _is_caption(tag) -> bool:
    classes = tag.get("class") or [] if isinstance(tag, Tag) else []
    return any("caption" in name.lower() or name.lower() == "gallerytext" for name in classes)


def _holds_several_images(container: Tag) -> bool:
    """More than one image in a container, not counting the <noscript> copy of a lazy-loaded one.
    Stops at the second: asked for each image of a gallery, a full count costs the gallery's size
    squared."""
    found = 0
    for node in container.descendants:
        if isinstance(node, Tag) and node.name == "img" and node.find_parent("noscript") is None:
            found += 1
            if found > 1:
                return True
    return False


def _caption(tag: Tag) -> str | None:
    """figcaption of the enclosing figure, or a caption element next to the image's container
    (WordPress wp-caption-text, a MediaWiki infobox-caption). Only containers holding this one
    image are searched, so a caption is never borrowed from another image."""
    for depth, parent in enumerate(tag.parents):
        if depth > 4 or parent.name in SECTION_TAGS or _holds_several_images(parent):
            break
        if parent.name == "figure":
            caption = parent.find("figcaption", recursive=False)
            if caption is not None:
                return _text(caption.get_text(" "))
        for child in parent.find_all(True, recursive=False):
            if child is not tag and _is_caption(child) and child.find("img") is None:
                return _text(child.get_text(" "))
    return None


def _nearby_text(tag: Tag, caption: str | None) -> str | None:
    """Text of the closest block around this image alone (without the caption); failing that, the
    paragraph or heading just before it."""
    for depth, parent in enumerate(tag.parents):
        if depth > 4 or parent.name in SECTION_TAGS or parent.name is None or _holds_several_images(parent):
            break
        if parent.name not in BLOCK_TAGS:
            continue
        text = _text(parent.get_text(" "))
        if caption and text:
            text = _text(text.replace(caption, " "))
        if text and len(text) >= 20:
            return text[:NEARBY_TEXT_CHARS]
    for previous in tag.find_all_previous(["p", "h1", "h2", "h3", "h4", "h5", "h6"], limit=5):
        if _is_caption(previous) or _in_chrome(previous):
            continue
        text = _text(previous.get_text(" "))
        if text:
            return text[:NEARBY_TEXT_CHARS]
    return None


class _Collector:
    """Collects what one page says about its images, then merges mentions of the same image."""

    def __init__(self, base: str, budget: ExtractBudget | None = None):
        self.base = base
        self.found: list[Found] = []
        self.data_uris = 0
        self.budget = budget or ExtractBudget(float("inf"), 2**62)

    def url(self, raw: str | None) -> str | None:
        if not raw or _is_data_uri(raw):
            return None
        return canonicalize(raw, self.base)

    def add(
        self,
        raw: str | None,
        source: str,
        tag: Tag | None = None,
        *,
        alt=None,
        title=None,
        width: int | None = None,
        height: int | None = None,
        variants: list[dict] | None = None,
        junk: str | None = None,
        context: Tag | None = None,
    ) -> None:
        self.budget.image()
        if _is_data_uri(raw):
            self.data_uris += 1
            return
        url = self.url(raw)
        if not url:
            return
        clean, seen = [], {url}
        for variant in variants or []:
            self.budget.image()  # a rendition is an image URL the page names too
            variant_url = self.url(variant["url"])
            if variant_url and variant_url not in seen:
                seen.add(variant_url)
                clean.append({"url": variant_url, "descriptor": variant.get("descriptor")})
        context = context if context is not None else tag
        caption = _caption(context) if context is not None else None
        self.found.append(
            Found(
                url,
                source,
                _text(alt),
                _text(title),
                width,
                height,
                caption=caption,
                nearby_text=_nearby_text(context, caption) if context is not None else None,
                variants=clean,
                in_chrome=_in_chrome(context) if context is not None else False,
                junk=junk,
                elements=[context] if context is not None else [],
            )
        )

    def merged(self) -> list[Found]:
        unique: dict[str, Found] = {}
        for item in self.found:
            first = unique.setdefault(item.url, item)
            if first is not item:  # the same image named twice (og:image and <img>): keep what each knows
                first.alt = first.alt or item.alt
                first.title = first.title or item.title
                first.width = first.width or item.width
                first.height = first.height or item.height
                first.caption = first.caption or item.caption
                first.nearby_text = first.nearby_text or item.nearby_text
                first.in_chrome = first.in_chrome and item.in_chrome
                first.junk = first.junk if item.junk else None
                first.elements += item.elements
                known = first.variant_urls()
                first.variants += [
                    v for v in item.variants if v["url"] not in known and v["url"] != first.url
                ]
        # a smaller rendition shown elsewhere on the page is the same image: fold it into its owner
        owners = {variant: item for item in unique.values() for variant in item.variant_urls()}
        result = []
        for url, item in unique.items():
            owner = owners.get(url)
            if owner is not None and owner is not item and owner.url in unique:
                owner.alt = owner.alt or item.alt
                owner.title = owner.title or item.title
                owner.caption = owner.caption or item.caption
                owner.nearby_text = owner.nearby_text or item.nearby_text
                owner.elements += item.elements
                continue
            result.append(item)
        return result


def _density(srcset: str, url: str | None) -> float | None:
    for candidate, descriptor in parse_srcset(srcset):
        if candidate == url:
            if not descriptor:
                return 1.0
            match = _DESCRIPTOR.match(descriptor.split()[-1])
            return float(match.group(1)) if match and match.group(2) == "x" else None
    return None


def _img_choice(img: Tag) -> tuple[str | None, str, int | None, list[dict]]:
    """(url, source attribute, declared width, other renditions) of an <img>: lazy-load attributes
    beat a placeholder src, the largest srcset entry beats src."""
    src = str(img.get("src") or "").strip() or None
    for attribute in LAZY_SRCSET_ATTRIBUTES:
        if img.get(attribute):
            ranked = ranked_srcset(str(img[attribute]))
            if ranked:
                url, _, width = ranked[0]
                variants = [{"url": u, "descriptor": d} for u, d, _ in ranked[1:]]
                for lazy in LAZY_ATTRIBUTES:
                    if img.get(lazy):
                        variants.append({"url": str(img[lazy]), "descriptor": lazy})
                if src and not _is_placeholder(src):
                    variants.append({"url": src, "descriptor": "src"})
                return url, attribute, width, variants
    for attribute in LAZY_ATTRIBUTES:
        if img.get(attribute):
            variants = [{"url": src, "descriptor": "src"}] if src and not _is_placeholder(src) else []
            return str(img[attribute]), attribute, None, variants
    return src, "img", None, []


def _picture_choice(picture: Tag, img: Tag | None) -> tuple[str | None, str, list[dict]]:
    """The best rendition of a <picture>: the largest of the first source in a format we can keep."""
    renditions: list[tuple[str, str | None, str | None]] = []  # url, descriptor, type
    for source in picture.find_all("source"):
        srcset = source.get("srcset") or source.get("data-srcset")
        if not srcset:
            continue
        kind = str(source.get("type") or "").lower() or None
        for url, descriptor, _ in ranked_srcset(str(srcset)):
            renditions.append((url, descriptor, kind))
    if not renditions:
        return None, "picture", []
    chosen = next(
        (r for r in renditions if r[2] is None or r[2] in DECODABLE_TYPES),
        renditions[0],
    )
    variants = [{"url": u, "descriptor": t or d} for u, d, t in renditions if u != chosen[0]]
    if img is not None:
        fallback, _, _, more = _img_choice(img)
        if fallback and not _is_placeholder(fallback):
            variants.append({"url": fallback, "descriptor": "fallback"})
        variants += more
    return chosen[0], "picture", variants


def _json_ld_images(data) -> list[str]:
    """Every ``image`` of a JSON-LD document: a URL, a list, or an ImageObject (url / contentUrl)."""
    found: list[str] = []

    def image_urls(value) -> None:
        if isinstance(value, str):
            found.append(value)
        elif isinstance(value, list):
            for item in value:
                image_urls(item)
        elif isinstance(value, dict):
            for key in ("url", "contentUrl"):
                if isinstance(value.get(key), str):
                    found.append(value[key])
                    break

    def walk(node) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if key in ("image", "thumbnailUrl"):
                    image_urls(value)
                elif key == "logo":
                    continue  # an organisation's logo is site chrome, not content
                else:
                    walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(data)
    return found


@dataclass
class PageImages:
    items: list[Found]
    data_uris: int = 0  # inline images: nothing to fetch, counted so the skip is visible


def find_images(html: bytes | str, page_url: str) -> list[Found]:
    """Every image a page shows, once each, with its best URL and what the page says about it."""
    return extract_page(html, page_url).items


def extract_page(
    html: bytes | str,
    page_url: str,
    profile: SiteProfile | None = None,
    budget: ExtractBudget | None = None,
) -> PageImages:
    """The page's images; a site profile narrows them to its ``images`` selectors (the others are
    kept as junk so the skip is recorded) and attaches its ``fields`` to each. Raises
    ExtractionBudgetExceeded when the page needs more than ``budget`` (default: no limit)."""
    soup = BeautifulSoup(html_text(html), "lxml")
    base = page_url
    base_tag = soup.find("base", href=True)
    if base_tag:
        base = canonicalize(str(base_tag["href"]), page_url) or page_url
    collect = _Collector(base, budget)
    collect.budget.check()
    _collect(soup, collect, whole_page=True)
    items = collect.merged()
    if profile is not None:
        _apply_profile(soup, items, profile, collect.budget)
    for item in items:  # a tag holds its whole page: kept, every page of a run would stay in memory
        item.elements = []
    return PageImages(items, collect.data_uris)


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


def _collect(root: Tag, collect: _Collector, whole_page: bool) -> None:
    if whole_page:
        for meta in root.find_all("meta"):
            prop = str(meta.get("property") or meta.get("name") or "").lower()
            if prop in SOCIAL_META:
                collect.add(meta.get("content"), prop)
        for link in root.find_all("link", href=True):
            rels = {r.lower() for r in (link.get("rel") or [])}
            if rels & ICON_RELS or "shortcut" in rels:
                kind = " ".join(sorted(rels))
                collect.add(str(link["href"]), "link[rel=icon]", junk=f"favicon or touch icon (rel={kind})")
            elif "image_src" in rels:
                collect.add(str(link["href"]), "link[rel=image_src]")
        for script in root.find_all("script", type=lambda t: t and t.lower() == "application/ld+json"):
            try:
                data = json.loads(script.string or script.get_text() or "null")
            except ValueError:
                continue
            for url in _json_ld_images(data):
                collect.add(url, "json-ld")

    # a <noscript> that a parser kept as text still holds the real <img> of a lazy-loaded picture
    for noscript in root.find_all("noscript"):
        collect.budget.check()
        text = noscript.string
        if text and "<img" in text.lower():
            fragment = BeautifulSoup(text, "lxml")
            for img in fragment.find_all("img"):
                url, source, width, variants = _img_choice(img)
                collect.add(
                    url,
                    "noscript",
                    img,
                    alt=img.get("alt"),
                    title=img.get("title"),
                    width=width,
                    variants=variants,
                    context=noscript,
                )

    handled: set[int] = set()
    for link in root.find_all("a", href=True):
        img = link.find("img")
        if img is None:
            continue
        target = canonicalize(str(link["href"]), collect.base) or ""
        if looks_like_image(target) and not _FILE_PAGE.search(urlsplit(target).path):
            handled.add(id(img))
            thumb, _, _, more = _img_choice(img)
            variants = (
                [{"url": thumb, "descriptor": "thumbnail"}] if thumb and not _is_placeholder(thumb) else []
            )
            collect.add(
                str(link["href"]),
                "a[href]",
                img,
                alt=img.get("alt"),
                title=img.get("title") or link.get("title"),
                variants=variants + more,
            )

    for picture in root.find_all("picture"):
        img = picture.find("img")
        if img is not None and id(img) in handled:
            continue
        url, source, variants = _picture_choice(picture, img)
        if url:
            if img is not None:
                handled.add(id(img))  # the <img> is only the fallback of a larger <source>
            collect.add(
                url,
                source,
                img if img is not None else picture,
                alt=img.get("alt") if img is not None else None,
                title=img.get("title") if img is not None else None,
                variants=variants,
            )

    for img in root.find_all("img"):
        if id(img) in handled:
            continue
        url, source, srcset_width, variants = _img_choice(img)
        if source.endswith("srcset") and srcset_width is not None:
            width, height = srcset_width, None  # the w descriptor is the file's width
        elif source.endswith("srcset"):  # x descriptors: the attributes give the 1x size
            density = _density(str(img.get(source) or ""), url)
            width = int(_int_attr(img, "width") * density) if _int_attr(img, "width") and density else None
            height = int(_int_attr(img, "height") * density) if _int_attr(img, "height") and density else None
        else:
            width, height = _int_attr(img, "width"), _int_attr(img, "height")
        junk = None
        if source == "img" and url and _is_placeholder(url) and not _is_data_uri(url):
            junk = "lazy-load placeholder without a real image URL"
        collect.add(
            url,
            source,
            img,
            alt=img.get("alt"),
            title=img.get("title"),
            width=width,
            height=height,
            variants=variants,
            junk=junk,
        )

    for tag in root.find_all(style=True):
        collect.budget.check()
        for url in background_urls(str(tag["style"])):
            collect.add(url, "style", tag, title=tag.get("title"), alt=tag.get("aria-label"))


def _skip_reason(item: Found, cfg: HarvestConfig) -> str | None:
    """Why an image is junk, decided before download from the markup alone (None: fetch it)."""
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
    return None


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


def _robots(cfg: HarvestConfig) -> RobotsCache | None:
    if not cfg.respect_robots:
        return None
    from harvest.web.client import make_client

    return make_client(cfg).robots


def _robots_reason(robots: RobotsCache | None, url: str) -> str | None:
    """Disallowed images are skipped here, before download; an unreachable robots.txt leaves the
    image to the download stage, which records its own failure."""
    reason = robots_skip_reason(robots, url)
    if reason and robots is not None and robots.rules_for(url).unavailable:
        return None
    return reason


def _earlier_pages(
    cfg: HarvestConfig, store, profiles: list[SiteProfile], pages: list[Page]
) -> list[tuple[str, list[Found]]]:
    """The header/nav/footer images of pages an earlier attempt extracted, for judging site chrome
    (the only images that judgement counts); nothing is written."""
    found = []
    for page in pages:
        try:
            page_url, items = _extract_stored(cfg, store, profiles, page)
        except Exception as exc:  # noqa: BLE001 - it was extracted once; without it the judgement has less
            log.warning("extract: %s: cannot read it again to judge site chrome: %s", page.url, exc)
            continue
        found.append((page_url, [item for item in items.items if item.in_chrome]))
    return found


def _extract_stored(
    cfg: HarvestConfig, store, profiles: list[SiteProfile], page: Page
) -> tuple[str, PageImages]:
    """(the page's final URL, what its staged HTML names), parsed with its site's profile, within
    the run's per-page budget."""
    page_url = page.final_url or page.url
    html = store.get(page.content_key)
    budget = ExtractBudget(cfg.extract_seconds, cfg.extract_max_images)
    return page_url, extract_page(html, page_url, site_profile_for(profiles, host_of(page_url)), budget)


def _record_page_failure(cfg: HarvestConfig, page: Page, exc: Exception, report: StageReport) -> None:
    """The page is marked failed with the reason; a page over its budget says which limit it hit."""
    if isinstance(exc, ExtractionBudgetExceeded):
        error, group = f"extraction stopped, page over its budget: {exc}", "extraction budget exceeded"
    else:
        error, group = f"extraction failed: {exc}", f"extraction failed: {type(exc).__name__}"
    log.warning("extract: %s: %s", page.url, error)
    with session_scope(cfg.database_url) as session:
        session.execute(
            update(Page).where(Page.id == page.id).values(extract_status=Status.FAILED, error=error)
        )
    report.count("failed", group)


def run_extract(cfg: HarvestConfig) -> StageReport:
    """Pages are read first and written second: whether an image is site chrome (the same logo in
    the header of most pages) is only known once every page of the run has been seen. A re-run after
    an interrupted attempt reads the pages that attempt already extracted too, for that judgement
    only: from the remaining pages alone, a banner on a third of the site could pass for chrome.
    Until the judgement, what the pages name waits on disk: a crawl of a thousand gallery pages
    names a hundred thousand images."""
    report = StageReport("extract")
    store = open_store(cfg.staging, cfg.s3)
    with session_scope(cfg.database_url) as session:
        pages = session.scalars(
            select(Page)
            .where(
                Page.run_id == cfg.run_id,
                Page.status == Status.DONE,
                Page.extract_status.in_([Status.PENDING, Status.DONE]),
            )
            .order_by(Page.id)
        ).all()
    extracted = [page for page in pages if page.extract_status == Status.DONE]
    pages = [page for page in pages if page.extract_status == Status.PENDING]
    # only the images in a header, nav or footer count towards site chrome; the rest of what each
    # page names waits in a temporary file, not in memory, until chrome is known
    chrome_seen: list[tuple[str, list[Found]]] = []
    parsed = 0
    data_uris = 0
    profiles = load_site_profiles(cfg.site_profiles_dir)
    with tempfile.TemporaryFile(prefix="extract-") as spill:
        for page in pages:
            try:
                page_url, found = _extract_stored(cfg, store, profiles, page)
            except Exception as exc:  # one broken page must not stop the others
                if isinstance(exc, StorageError) and exc.transient:
                    raise  # the store failed, not the page: the stage fails and a re-run reads the page again
                _record_page_failure(cfg, page, exc, report)
                continue
            chrome_seen.append((page_url, [item for item in found.items if item.in_chrome]))
            pickle.dump((page.id, page_url, found.items), spill, protocol=pickle.HIGHEST_PROTOCOL)
            parsed += 1
            data_uris += found.data_uris
        chrome = chrome_images(
            chrome_seen + (_earlier_pages(cfg, store, profiles, extracted) if pages else [])
        )
        del chrome_seen
        robots = _robots(cfg)
        new_candidates = 0
        spill.seek(0)
        for index in range(1, parsed + 1):
            page_id, page_url, items = pickle.load(spill)
            rows = []
            for item in items:
                reason = _skip_reason(item, cfg) or chrome.get(item.url) or _robots_reason(robots, item.url)
                rows.append(
                    {
                        "run_id": cfg.run_id,
                        "url": item.url,
                        "page_url": page_url,
                        "source": item.source,
                        "alt": item.alt,
                        "title": item.title,
                        "variants": item.variants or None,
                        "caption": item.caption,
                        "nearby_text": item.nearby_text,
                        "page_fields": item.fields,
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
                session.execute(update(Page).where(Page.id == page_id).values(extract_status=Status.DONE))
            report.count("done")
            if index % 50 == 0:
                log.info("extract: %d/%d pages, %d candidates", index, parsed, new_candidates)
    report.extra["candidates"] = new_candidates
    report.extra["data_uri_images_ignored"] = data_uris
    log.info("%s; %d new candidates", report, new_candidates)
    return report
