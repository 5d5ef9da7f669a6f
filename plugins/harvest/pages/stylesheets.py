"""Background images a page's stylesheets give its elements: ``<style>`` blocks and linked sheets.

A theme's hero or masthead photo is often set in CSS (``header.masthead { background-image:
url("../assets/img/header-bg.jpg") }``), not in the markup. The crawl stage fetches each linked
stylesheet of a run once (and the sheets it ``@import``s, one level deep) and stages it, keyed by the
run and its URL; the extract stage reads it back from the store, resolves each ``url()`` against the
sheet's own URL and keeps the background images whose rule's selector matches an element of the page.

A rule whose selector matches nothing on the page (the sheet styles other pages too), or that
soupsieve cannot read, is dropped: its image is not this page's.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, field

import tinycss2
from bs4 import Tag

from harvest.pages.base_href import parse_page
from harvest.pages.found import Collector
from harvest.pages.srcset import ranked_srcset
from harvest.urls import canonicalize

log = logging.getLogger(__name__)

#: the properties whose url() values are images of the element (also their custom-property feeders)
_BACKGROUND_PROPERTIES = ("background", "background-image")
_IMAGE_SET = {"image-set", "-webkit-image-set"}
#: pseudo-classes and pseudo-elements that depend on the user or the rendering: the rule's image is
#: still the element's, so they are removed before the selector is matched against the page
_DYNAMIC_PSEUDO = re.compile(
    r"::?(?:hover|focus|focus-within|focus-visible|active|visited|link|before|after|first-letter|"
    r"first-line|selection|placeholder|marker|backdrop)\b",
    re.IGNORECASE,
)
#: at-rules whose block holds ordinary rules
_NESTING_AT_RULES = {"media", "supports", "layer", "container", "document", "-moz-document"}

SOURCE_STYLESHEET = "stylesheet"
SOURCE_STYLE_BLOCK = "style-block"


@dataclass
class Rule:
    """One background image a rule names: the rule's selector and the image's absolute URL."""

    selector: str
    url: str
    variants: list[str]


def stylesheet_key(run_id: str, url: str) -> str:
    """Where the crawl stage stages a run's copy of a stylesheet (or why it has none)."""
    digest = hashlib.sha256(f"{run_id}\n{url}".encode()).hexdigest()
    return f"stylesheets/{digest}.json"


def stylesheet_links(html: bytes | str, page_url: str) -> list[str]:
    """Absolute URLs of the page's ``<link rel="stylesheet" href>``, in order, once each."""
    parsed = parse_page(html, page_url)
    if parsed is None:
        return []
    doc, base = parsed
    urls: list[str] = []
    for link in doc.xpath("//link[@href]"):
        rels = (link.get("rel") or "").lower().split()
        if "stylesheet" in rels and "alternate" not in rels:
            url = canonicalize(str(link.get("href")), base)
            if url and url not in urls:
                urls.append(url)
    return urls


def _rules(css: str) -> list:
    return tinycss2.parse_stylesheet(css, skip_comments=True, skip_whitespace=True)


def _url_of(token) -> str | None:
    if token.type == "url":
        return token.value
    if token.type == "string":
        return token.value
    if token.type == "function" and token.lower_name == "url":
        strings = [t.value for t in token.arguments if t.type == "string"]
        return strings[0] if strings else None
    return None


def import_urls(css: str, sheet_url: str) -> list[str]:
    """Absolute URLs of a stylesheet's ``@import`` rules."""
    urls = []
    for rule in _rules(css):
        if rule.type == "at-rule" and rule.lower_at_keyword == "import":
            for token in rule.prelude:
                raw = _url_of(token)
                if raw:
                    url = canonicalize(raw.strip(), sheet_url)
                    if url and url not in urls:
                        urls.append(url)
                    break
    return urls


def _image_set(function) -> list[str]:
    """The URLs of an ``image-set()``, largest first (ranked as a srcset with the same descriptors)."""
    entries, current = [], []
    for token in [*function.arguments, None]:
        if token is None or (token.type == "literal" and token.value == ","):
            text = " ".join(current)
            if text:
                entries.append(text)
            current = []
        elif token.type != "whitespace":
            url = _url_of(token)
            if url is not None:
                current.append(url.replace(" ", "%20").replace(",", "%2C"))
            elif token.type == "dimension":
                current.append(f"{token.representation}{token.unit}".replace("dppx", "x"))
    return [url for url, _, _ in ranked_srcset(", ".join(entries))]


def _value_images(tokens) -> list[list[str]]:
    """Each image a background value names, as [best URL, other renditions...]; gradients are passed
    over (they name no file)."""
    images = []
    for token in tokens:
        if token.type == "function" and token.lower_name in _IMAGE_SET:
            ranked = _image_set(token)
            if ranked:
                images.append(ranked)
        elif token.type in ("url", "function"):
            url = _url_of(token)
            if url and url.strip():
                images.append([url.strip()])
    return images


