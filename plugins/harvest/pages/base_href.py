"""The URL a page's relative links resolve against: its first ``<base href>``, or the page itself."""

from __future__ import annotations

from harvest.urls import canonicalize


def document_base(page_url: str, base_href: str | None) -> str:
    """``base_href`` (the first ``<base href>`` of the page, if any) resolved against the page URL;
    the page URL when there is none or it does not resolve."""
    if base_href is None:
        return page_url
    return canonicalize(str(base_href), page_url) or page_url
