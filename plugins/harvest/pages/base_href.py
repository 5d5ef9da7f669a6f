"""The URL a page's relative links resolve against: its first ``<base href>``, or the page itself."""

from __future__ import annotations

import lxml.etree
import lxml.html

from harvest.pages.htmltext import html_text
from harvest.urls import canonicalize


def document_base(page_url: str, base_href: str | None) -> str:
    """``base_href`` (the first ``<base href>`` of the page, if any) resolved against the page URL;
    the page URL when there is none or it does not resolve."""
    if base_href is None:
        return page_url
    return canonicalize(str(base_href), page_url) or page_url


def parse_page(html: bytes | str, page_url: str) -> tuple[lxml.html.HtmlElement, str] | None:
    """The page as an lxml document, decoded the way a browser does, and the URL its relative links
    resolve against; None when it does not parse (the crawl and the stylesheet reader both start here)."""
    try:
        parser = lxml.html.HTMLParser(encoding="utf-8")
        doc = lxml.html.fromstring(html_text(html).encode("utf-8"), parser=parser)
    except (lxml.etree.ParserError, ValueError):
        return None
    return doc, document_base(page_url, next(iter(doc.xpath("//base/@href")), None))
