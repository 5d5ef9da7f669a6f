"""What an image is for, told by its markup: an avatar, an emoji, the site's logo or a tracking pixel
in <noscript>. Each rule answers with the reason the image is skipped (None: content, fetch it).

The rules read tokens, not substrings: a class ``account__avatar`` or a file ``site-logo.png`` names
an avatar or a logo; an alt text is read only when it is short (a label, not a sentence), so a
photo described as "a user feeding the ducks" stays content."""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from urllib.parse import urljoin, urlsplit

from bs4 import Tag

# Every pattern below is a literal, a character class or an alternation of literals: linear time on
# the attribute values and URLs a site chooses.
_TOKEN_SPLIT = re.compile(r"[^a-z0-9]+")
_AVATAR_TOKENS = {"avatar", "avatars", "gravatar", "userpic", "userpics", "usericon"}
_PROFILE_TOKENS = {"profile", "user", "author"}
_PICTURE_TOKENS = {"pic", "picture", "photo", "image", "img", "thumb", "icon"}
_AVATAR_PATHS = ("/avatars/", "/avatar/", "profile_images", "profile_pics", "profile-images", "/userpics/")
_HEADER_TOKENS = {"header", "masthead", "topbar"}
_AVATAR_PHRASES = ("profile picture", "profile photo", "profile image", "user avatar")
_EMOJI_TOKENS = {"emoji", "emojis", "twemoji", "emojione", "wp", "smiley"}
_EMOJI_PATHS = ("/images/core/emoji/", "/emoji/", "/emojis/", "/custom_emojis/", "twemoji")
_LOGO_TOKENS = {"logo", "logos", "logotype", "sitelogo", "brand"}
_IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".gif", ".webp", ".avif", ".bmp", ".tif", ".tiff", ".jxl")
_TRACKER_TOKENS = {"pixel", "beacon", "count", "counter", "stats", "stat", "track", "tracking", "hit"}
#: An alt longer than this is a description, not a label naming what the image is.
SHORT_ALT = 40
SHORT_ALT_WORDS = 5
#: A declared size at most this is a small picture (an avatar or an icon), not a content photo.
SMALL_SIDE = 160
#: This many different small images sharing one class on a page are a list's avatars or icons.
REPEATS = 3


def tokens(*values: str | None) -> set[str]:
    found: set[str] = set()
    for value in values:
        if value:
            found.update(token for token in _TOKEN_SPLIT.split(value.lower()) if token)
    return found


def _class_and_id(tag: Tag | None) -> str:
    """The class and id of an image and of its two closest parents (a ``<span class="avatar">``
    wrapping a plain ``<img>``)."""
    parts: list[str] = []
    node = tag
    for _ in range(3):
        if not isinstance(node, Tag) or node.name in ("body", "html", "[document]"):
            break
        classes = node.get("class") or []
        parts.append(" ".join(classes) if isinstance(classes, list) else str(classes))
        parts.append(str(node.get("id") or ""))
        node = node.parent
    return " ".join(parts)


def _file_tokens(url: str) -> set[str]:
    name = urlsplit(url).path.rsplit("/", 1)[-1]
    return tokens(name.rsplit(".", 1)[0])


def _short(alt: str | None) -> str:
    """The alt text when it is a label (a few words), else "": a sentence describes a photo."""
    alt = " ".join((alt or "").split())
    return alt.lower() if len(alt) <= SHORT_ALT and len(alt.split()) <= SHORT_ALT_WORDS else ""


def is_emoji_text(text: str | None) -> bool:
    """A short alt made only of emoji: pictographs with their joiners, skin tones and selectors."""
    text = (text or "").strip()
    if not text or len(text) > 10:
        return False
    pictographs = 0
    for char in text:
        code = ord(char)
        if (
            code in (0x200D, 0xFE0E, 0xFE0F, 0x20E3)
            or 0x1F3FB <= code <= 0x1F3FF
            or 0xE0020 <= code <= 0xE007F
        ):
            continue  # joiner, variation selectors, keycap, skin tone, tag characters
        if (
            code >= 0x1F000
            or 0x2600 <= code <= 0x27BF
            or 0x2B00 <= code <= 0x2BFF
            or 0x2190 <= code <= 0x21FF
        ):
            pictographs += 1
            continue
        if unicodedata.category(char) == "So":
            pictographs += 1
            continue
        return False
    return pictographs > 0


def emoji_reason(url: str, alt: str | None, marks: set[str]) -> str | None:
    if "emoji" in marks or "twemoji" in marks or "emojione" in marks or {"wp", "smiley"} <= marks:
        return "emoji image (by class)"
    path = url.lower()
    if any(part in path for part in _EMOJI_PATHS):
        return "emoji image (by URL)"
    if is_emoji_text(alt):
        return "emoji image (alt is an emoji)"
    return None


