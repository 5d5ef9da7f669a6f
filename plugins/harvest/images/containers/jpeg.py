"""JPEG: segments walked from SOI, entropy-coded scans copied as they are, metadata by allow-list."""

from __future__ import annotations

import re
import struct

from harvest.images.containers.cleaned import Cleaned, MetadataError
from harvest.images.exif import allowed_exif
from harvest.images.xmp import photoshop_iptc

_XMP = b"http://ns.adobe.com/xap/1.0/\x00"
_XMP_EXTENSION = b"http://ns.adobe.com/xmp/extension/\x00"
#: JPEG markers kept as they are: frame headers (SOF0-15), tables (DHT, DAC, DQT), DNL, DRI,
#: DHP, EXP and the start of scan.
_JPEG_KEEP = {*range(0xC0, 0xD0), 0xDA, 0xDB, 0xDC, 0xDD, 0xDE, 0xDF}
#: A marker inside entropy-coded data: 0xFF followed by neither a stuffed zero nor a restart marker
#: (a second 0xFF is a fill byte before the marker, which the segment walk skips). Starting with a
#: literal byte lets the regex engine scan for it at memchr speed.
_SCAN_MARKER = re.compile(rb"\xff[^\x00\xd0-\xd7]")


def clean_jpeg(data: bytes) -> Cleaned:
    """Segments walked from SOI; each scan's entropy-coded data is skipped by looking for the next
    marker (stuffed 0xFF00 bytes and RSTn markers belong to the data), so the end is the EOI after
    the last scan, not the last 0xFF 0xD9 pair in the file."""
    if data[:2] != b"\xff\xd8":
        raise MetadataError("JPEG does not start with SOI")
    cleaned = Cleaned(b"")
    out = [b"\xff\xd8"]
    pos, size = 2, len(data)
    seen: set[str] = set()
    while True:
        if pos >= size:  # decodable without its EOI: the end marker is added
            out.append(b"\xff\xd9")
            end = size
            break
        if data[pos] != 0xFF:
            raise MetadataError(f"JPEG marker expected at byte {pos}")
        while pos < size and data[pos] == 0xFF:  # fill bytes
            pos += 1
        if pos >= size:
            out.append(b"\xff\xd9")
            end = size
            break
        marker = data[pos]
        pos += 1
        if marker == 0xD9:
            out.append(b"\xff\xd9")
            end = pos
            break
        if 0xD0 <= marker <= 0xD7 or marker == 0x01:  # stray RSTn or TEM: no length, nothing to keep
            continue
        if marker in (0x00, 0xD8):
            raise MetadataError(f"JPEG marker 0xFF{marker:02X} out of place at byte {pos - 2}")
        (length,) = struct.unpack(">H", data[pos : pos + 2])
        if length < 2 or pos + length > size:
            raise MetadataError(f"JPEG segment 0xFF{marker:02X} at byte {pos - 2} runs past the end")
        payload = data[pos + 2 : pos + length]
        pos += length
        segment = _jpeg_segment(marker, payload, cleaned, seen)
        if segment is not None:
            out.append(segment)
        if marker == 0xDA:
            found = _SCAN_MARKER.search(data, pos)
            scan_end = found.start() if found else size
            out.append(data[pos:scan_end])
            pos = scan_end
    cleaned.data = b"".join(out)
    cleaned.trailing = size - end
    if cleaned.trailing:
        cleaned.removed.append(f"{cleaned.trailing} bytes after EOI")
    return cleaned


def _jpeg_segment(marker: int, payload: bytes, cleaned: Cleaned, seen: set[str]) -> bytes | None:
    """The segment to write for one read from the source, or None to leave it out."""
    if marker in _JPEG_KEEP:
        return _segment(marker, payload)
    name = (
        "COM" if marker == 0xFE else f"APP{marker - 0xE0}" if 0xE0 <= marker <= 0xEF else f"0xFF{marker:02X}"
    )
    if marker == 0xE0 and payload.startswith(b"JFIF\x00") and len(payload) >= 14 and "jfif" not in seen:
        seen.add("jfif")
        if len(payload) > 14 or payload[12:14] != b"\x00\x00":
            cleaned.removed.append("JFIF thumbnail")
        return _segment(marker, payload[:12] + b"\x00\x00")  # version, density; no thumbnail
    if marker == 0xE2 and payload.startswith(b"ICC_PROFILE\x00"):
        return _segment(marker, payload)
    if marker == 0xEE and payload.startswith(b"Adobe") and len(payload) >= 12:
        if "adobe" in seen:  # decoders let the last one decide the colour transform
            cleaned.restructured = True
            cleaned.removed.append("APP14 Adobe (second)")
            return None
        seen.add("adobe")  # the colour transform flag decides how CMYK/YCCK is decoded
        return _segment(marker, payload[:12])
    if marker == 0xE1 and payload.startswith(b"Exif\x00\x00"):
        cleaned.exif.append(payload)
        if "exif" in seen:
            cleaned.removed.append("APP1 Exif (second)")
            return None
        seen.add("exif")
        cleaned.removed.append("APP1 Exif (rebuilt with the allowed tags)")
        tiff = allowed_exif(payload)
        return _segment(marker, b"Exif\x00\x00" + tiff) if tiff else None
    if marker == 0xE1 and payload.startswith(_XMP):
        cleaned.xmp.append(payload[len(_XMP) :])
        name = "APP1 XMP"
    elif marker == 0xE1 and payload.startswith(_XMP_EXTENSION):
        cleaned.xmp.append(payload[len(_XMP_EXTENSION) + 40 :])  # GUID, full length, offset
        name = "APP1 extended XMP"
    elif marker == 0xED and payload.startswith(b"Photoshop 3.0\x00"):
        cleaned.iptc.extend(photoshop_iptc(payload[14:]))
        name = "APP13 Photoshop/IPTC"
    elif not (0xE0 <= marker <= 0xEF or marker == 0xFE):  # not metadata: a decoder may care
        cleaned.restructured = True
    cleaned.removed.append(name)
    return None


def _segment(marker: int, payload: bytes) -> bytes:
    if len(payload) + 2 > 0xFFFF:
        raise MetadataError(f"JPEG segment 0xFF{marker:02X} too long")
    return bytes((0xFF, marker)) + struct.pack(">H", len(payload) + 2) + payload
