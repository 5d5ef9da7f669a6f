"""Licence names as the APIs give them -> SPDX identifiers where one exists (None otherwise), and
the HTML of a Commons ``Artist`` field -> its text."""

from __future__ import annotations

import re
from html import unescape
from html.parser import HTMLParser

#: Flickr's licence ids (flickr.photos.licenses.getInfo): (name, URL, SPDX id or None)
FLICKR_LICENSES: dict[str, tuple[str, str | None, str | None]] = {
    "0": ("All Rights Reserved", None, None),
    "1": ("CC BY-NC-SA 2.0", "https://creativecommons.org/licenses/by-nc-sa/2.0/", "CC-BY-NC-SA-2.0"),
    "2": ("CC BY-NC 2.0", "https://creativecommons.org/licenses/by-nc/2.0/", "CC-BY-NC-2.0"),
    "3": ("CC BY-NC-ND 2.0", "https://creativecommons.org/licenses/by-nc-nd/2.0/", "CC-BY-NC-ND-2.0"),
    "4": ("CC BY 2.0", "https://creativecommons.org/licenses/by/2.0/", "CC-BY-2.0"),
    "5": ("CC BY-SA 2.0", "https://creativecommons.org/licenses/by-sa/2.0/", "CC-BY-SA-2.0"),
    "6": ("CC BY-ND 2.0", "https://creativecommons.org/licenses/by-nd/2.0/", "CC-BY-ND-2.0"),
    "7": ("No known copyright restrictions", "https://www.flickr.com/commons/usage/", None),
    "8": ("United States Government Work", "http://www.usa.gov/copyright.shtml", None),
    "9": ("CC0 1.0", "https://creativecommons.org/publicdomain/zero/1.0/", "CC0-1.0"),
    "10": ("Public Domain Mark 1.0", "https://creativecommons.org/publicdomain/mark/1.0/", None),
    "11": ("CC BY 4.0", "https://creativecommons.org/licenses/by/4.0/", "CC-BY-4.0"),
    "12": ("CC BY-SA 4.0", "https://creativecommons.org/licenses/by-sa/4.0/", "CC-BY-SA-4.0"),
    "13": ("CC BY-ND 4.0", "https://creativecommons.org/licenses/by-nd/4.0/", "CC-BY-ND-4.0"),
    "14": ("CC BY-NC 4.0", "https://creativecommons.org/licenses/by-nc/4.0/", "CC-BY-NC-4.0"),
    "15": ("CC BY-NC-SA 4.0", "https://creativecommons.org/licenses/by-nc-sa/4.0/", "CC-BY-NC-SA-4.0"),
    "16": ("CC BY-NC-ND 4.0", "https://creativecommons.org/licenses/by-nc-nd/4.0/", "CC-BY-NC-ND-4.0"),
}

_CC = re.compile(r"^cc[ -](by(?:[ -](?:nc|sa|nd))*)[ -](\d\.\d)(?:[ -]([a-z]{2,3}))?$", re.IGNORECASE)


def spdx_of(name: str | None) -> str | None:
    """``CC BY-SA 4.0`` -> ``CC-BY-SA-4.0``, ``CC0`` -> ``CC0-1.0``; None when SPDX has no id for it
    (public domain marks, "attribution only", all rights reserved, unknown)."""
    if not name:
        return None
    text = name.strip()
    if text.lower() in ("cc0", "cc0 1.0", "cc-zero", "cc0-1.0"):
        return "CC0-1.0"
    match = _CC.match(text)
    if not match:
        return None
    kinds = match.group(1).upper().replace(" ", "-")
    port = f"-{match.group(3).upper()}" if match.group(3) else ""
    return f"CC-{kinds}-{match.group(2)}{port}"


class _Text(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.parts: list[str] = []
        self.links: list[str] = []

    def handle_data(self, data: str) -> None:
        self.parts.append(data)

    def handle_starttag(self, tag: str, attrs: list) -> None:
        if tag == "a":
            self.links += [value for name, value in attrs if name == "href" and value]


def html_text(html: str | None) -> tuple[str | None, str | None]:
    """The text of an HTML fragment (Commons' ``Artist`` is HTML) and its first link."""
    if not html:
        return None, None
    parser = _Text()
    parser.feed(html)
    text = " ".join(unescape("".join(parser.parts)).split())
    link = parser.links[0] if parser.links else None
    if link and link.startswith("//"):
        link = "https:" + link
    return text or None, link
