"""Each kind of place an HTML page names an image, read into a Collector one kind at a time."""

from __future__ import annotations

import json
import re
from urllib.parse import urlsplit

from bs4 import BeautifulSoup, Tag

from harvest.pages.css_background import background_urls
from harvest.pages.found import Collector, is_data_uri, is_placeholder
from harvest.pages.srcset import ranked_srcset, srcset_density
from harvest.urls import canonicalize, looks_like_image

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
#: MediaWiki links a thumbnail to its description page (/wiki/File:Cat.jpg), not to the image file.
_FILE_PAGE = re.compile(r"/(?:File|Image|Datei|Fichier|Archivo|Bestand):[^/]*$", re.IGNORECASE)


def int_attribute(tag: Tag, name: str) -> int | None:
    value = str(tag.get(name) or "").strip().removesuffix("px")
    return int(value) if value.isdigit() else None


def img_choice(img: Tag) -> tuple[str | None, str, int | None, list[dict]]:
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
                if src and not is_placeholder(src):
                    variants.append({"url": src, "descriptor": "src"})
                return url, attribute, width, variants
    for attribute in LAZY_ATTRIBUTES:
        if img.get(attribute):
            variants = [{"url": src, "descriptor": "src"}] if src and not is_placeholder(src) else []
            return str(img[attribute]), attribute, None, variants
    return src, "img", None, []


def picture_choice(picture: Tag, img: Tag | None) -> tuple[str | None, str, list[dict]]:
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
        fallback, _, _, more = img_choice(img)
        if fallback and not is_placeholder(fallback):
            variants.append({"url": fallback, "descriptor": "fallback"})
        variants += more
    return chosen[0], "picture", variants


def json_ld_images(data) -> list[str]:
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


def collect_social_meta(root: Tag, collect: Collector) -> None:
    """og:image and twitter:image of the page's <meta> tags."""
    for meta in root.find_all("meta"):
        prop = str(meta.get("property") or meta.get("name") or "").lower()
        if prop in SOCIAL_META:
            collect.add(meta.get("content"), prop)


def collect_link_rels(root: Tag, collect: Collector) -> None:
    """<link rel=image_src>, and favicons/touch icons (recorded as junk so the skip is visible)."""
    for link in root.find_all("link", href=True):
        rels = {r.lower() for r in (link.get("rel") or [])}
        if rels & ICON_RELS or "shortcut" in rels:
            kind = " ".join(sorted(rels))
            collect.add(str(link["href"]), "link[rel=icon]", junk=f"favicon or touch icon (rel={kind})")
        elif "image_src" in rels:
            collect.add(str(link["href"]), "link[rel=image_src]")


def collect_json_ld(root: Tag, collect: Collector) -> None:
    """The ``image`` entries of the page's JSON-LD scripts; a script that is not JSON is passed over."""
    for script in root.find_all("script", type=lambda t: t and t.lower() == "application/ld+json"):
        try:
            data = json.loads(script.string or script.get_text() or "null")
        except ValueError:
            continue
        for url in json_ld_images(data):
            collect.add(url, "json-ld")


def collect_noscript(root: Tag, collect: Collector) -> None:
    """A <noscript> that a parser kept as text still holds the real <img> of a lazy-loaded picture."""
    for noscript in root.find_all("noscript"):
        collect.budget.check()
        text = noscript.string
        if text and "<img" in text.lower():
            fragment = BeautifulSoup(text, "lxml")
            for img in fragment.find_all("img"):
                url, source, width, variants = img_choice(img)
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


def collect_linked_files(root: Tag, collect: Collector, handled: set[int]) -> None:
    """A thumbnail linking to its full-size image file: the file is the image, the thumbnail a
    variant. The thumbnail's <img> is added to ``handled`` so it is not collected again."""
    for link in root.find_all("a", href=True):
        img = link.find("img")
        if img is None:
            continue
        target = canonicalize(str(link["href"]), collect.base) or ""
        if looks_like_image(target) and not _FILE_PAGE.search(urlsplit(target).path):
            handled.add(id(img))
            thumb, _, _, more = img_choice(img)
            variants = (
                [{"url": thumb, "descriptor": "thumbnail"}] if thumb and not is_placeholder(thumb) else []
            )
            collect.add(
                str(link["href"]),
                "a[href]",
                img,
                alt=img.get("alt"),
                title=img.get("title") or link.get("title"),
                variants=variants + more,
            )


def collect_pictures(root: Tag, collect: Collector, handled: set[int]) -> None:
    """The best rendition of each <picture>; its <img> is only the fallback, so it joins ``handled``."""
    for picture in root.find_all("picture"):
        img = picture.find("img")
        if img is not None and id(img) in handled:
            continue
        url, source, variants = picture_choice(picture, img)
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


def _img_size(
    img: Tag, url: str | None, source: str, srcset_width: int | None
) -> tuple[int | None, int | None]:
    """(width, height) of the chosen file: a w descriptor is its width; with x descriptors the
    attributes give the 1x size; otherwise the attributes themselves."""
    if source.endswith("srcset") and srcset_width is not None:
        return srcset_width, None
    if source.endswith("srcset"):
        density = srcset_density(str(img.get(source) or ""), url)
        width = (
            int(int_attribute(img, "width") * density) if int_attribute(img, "width") and density else None
        )
        height = (
            int(int_attribute(img, "height") * density) if int_attribute(img, "height") and density else None
        )
        return width, height
    return int_attribute(img, "width"), int_attribute(img, "height")


def collect_imgs(root: Tag, collect: Collector, handled: set[int]) -> None:
    """Every <img> not already read as a linked thumbnail or a <picture> fallback."""
    for img in root.find_all("img"):
        if id(img) in handled:
            continue
        url, source, srcset_width, variants = img_choice(img)
        width, height = _img_size(img, url, source, srcset_width)
        junk = None
        if source == "img" and url and is_placeholder(url) and not is_data_uri(url):
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


def collect_inline_styles(root: Tag, collect: Collector) -> None:
    """Background images of inline ``style`` attributes."""
    for tag in root.find_all(style=True):
        collect.budget.check()
        for url in background_urls(str(tag["style"])):
            collect.add(url, "style", tag, title=tag.get("title"), alt=tag.get("aria-label"))


def collect_page_images(root: Tag, collect: Collector) -> None:
    """Every place the page names an image, in this order: the order decides which mention of an
    image is kept first when the collector merges them."""
    collect_social_meta(root, collect)
    collect_link_rels(root, collect)
    collect_json_ld(root, collect)
    collect_noscript(root, collect)
    handled: set[int] = set()  # ids of the <img> tags already read as part of something larger
    collect_linked_files(root, collect, handled)
    collect_pictures(root, collect, handled)
    collect_imgs(root, collect, handled)
    collect_inline_styles(root, collect)
