"""Identifying values in XMP packets and IPTC-IIM records: where a photo was taken and who took it.

The published copy never carries XMP or IPTC at all (see :mod:`harvest.images.sanitize`); these readers
only pick out the values worth keeping privately (encrypted, like the EXIF GPS position). They look
for properties by name with regular expressions rather than parsing the XML: a hostile packet can be
malformed, huge or an entity bomb, and a pattern over a bounded prefix reads none of that.
"""

from __future__ import annotations

import html
import re
import struct
from typing import Any

#: how much of the packets is searched, in all: the identifying properties sit in the main packet,
#: which writers keep small; the bytes are removed from the published copy whatever their size
MAX_SEARCHED = 512 * 1024
#: private field name -> XMP property local names (any namespace prefix)
XMP_TEXT = {
    "xmp_creator": ("creator",),
    "xmp_city": ("City",),
    "xmp_state": ("State",),
    "xmp_country": ("Country",),
    "xmp_location": ("Location", "Sublocation"),
    "xmp_serial_number": ("SerialNumber", "BodySerialNumber"),
    "xmp_lens_serial_number": ("LensSerialNumber",),
    "xmp_owner_name": ("OwnerName", "CameraOwnerName"),
}
_NAMES = ("GPSLatitude", "GPSLongitude", *(name for names in XMP_TEXT.values() for name in names))
#: IPTC-IIM application record (2) datasets -> private field name
IPTC_FIELDS = {
    80: "iptc_by_line",
    85: "iptc_by_line_title",
    90: "iptc_city",
    92: "iptc_sublocation",
    95: "iptc_province_state",
    101: "iptc_country",
    118: "iptc_contact",
}
_REPEATABLE = {"iptc_by_line", "iptc_by_line_title", "iptc_contact"}
#: Patterns are bounded (prefix, attribute value, tag length) and look for every property in one
#: pass, so that a hostile packet costs time in proportion to its size: an unclosed quote or tag
#: ends a match after a few kilobytes instead of rescanning the rest of the packet from every start.
_PREFIX = rb"(?:[\w.-]{1,64}:)?"


def _property_patterns(names: tuple[str, ...]) -> tuple[re.Pattern[bytes], re.Pattern[bytes]]:
    """(attribute form, element form) patterns for properties with these local names."""
    alternatives = b"|".join(name.encode("ascii") for name in names)
    attribute = re.compile(
        rb"[\s<]" + _PREFIX + rb"(" + alternatives + rb")\s{0,64}=\s{0,64}(\"[^\"]{0,4096}\"|'[^']{0,4096}')"
    )
    element = re.compile(rb"<(" + _PREFIX + rb"(" + alternatives + rb"))(?:\s[^<>]{0,4096})?>")
    return attribute, element


_ATTRIBUTE, _ELEMENT = _property_patterns(_NAMES)
_TAG = re.compile(rb"<[^<>]{0,4096}>")
_LI_OPEN = re.compile(rb"<rdf:li\b[^<>]{0,4096}>")
#: longest value kept (names and places are short; a longer value is cut)
MAX_VALUE = 1024
_COORDINATE = re.compile(r"\s*(\d+(?:\.\d+)?),(\d+(?:\.\d+)?)(?:,(\d+(?:\.\d+)?))?\s*([NSEW])\s*", re.I)


def _properties(
    packet: bytes, patterns: tuple[re.Pattern[bytes], re.Pattern[bytes]] | None = None
) -> dict[str, list[str]]:
    """Every value of the properties of interest, by local name (attribute or element form)."""
    attribute, element = patterns or (_ATTRIBUTE, _ELEMENT)
    found: dict[bytes, list[bytes]] = {}
    for match in attribute.finditer(packet):
        found.setdefault(match.group(1), []).append(match.group(2)[1:-1])
    pos = 0
    unclosed: set[bytes] = set()  # no closing tag after some opening: none after later ones either
    while (match := element.search(packet, pos)) is not None:
        pos = match.end()
        if match.group(1) in unclosed:
            continue
        end = packet.find(b"</" + match.group(1), pos)
        if end < 0:
            unclosed.add(match.group(1))
            continue
        found.setdefault(match.group(2), []).extend(_items(packet[pos:end]))
        pos = end
    values: dict[str, list[str]] = {}
    for name, raws in found.items():
        texts = values.setdefault(name.decode("ascii"), [])
        for raw in raws:
            text = html.unescape(_TAG.sub(b"", raw).decode("utf-8", "replace")).strip()[:MAX_VALUE]
            if text and text not in texts:
                texts.append(text)
    return values


