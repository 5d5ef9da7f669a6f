"""One image a page names (Found), and the collector that merges the mentions of the same image."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from bs4 import Tag

from harvest.pages.budget import ExtractBudget
from harvest.pages.roles import markup_role_reason
from harvest.pages.surroundings import caption_of, clean_text, in_site_chrome, nearby_text
from harvest.urls import canonicalize

# Every pattern below runs on text a site chooses (attribute values, URLs of up to a whole page):
# each is a literal, an alternation of literals or anchored with single-position quantifiers, so a
# search costs time linear in the text. Anything needing more (CSS) is scanned by code.
#: Placeholders lazy-loading scripts put in ``src`` until the real image scrolls into view: one of
#: these words in the file name of a .gif, .png or .svg (see is_placeholder).
_PLACEHOLDER_WORD = re.compile(r"placeholder|blank|spacer|transparent|lazy|loading|grey|gray|empty")
_PLACEHOLDER_TYPES = (".gif", ".png", ".svg")


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
    role: str | None = None  # what the markup says the image is for, when not content (emoji, avatar)
    css_class: str | None = None  # the <img>'s class attribute: repeated small images share one
    fields: dict | None = None
    #: what the page's markup says about the image's licence (harvest.pages.licence_markup)
    licence: dict | None = None
    #: how a script-fed page showed it (pages/script_fed.py); None: named by the HTML as sent
    found_by: dict | None = None
    elements: list = field(default_factory=list, compare=False, repr=False)  # where the page names it

    def variant_urls(self) -> set[str]:
        return {variant["url"] for variant in self.variants}


def is_data_uri(raw: str | None) -> bool:
    return bool(raw) and raw.strip().lower().startswith("data:")


def is_placeholder(raw: str | None) -> bool:
    """A data: URI, or a .gif/.png/.svg whose file name has a placeholder word (blank.gif)."""
    if not raw:
        return False
    if is_data_uri(raw):
        return True
    path = raw.split("?", 1)[0].lower()
    if not path.endswith(_PLACEHOLDER_TYPES):
        return False
    name = path[path.rfind("/") + 1 : -len(".gif")]
    return _PLACEHOLDER_WORD.search(name) is not None


class Collector:
    """Collects what one page says about its images, then merges mentions of the same image."""

    def __init__(self, base: str, budget: ExtractBudget | None = None):
        self.base = base
        self.found: list[Found] = []
        self.data_uris = 0
        self.budget = budget or ExtractBudget(float("inf"), 2**62)

    def url(self, raw: str | None) -> str | None:
        if not raw or is_data_uri(raw):
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
        if is_data_uri(raw):
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
        in_noscript = context is not None and (
            context.name == "noscript" or context.find_parent("noscript") is not None
        )
        role = None
        if tag is not None:
            role = markup_role_reason(tag, url, clean_text(alt), width, height, self.base, in_noscript)
        classes = tag.get("class") if tag is not None and tag.name == "img" else None
        css_class = " ".join(classes) if isinstance(classes, list) else classes
        caption = caption_of(context) if context is not None else None
        self.found.append(
            Found(
                url,
                source,
                clean_text(alt),
                clean_text(title),
                width,
                height,
                caption=caption,
                nearby_text=nearby_text(context, caption) if context is not None else None,
                variants=clean,
                in_chrome=in_site_chrome(context) if context is not None else False,
                junk=junk,
                role=role,
                css_class=css_class or None,
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
                first.role = first.role if item.role else None
                first.found_by = first.found_by or item.found_by
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
