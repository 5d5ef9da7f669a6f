"""What surrounds an image on its page: caption, nearby text, and whether it sits in the site chrome."""

from __future__ import annotations

from bs4 import Tag

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


def clean_text(value) -> str | None:
    if value is None:
        return None
    text = " ".join(str(value).split())
    return text or None


def in_site_chrome(tag: Tag) -> bool:
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


def caption_of(tag: Tag) -> str | None:
    """figcaption of the enclosing figure, or a caption element next to the image's container
    (WordPress wp-caption-text, a MediaWiki infobox-caption). Only containers holding this one
    image are searched, so a caption is never borrowed from another image."""
    for depth, parent in enumerate(tag.parents):
        if depth > 4 or parent.name in SECTION_TAGS or _holds_several_images(parent):
            break
        if parent.name == "figure":
            caption = parent.find("figcaption", recursive=False)
            if caption is not None:
                return clean_text(caption.get_text(" "))
        for child in parent.find_all(True, recursive=False):
            if child is not tag and _is_caption(child) and child.find("img") is None:
                return clean_text(child.get_text(" "))
    return None


def nearby_text(tag: Tag, caption: str | None) -> str | None:
    """Text of the closest block around this image alone (without the caption); failing that, the
    paragraph or heading just before it."""
    for depth, parent in enumerate(tag.parents):
        if depth > 4 or parent.name in SECTION_TAGS or parent.name is None or _holds_several_images(parent):
            break
        if parent.name not in BLOCK_TAGS:
            continue
        text = clean_text(parent.get_text(" "))
        if caption and text:
            text = clean_text(text.replace(caption, " "))
        if text and len(text) >= 20:
            return text[:NEARBY_TEXT_CHARS]
    for previous in tag.find_all_previous(["p", "h1", "h2", "h3", "h4", "h5", "h6"], limit=5):
        if _is_caption(previous) or in_site_chrome(previous):
            continue
        text = clean_text(previous.get_text(" "))
        if text:
            return text[:NEARBY_TEXT_CHARS]
    return None