def _items(inner: bytes) -> list[bytes]:
    """The rdf:li values of a container (Seq, Bag, Alt), or the element's text when it has none."""
    pieces = inner.split(b"</rdf:li>")
    if len(pieces) == 1:
        return [inner]
    items = []
    for piece in pieces[:-1]:
        openings = list(_LI_OPEN.finditer(piece))
        if openings:
            items.append(piece[openings[-1].end() :])
    return items


def _coordinate(text: str) -> float | None:
    """An XMP GPS coordinate ("52,22.5N" or "52,22,30N") in signed degrees."""
    match = _COORDINATE.fullmatch(text)
    if not match:
        return None
    degrees, minutes, seconds, ref = match.groups()
    value = float(degrees) + float(minutes) / 60 + (float(seconds) if seconds else 0.0) / 3600
    return round(-value if ref.upper() in "SW" else value, 7)


def xmp_private(packets: list[bytes]) -> dict[str, Any]:
    """Identifying values found in XMP packets (GPS position, creator, place, serials, owner)."""
    found: dict[str, Any] = {}
    budget = MAX_SEARCHED
    for packet in packets:
        packet, budget = packet[:budget], budget - min(len(packet), budget)
        values = _properties(packet)
        lat, lon = values.get("GPSLatitude"), values.get("GPSLongitude")
        if (lat or lon) and "xmp_gps" not in found:
            found["xmp_gps"] = {
                "latitude": _coordinate(lat[0]) if lat else None,
                "longitude": _coordinate(lon[0]) if lon else None,
            }
        for field, names in XMP_TEXT.items():
            texts = [text for name in names for text in values.get(name, [])]
            if texts and field not in found:
                found[field] = texts if field == "xmp_creator" else texts[0]
    return found


def photoshop_iptc(payload: bytes) -> list[bytes]:
    """The IPTC-IIM blocks (resource 0x0404) of a Photoshop image resource block ("8BIM" records)."""
    blocks = []
    pos = 0
    while pos + 12 <= len(payload) and payload[pos : pos + 4] == b"8BIM":
        resource = struct.unpack(">H", payload[pos + 4 : pos + 6])[0]
        name_length = payload[pos + 6]
        pos += 6 + ((name_length + 2) & ~1)  # Pascal string padded to even length
        if pos + 4 > len(payload):
            break
        size = struct.unpack(">I", payload[pos : pos + 4])[0]
        data = payload[pos + 4 : pos + 4 + size]
        if resource == 0x0404:
            blocks.append(data)
        pos += 4 + size + (size & 1)
    return blocks


def xmp_values(packets: list[bytes], names: tuple[str, ...]) -> dict[str, list[str]]:
    """The values of the XMP properties with these local names, over all packets (bounded as in
    :func:`xmp_private`); for the rights statements of :mod:`harvest.images.rights`."""
    patterns = _property_patterns(names)
    values: dict[str, list[str]] = {}
    budget = MAX_SEARCHED
    for packet in packets:
        packet, budget = packet[:budget], budget - min(len(packet), budget)
        for name, texts in _properties(packet, patterns).items():
            values.setdefault(name, []).extend(t for t in texts if t not in values.get(name, []))
    return values


def iptc_records(blocks: list[bytes]) -> list[tuple[int, str]]:
    """(dataset, text) of every application record (2) of IPTC-IIM blocks."""
    records: list[tuple[int, str]] = []
    for block in blocks:
        pos = 0
        while pos + 5 <= len(block) and block[pos] == 0x1C:
            record, dataset = block[pos + 1], block[pos + 2]
            size = struct.unpack(">H", block[pos + 3 : pos + 5])[0]
            pos += 5
            if size & 0x8000:  # extended length: the next (size & 0x7FFF) bytes hold it
                width = size & 0x7FFF
                if width > 4:
                    break
                size = int.from_bytes(block[pos : pos + width], "big")
                pos += width
            value = block[pos : pos + size]
            pos += size
            if record == 2:
                text = _text(value)
                if text:
                    records.append((dataset, text))
    return records


def iptc_private(blocks: list[bytes]) -> dict[str, Any]:
    """Identifying values found in IPTC-IIM records (by-line, city, sub-location, province, country)."""
    found: dict[str, Any] = {}
    for dataset, text in iptc_records(blocks):
        name = IPTC_FIELDS.get(dataset)
        if name is None:
            continue
        if name in _REPEATABLE:
            found.setdefault(name, [])
            if text not in found[name]:
                found[name].append(text)
        else:
            found.setdefault(name, text)
    return found


def _text(value: bytes) -> str:
    try:
        return value.decode("utf-8").strip("\x00 ").strip()
    except UnicodeDecodeError:
        return value.decode("latin-1").strip("\x00 ").strip()
