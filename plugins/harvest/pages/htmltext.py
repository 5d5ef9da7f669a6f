"""Page bytes to text the way a browser decodes them, whatever the page claims about its encoding.

Left to themselves the parsers give up on the whole page at the first byte its declared encoding
cannot decode (a stray byte in a Shift_JIS page), or believe a ``<meta charset="utf-16">`` on an
ASCII page and read nothing: the page is then recorded as crawled with no links and no images.
Decoding here first, with replacement characters for bad bytes, keeps every tag readable.
"""

from __future__ import annotations

import codecs

_BOMS = (
    (codecs.BOM_UTF8, "utf-8"),
    (codecs.BOM_UTF32_LE, "utf-32-le"),
    (codecs.BOM_UTF32_BE, "utf-32-be"),
    (codecs.BOM_UTF16_LE, "utf-16-le"),
    (codecs.BOM_UTF16_BE, "utf-16-be"),
)


#: where a declaration is looked for: an XML declaration in the first 1 kB, a <meta> in the first
#: 2 kB or 5% of the page, whichever is more (as Beautiful Soup's EncodingDetector looks)
XML_WINDOW = 1024
META_WINDOW = 2048
_SPACE = b" \t\n\r\f\v"
_LABEL_END = b" /;'\">"


def _xml_encoding(body: bytes) -> bytes | None:
    """``encoding="..."`` of an ``<?xml ...?>`` declaration at the very start of the page."""
    head = body[:XML_WINDOW].lstrip(_SPACE)
    line = head.split(b"\n", 1)[0]
    end = line.rfind(b"?>")
    if not line.startswith(b"<?") or end < 0:
        return None
    declaration = line[:end]
    at = declaration.lower().rfind(b"encoding=")
    if at < 0:
        return None
    rest = declaration[at + len(b"encoding=") :]
    if rest[:1] not in (b'"', b"'"):
        return None
    close = min((i for i in (rest.find(b'"', 1), rest.find(b"'", 1)) if i > 0), default=-1)
    return rest[1:close] if close > 0 else None


def _meta_charset(body: bytes) -> bytes | None:
    """``charset=`` of the first ``<meta>`` tag that has one, read in a single pass: a regular
    expression over a page of unclosed ``<meta`` tags backtracks for hours."""
    window = body[: max(META_WINDOW, len(body) // 20)]
    lowered = window.lower()  # ASCII only: the same length as the bytes
    position = 0
    while (start := lowered.find(b"<", position)) >= 0:
        name = start + 1
        while name < len(lowered) and lowered[name : name + 1] in _SPACE:
            name += 1
        if not lowered.startswith(b"meta", name):
            position = name if name > start + 1 else start + 1
            continue
        end = lowered.find(b">", name)
        end = len(lowered) if end < 0 else end
        label = _charset_in(window, lowered, name + len(b"meta"), end)
        if label is not None:
            return label
        position = end
    return None


def _charset_in(window: bytes, lowered: bytes, start: int, end: int) -> bytes | None:
    """The value of ``charset\\s*=\\s*["']?`` within ``[start, end)``, up to a space, slash, semicolon,
    quote or ``>``; None when no such value ends inside the tag."""
    at = lowered.find(b"charset", start, end)
    while at >= 0:
        value = at + len(b"charset")
        while value < end and lowered[value : value + 1] in _SPACE:
            value += 1
        if value < end and lowered[value : value + 1] == b"=":
            value += 1
            while value < end and lowered[value : value + 1] in _SPACE:
                value += 1
            if value < end and lowered[value : value + 1] in (b'"', b"'"):
                value += 1
            stop = value
            while stop < len(window) and window[stop : stop + 1] not in _LABEL_END:
                stop += 1
            return window[value:stop] if stop < len(window) else None
        at = lowered.find(b"charset", value, end)
    return None


def _declared(body: bytes) -> str | None:
    """The usable encoding a page declares: a UTF-16/32 label on a page without a byte order mark
    means UTF-8 (as in the HTML standard), UTF-7 and unknown labels are ignored."""
    raw = _xml_encoding(body) or _meta_charset(body)
    label = raw.decode("ascii", "replace").strip() if raw else None
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