def avatar_reason(
    url: str, alt: str | None, marks: set[str], width: int | None, height: int | None
) -> str | None:
    parts = urlsplit(url)
    if marks & _AVATAR_TOKENS:
        return "avatar or profile picture (by class)"
    if parts.hostname and parts.hostname.endswith("gravatar.com"):
        return "avatar or profile picture (gravatar)"
    if any(part in parts.path.lower() for part in _AVATAR_PATHS) or tokens(parts.path) & _AVATAR_TOKENS:
        return "avatar or profile picture (by URL)"
    alt_text = _short(alt)
    if alt_text and (tokens(alt_text) & _AVATAR_TOKENS or any(p in alt_text for p in _AVATAR_PHRASES)):
        return "avatar or profile picture (by alt text)"
    small = bool(width and height and max(width, height) <= SMALL_SIDE)
    if small and marks & _PROFILE_TOKENS and marks & _PICTURE_TOKENS:
        return f"avatar or profile picture (class names a profile picture, declared {width}x{height})"
    return None


def logo_reason(url: str, alt: str | None, marks: set[str], link: str | None, page_base: str) -> str | None:
    if marks & _LOGO_TOKENS - {"brand"} or {"navbar", "brand"} <= marks:
        return "site logo (by class or id)"
    if _file_tokens(url) & _LOGO_TOKENS - {"brand"}:
        return "site logo (by file name)"
    alt_text = _short(alt)
    if alt_text and tokens(alt_text) & {"logo", "logotype"}:
        return "site logo (by alt text)"
    if link is not None:
        target, page = urlsplit(urljoin(page_base, link)), urlsplit(page_base)
        home = target.path in ("", "/", "/index.html", "/index.htm", "/index.php", "/default.asp")
        if home and not target.query and target.netloc.lower() == page.netloc.lower():
            return "site logo (links to the site's home page)"
    return None


def header_reason(url: str, marks: set[str], width: int | None, height: int | None) -> str | None:
    """A masthead graphic named so by its file (``images/header_right.jpg``) and declared wide and
    short. Without a declared size the name alone says too little: a theme's hero photo is often
    ``header-bg.jpg``, set as a stylesheet background."""
    wide = bool(width and height) and width >= 3 * height
    if wide and _file_tokens(url) & _HEADER_TOKENS:
        return "page header graphic (by file name)"
    return None


def noscript_tracker_reason(url: str, width: int | None, height: int | None) -> str | None:
    """An image only a browser without JavaScript loads, that is a hit counter, not a picture."""
    parts = urlsplit(url)
    if (width is not None and width <= 2) or (height is not None and height <= 2):
        return "tracking pixel in <noscript> (declared 1x1)"
    if not parts.path.lower().endswith(_IMAGE_SUFFIXES):
        return "tracking pixel in <noscript> (not an image file)"
    if parts.query and (_file_tokens(url) & _TRACKER_TOKENS or tokens(parts.hostname) & _TRACKER_TOKENS):
        return "tracking pixel in <noscript> (counter URL)"
    return None


def markup_role_reason(
    tag: Tag | None,
    url: str,
    alt: str | None,
    width: int | None,
    height: int | None,
    page_base: str,
    in_noscript: bool,
) -> str | None:
    """Why an image is not content, from what its own markup says; None when nothing says so."""
    marks = tokens(_class_and_id(tag)) if tag is not None else set()
    if in_noscript:
        reason = noscript_tracker_reason(url, width, height)
        if reason:
            return reason
    link = None
    if isinstance(tag, Tag):
        anchor = tag.find_parent("a", href=True)
        if anchor is not None:
            link = str(anchor["href"])
    return (
        emoji_reason(url, alt, marks)
        or avatar_reason(url, alt, marks, width, height)
        or logo_reason(url, alt, marks, link, page_base)
        or header_reason(url, marks, width, height)
    )


def repeated_small_images(items: list) -> dict[str, str]:
    """Different small images wearing the same class on one page: the avatars of a timeline or the
    icons of a list. Returns url -> reason."""
    groups: Counter[tuple[str, int, int]] = Counter()
    for item in items:
        if item.css_class and item.width and item.height and max(item.width, item.height) <= SMALL_SIDE:
            groups[(item.css_class, item.width, item.height)] += 1
    reasons = {}
    for item in items:
        key = (item.css_class, item.width, item.height)
        if item.css_class and groups.get(key, 0) >= REPEATS:
            reasons[item.url] = (
                f"repeated small image: {groups[key]} images of class '{item.css_class}' "
                f"at {item.width}x{item.height} (avatars or icons)"
            )
    return reasons