def background_rules(css: str, base_url: str) -> list[Rule]:
    """The background images of a stylesheet's rules (inside @media/@supports too), URLs resolved
    against ``base_url`` (the sheet's URL, or the page's base for a ``<style>`` block)."""
    found: list[Rule] = []

    def walk(rules) -> None:
        for rule in rules:
            if rule.type == "at-rule" and rule.lower_at_keyword in _NESTING_AT_RULES and rule.content:
                walk(tinycss2.parse_rule_list(rule.content, skip_comments=True, skip_whitespace=True))
            elif rule.type == "qualified-rule":
                selector = tinycss2.serialize(rule.prelude).strip()
                declarations = tinycss2.parse_blocks_contents(
                    rule.content, skip_comments=True, skip_whitespace=True
                )
                for declaration in declarations:
                    if declaration.type != "declaration":
                        continue
                    if not declaration.lower_name.endswith(_BACKGROUND_PROPERTIES):
                        continue
                    for urls in _value_images(declaration.value):
                        if urls[0].lower().startswith("data:"):
                            found.append(Rule(selector, urls[0], []))
                            continue
                        resolved = [u for u in (canonicalize(url, base_url) for url in urls) if u]
                        if resolved:
                            found.append(Rule(selector, resolved[0], resolved[1:]))

    walk(_rules(css))
    return found


def matched_element(root: Tag, selector: str) -> Tag | None:
    """The first element of the page a rule's selector list matches (user-action pseudo-classes and
    pseudo-elements removed first); None when nothing matches or soupsieve cannot read it."""
    selector = _DYNAMIC_PSEUDO.sub("", selector).strip()
    if not selector:
        return None
    try:
        return root.select_one(selector)
    except Exception:  # noqa: BLE001 - soupsieve raises several types for selectors it cannot read
        return None


@dataclass
class StagedSheet:
    """A stylesheet as the crawl stage staged it: its final URL and text, or why it has none."""

    url: str
    css: str | None = None
    error: str | None = None
    _parsed: tuple[list[Rule], list[str]] | None = field(default=None, repr=False, compare=False)

    def parsed(self) -> tuple[list[Rule], list[str]]:
        """(its background rules, the sheets it @imports), parsed once however many pages use it."""
        if self._parsed is None:
            css = self.css or ""
            self._parsed = (background_rules(css, self.url), import_urls(css, self.url))
        return self._parsed

    def to_bytes(self) -> bytes:
        return json.dumps({"url": self.url, "css": self.css, "error": self.error}).encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> StagedSheet:
        value = json.loads(data)
        return cls(value["url"], value.get("css"), value.get("error"))


def decode_css(body: bytes) -> str:
    """A stylesheet's text: a UTF-8 BOM or @charset-less bytes are read as UTF-8, bad bytes replaced."""
    return body.decode("utf-8-sig", errors="replace")


def collect_stylesheets(
    root: Tag, collect: Collector, load: Callable[[str], StagedSheet | None] | None = None
) -> None:
    """Background images of the page's ``<style>`` blocks and, with ``load``, of its linked
    stylesheets and the sheets they @import: only those whose rule matches an element of the page."""

    def add_rules(rules: list[Rule], source: str) -> None:
        for rule in rules:
            collect.budget.check()
            if rule.url.lower().startswith("data:"):
                collect.add(rule.url, source)  # counted as an inline image, nothing to fetch
                continue
            element = matched_element(root, rule.selector)
            if element is None:
                continue
            collect.add(
                rule.url,
                source,
                element,
                title=element.get("title"),
                alt=element.get("aria-label"),
                variants=[{"url": url, "descriptor": "image-set"} for url in rule.variants],
            )

    for style in root.find_all("style"):
        collect.budget.check()
        kind = str(style.get("type") or "text/css").lower()
        if kind == "text/css":
            add_rules(background_rules(style.get_text(), collect.base), SOURCE_STYLE_BLOCK)
    if load is None:
        return
    for link in root.find_all("link", href=True):
        rels = {r.lower() for r in (link.get("rel") or [])}
        if "stylesheet" not in rels or "alternate" in rels:
            continue
        url = canonicalize(str(link["href"]), collect.base)
        sheet = load(url) if url else None
        if sheet is None or sheet.css is None:
            continue
        rules, imports = sheet.parsed()
        for imported in imports:
            inner = load(imported)
            if inner is not None and inner.css is not None:
                add_rules(inner.parsed()[0], SOURCE_STYLESHEET)
        add_rules(rules, SOURCE_STYLESHEET)
