"""EXIF metadata: what is useful to keep (camera, date, orientation), what identifies people (GPS,
owner, serial numbers), and how to remove the latter from a file without re-encoding its pixels.

Stripping edits the metadata containers only (JPEG APP segments, PNG and WebP chunks), so the
published image is bit-for-bit the downloaded one apart from the removed fields.
"""

from __future__ import annotations

import re
import struct
import zlib
from typing import Any

from PIL import ExifTags, Image

IFD0_PUBLIC = {0x010F: "make", 0x0110: "model", 0x0131: "software", 0x0132: "datetime", 0x8298: "copyright"}
EXIF_PUBLIC = {
    0x9003: "date_taken",
    0x829A: "exposure_time",
    0x829D: "f_number",
    0x8827: "iso",
    0x920A: "focal_length",
    0xA434: "lens_model",
}
IFD0_SENSITIVE = {0x013B: "artist", 0x9C9D: "xp_author", 0x013C: "host_computer"}
EXIF_SENSITIVE = {
    0xA430: "owner_name",
    0xA431: "body_serial_number",
    0xA435: "lens_serial_number",
    0x927C: "maker_note",  # vendor blob; commonly carries the camera serial
}
ORIENTATION = 0x0112
#: XMP packets are dropped from a stripped copy when they name a place or a person.
_XMP_SENSITIVE = re.compile(rb"GPS(Latitude|Longitude)|SerialNumber|OwnerName|dc:creator|photoshop:Author")
_XMP_HEADER = b"http://ns.adobe.com/xap/1.0/\x00"


def _plain(value: Any) -> Any:
    """EXIF values as JSON: rationals to floats, bytes to text, tuples to lists."""
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace").strip("\x00 ").strip()
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    if hasattr(value, "numerator") and not isinstance(value, int):
        try:
            return round(float(value), 6)
        except (ZeroDivisionError, ValueError):
            return None
    if isinstance(value, str):
        return value.strip("\x00 ").strip()
    return value


def _degrees(dms: Any, ref: Any) -> float | None:
    try:
        d, m, s = (float(x) for x in dms)
    except (TypeError, ValueError, ZeroDivisionError):
        return None
    value = d + m / 60.0 + s / 3600.0
    return round(-value if str(ref).upper().startswith(("S", "W")) else value, 7)


def read_exif(image: Image.Image) -> tuple[dict, dict, int | None]:
    """(public fields, sensitive fields, orientation) from an open image; malformed EXIF gives empties."""
    try:
        exif = image.getexif()
    except Exception:  # noqa: BLE001 - broken metadata never rejects a decodable image
        return {}, {}, None
    public: dict[str, Any] = {}
    sensitive: dict[str, Any] = {}
    try:
        orientation = exif.get(ORIENTATION)
        orientation = int(orientation) if orientation else None
        for tag, name in IFD0_PUBLIC.items():
            if tag in exif:
                public[name] = _plain(exif[tag])
        for tag, name in IFD0_SENSITIVE.items():
            if tag in exif:
                sensitive[name] = _plain(exif[tag])
        sub = exif.get_ifd(ExifTags.IFD.Exif)
        for tag, name in EXIF_PUBLIC.items():
            if tag in sub:
                public[name] = _plain(sub[tag])
        for tag, name in EXIF_SENSITIVE.items():
            if tag in sub:
                sensitive[name] = "<binary>" if tag == 0x927C else _plain(sub[tag])
        gps = exif.get_ifd(ExifTags.IFD.GPSInfo)
        if gps:
            lat = _degrees(gps.get(2), gps.get(1, "N"))
            lon = _degrees(gps.get(4), gps.get(3, "E"))
            sensitive["gps"] = {"latitude": lat, "longitude": lon}
            if 6 in gps:
                sensitive["gps"]["altitude"] = _plain(gps[6])
    except Exception:  # noqa: BLE001
        return public, sensitive, None
    if orientation is not None and not 1 <= orientation <= 8:
        orientation = None
    if orientation:
        public["orientation"] = orientation
    return public, sensitive, orientation


def _clean_exif(image: Image.Image) -> bytes:
    """The image's EXIF without the sensitive tags, as an APP1 payload ("Exif\\0\\0" + TIFF)."""
    exif = image.getexif()
    sub = exif.get_ifd(ExifTags.IFD.Exif)
    for tag in EXIF_SENSITIVE:
        sub.pop(tag, None)
    for tag in IFD0_SENSITIVE:
        exif.pop(tag, None)
    exif.pop(ExifTags.IFD.GPSInfo, None)
    exif._ifds.pop(ExifTags.IFD.GPSInfo, None)  # tobytes() would re-add a loaded GPS IFD
    return exif.tobytes()


def strip_sensitive(data: bytes, image: Image.Image, fmt: str) -> bytes:
    """``data`` without GPS, owner and serial fields; pixels and everything else untouched."""
    clean = _clean_exif(image)
    if fmt == "JPEG":
        return _strip_jpeg(data, clean)
    if fmt == "PNG":
        return _strip_png(data, clean[6:])
    if fmt == "WEBP":
        return _strip_webp(data, clean[6:])
    raise ValueError(f"cannot strip metadata from {fmt}")


def _strip_jpeg(data: bytes, clean: bytes) -> bytes:
    out = [data[:2]]
    pos = 2
    while pos + 4 <= len(data):
        if data[pos] != 0xFF:
            raise ValueError("JPEG segment marker expected")
        marker = data[pos + 1]
        if marker == 0xDA:  # start of scan: the rest is entropy-coded data
            break
        length = struct.unpack(">H", data[pos + 2 : pos + 4])[0]
        segment = data[pos : pos + 2 + length]
        payload = segment[4:]
        if marker == 0xE1 and payload.startswith(b"Exif\x00\x00"):
            if len(clean) + 2 <= 0xFFFF:
                segment = b"\xff\xe1" + struct.pack(">H", len(clean) + 2) + clean
            else:
                segment = b""
        elif marker == 0xE1 and payload.startswith(_XMP_HEADER) and _XMP_SENSITIVE.search(payload):
            segment = b""
        out.append(segment)
        pos += 2 + length
    out.append(data[pos:])
    return b"".join(out)


def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def _strip_png(data: bytes, tiff: bytes) -> bytes:
    out = [data[:8]]
    pos = 8
    while pos + 8 <= len(data):
        length = struct.unpack(">I", data[pos : pos + 4])[0]
        kind = data[pos + 4 : pos + 8]
        chunk = data[pos : pos + 12 + length]
        if kind == b"eXIf":
            chunk = _png_chunk(b"eXIf", tiff)
        elif kind in (b"iTXt", b"tEXt", b"zTXt") and _XMP_SENSITIVE.search(chunk):
            chunk = b""
        out.append(chunk)
        pos += 12 + length
    return b"".join(out)


def _strip_webp(data: bytes, tiff: bytes) -> bytes:
    out = []
    pos = 12
    while pos + 8 <= len(data):
        kind = data[pos : pos + 4]
        length = struct.unpack("<I", data[pos + 4 : pos + 8])[0]
        chunk = data[pos : pos + 8 + length + (length & 1)]
        if kind == b"EXIF":
            chunk = b"EXIF" + struct.pack("<I", len(tiff)) + tiff + (b"\x00" if len(tiff) & 1 else b"")
        elif kind == b"XMP " and _XMP_SENSITIVE.search(chunk):
            chunk = b""
        out.append(chunk)
        pos += 8 + length + (length & 1)
    body = b"WEBP" + b"".join(out)
    return b"RIFF" + struct.pack("<I", len(body)) + body
