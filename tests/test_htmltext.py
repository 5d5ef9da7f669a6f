"""Pages whose bytes do not match what they say about their encoding still give up their links and
images: decoding follows the browser's order (byte order mark, declared charset, UTF-8, Windows-1252)
and replaces what cannot be decoded."""

from __future__ import annotations

import pytest

from harvest.pages.htmltext import html_text
from harvest.pages.images import find_images
from harvest.stages.crawl import page_links

BODY = '<a href="/next.html">next</a><img src="/img/x.jpg" alt="caf\u00e9">'


def page(head: str = "", body: bytes | None = None) -> bytes:
    return f"<html><head>{head}</head><body>".encode() + (body or BODY.encode()) + b"</body></html>"


MISLABELLED = {
    "invalid UTF-8 sequences": page(
        '<meta charset="utf-8">', b"\xff\xfe\xc3\x28" + BODY.encode() + b"\xed\xa0"
    ),
    "an unknown charset": page('<meta charset="x-no-such-charset">'),
    "UTF-16 declared on an ASCII page": page('<meta charset="utf-16">'),
    "UTF-7, which browsers refuse": page('<meta charset="utf-7">'),
    "a stray byte in Shift_JIS": page('<meta charset="shift_jis">', b"\x82\xa0\xff\x80" + BODY.encode()),
    "UTF-16 with a byte order mark and an odd length": b"\xff\xfe"
    + page().decode().encode("utf-16-le")
    + b"\x00",
    "NUL bytes and binary noise": bytes(range(256)) + page(body=b"\x00" + BODY.encode() + b"\x00"),
}


@pytest.mark.parametrize("html", MISLABELLED.values(), ids=MISLABELLED.keys())
def test_links_and_images_survive_a_mislabelled_encoding(html):
    assert page_links(html, "http://s.example/") == ["http://s.example/next.html"]
    assert [item.url for item in find_images(html, "http://s.example/")] == ["http://s.example/img/x.jpg"]


@pytest.mark.parametrize(
    ("html", "text"),
    [
        (
            page(
                '<meta http-equiv="Content-Type" content="text/html; charset=iso-8859-1">',
                BODY.encode("latin-1"),
            ),
            "café",
        ),
        (b'<?xml version="1.0" encoding="ISO-8859-1"?>' + page(body=BODY.encode("latin-1")), "café"),
        (page(body=BODY.encode("cp1252") + b"\x93quoted\x94"), "\u201cquoted\u201d"),
        (page(body=BODY.encode("utf-8")), "café"),
        (b"\xef\xbb\xbf" + page(), "café"),
    ],
    ids=["declared latin-1", "XML declaration", "undeclared Windows-1252", "undeclared UTF-8", "UTF-8 BOM"],
)
def test_well_labelled_pages_decode_as_declared(html, text):
    assert text in html_text(html)
    assert find_images(html, "http://s.example/")[0].alt == "café"
