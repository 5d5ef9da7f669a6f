"""Page bytes to text the way a browser decodes them, whatever the page claims about its encoding.

Left to themselves the parsers give up on the whole page at the first byte its declared encoding
cannot decode (a stray byte in a Shift_JIS page), or believe a ``<meta charset="utf-16">`` on an
ASCII page and read nothing: the page is then recorded as crawled with no links and no images.
Decoding here first, with replacement characters for bad bytes, keeps every tag readable.
"""

from __future__ import annotations

import codecs

from bs4.dammit import EncodingDetector

_BOMS = (
    (codecs.BOM_UTF8, "utf-8"),
    (codecs.BOM_UTF32_LE, "utf-32-le"),
    (codecs.BOM_UTF32_BE, "utf-32-be"),
    (codecs.BOM_UTF16_LE, "utf-16-le"),
    (codecs.BOM_UTF16_BE, "utf-16-be"),
)


def _declared(body: bytes) -> str | None:
    """The usable encoding a page declares: a UTF-16/32 label on a page without a byte order mark
    means UTF-8 (as in the HTML standard), UTF-7 and unknown labels are ignored."""
    label = EncodingDetector.find_declared_encoding(body, is_html=True)
    if not label:
        return None
    try:
        name = codecs.lookup(label).name
    except LookupError:
        return None
    if name.startswith(("utf-16", "utf-32")):
        return "utf-8"
    return None if name == "utf-7" else name


def html_text(body: bytes | str) -> str:
    """The page as text: byte order mark, then declared encoding, then UTF-8, then Windows-1252."""
    if isinstance(body, str):
        return body
    for bom, encoding in _BOMS:
        if body.startswith(bom):
            return body[len(bom) :].decode(encoding, "replace")
    encoding = _declared(body)
    if encoding:
        return body.decode(encoding, "replace")
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError:
        return body.decode("windows-1252", "replace")
