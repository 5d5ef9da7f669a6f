"""EXIF metadata: what is useful to keep (camera, date, orientation), what identifies people (GPS,
owner, serial numbers), and the small EXIF block a published file keeps (the allow-list).

Reading goes through Pillow's parser. Writing never edits the downloaded EXIF: the published copy
gets a fresh TIFF structure holding only the allowed tags (:func:`allowed_exif`), so unknown tags,
maker notes, thumbnails and whole IFDs cannot slip through, wherever the source put them.
"""

from __future__ import annotations

import math
import re
import struct
from collections.abc import Iterable
from fractions import Fraction
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
#: Tags that name or single out a person or a camera. Looked up in IFD0 and in the Exif IFD alike:
#: writers do not always put them where the standard says.
SENSITIVE_TAGS = {
    0x013B: "artist",
    0x9C9D: "xp_author",
    0x013C: "host_computer",
    0xA430: "owner_name",
    0xA431: "body_serial_number",
    0xA435: "lens_serial_number",
    0xA420: "image_unique_id",
    0x927C: "maker_note",  # vendor blob; commonly carries the camera serial
}
ORIENTATION = 0x0112
EXIF_IFD = 0x8769

#: The published EXIF, IFD0 part: tag -> (name, kind). Camera make and model, orientation, resolution.
ALLOWED_IFD0 = {
    0x010F: ("make", "text"),
    0x0110: ("model", "text"),
    0x0112: ("orientation", "orientation"),
    0x011A: ("x_resolution", "rational"),
    0x011B: ("y_resolution", "rational"),
    0x0128: ("resolution_unit", "unit"),
}
#: The published EXIF, Exif IFD part: capture time, colour space and the exposure settings.
ALLOWED_EXIF = {
    0x829A: ("exposure_time", "rational"),
    0x829D: ("f_number", "rational"),
    0x8827: ("iso", "short"),
    0x9003: ("date_taken", "datetime"),
    0x920A: ("focal_length", "rational"),
    0xA001: ("color_space", "color_space"),
}
#: Free text kept in the published EXIF (make, model) must look like a camera name: printable ASCII,
#: short; anything else (a payload, a message) drops the tag.
_TEXT = re.compile(r"[ -~]{1,64}")
_DATETIME = re.compile(r"\d{4}:\d{2}:\d{2} \d{2}:\d{2}:\d{2}")
_ASCII, _SHORT, _LONG, _RATIONAL = 2, 3, 4, 5


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


def _xp_text(value: Any) -> Any:
    """XP* tags hold UTF-16 text as a list of bytes."""
    if isinstance(value, tuple) and all(isinstance(v, int) for v in value):
        value = bytes(value)
    if isinstance(value, bytes):
        return value.decode("utf-16-le", "replace").strip("\x00 ").strip()
    return _plain(value)


def read_exif(image: Image.Image) -> tuple[dict, dict, int | None]:
    """(public fields, sensitive fields, orientation) from an open image; malformed EXIF gives empties."""
    try:
        exif = image.getexif()
    except Exception:  # noqa: BLE001 - broken metadata never rejects a decodable image
        return {}, {}, None
    return parse_exif(exif)


def parse_exif(exif: Image.Exif) -> tuple[dict, dict, int | None]:
    """:func:`read_exif` on parsed EXIF."""
    public: dict[str, Any] = {}
    sensitive: dict[str, Any] = {}
    try:
        orientation = exif.get(ORIENTATION)
        orientation = int(orientation) if orientation else None
        for tag, name in IFD0_PUBLIC.items():
            if tag in exif:
                public[name] = _plain(exif[tag])
        sub = exif.get_ifd(ExifTags.IFD.Exif)
        for tag, name in EXIF_PUBLIC.items():
            if tag in sub:
                public[name] = _plain(sub[tag])
        for ifd in (sub, exif):  # the Exif IFD's value wins where both hold one
            for tag, name in SENSITIVE_TAGS.items():
                if tag in ifd and name not in sensitive:
                    value = ifd[tag]
                    sensitive[name] = (
                        "<binary>" if tag == 0x927C else _xp_text(value) if tag == 0x9C9D else _plain(value)
                    )
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


def load_exif(payload: bytes) -> Image.Exif | None:
    """EXIF parsed from an APP1/eXIf/EXIF payload (with or without the "Exif\\0\\0" prefix)."""
    exif = Image.Exif()
    try:
        exif.load(payload)
        exif.get_ifd(ExifTags.IFD.Exif)  # parse errors in the sub-IFD show here, not later
    except Exception:  # noqa: BLE001 - a broken block keeps nothing
        return None
    return exif


def _entry(kind: str, value: Any, endian: str) -> tuple[int, int, bytes] | None:
    """(type, count, value bytes) of an allowed tag, or None when the value is not what the tag holds."""
    if isinstance(value, tuple) and len(value) == 1:
        value = value[0]
    if kind in ("text", "datetime"):
        text = value.decode("ascii", "replace") if isinstance(value, bytes) else str(value)
        text = text.strip("\x00 ").strip()
        pattern = _DATETIME if kind == "datetime" else _TEXT
        if not pattern.fullmatch(text):
            return None
        raw = text.encode("ascii") + b"\x00"
        return _ASCII, len(raw), raw
    if kind == "rational":
        if isinstance(value, float):  # some writers store rationals as floating point
            if not math.isfinite(value) or value < 0:
                return None
            value = Fraction(value).limit_denominator(1_000_000)
        try:
            numerator, denominator = int(value.numerator), int(value.denominator)
        except (AttributeError, TypeError, ValueError):
            return None
        if not (0 <= numerator < 2**32 and 0 < denominator < 2**32):
            return None
        return _RATIONAL, 1, struct.pack(endian + "II", numerator, denominator)
    allowed = {
        "orientation": range(1, 9),
        "unit": range(1, 4),
        "short": range(0, 65536),
        "color_space": (1, 2, 0xFFFF),
    }[kind]
    if not isinstance(value, int) or isinstance(value, bool) or value not in allowed:
        return None
    return _SHORT, 1, struct.pack(endian + "H", value)


#: (tag, type, count, value bytes) of one IFD entry
Entry = tuple[int, int, int, bytes]


def ifd_bytes(entries: Iterable[Entry], offset: int, endian: str) -> bytes:
    """One IFD at file offset ``offset`` (next IFD: none), its values that do not fit in an entry
    placed right after it, word-aligned. Entries are written in tag order, as TIFF requires."""
    entries = sorted(entries)
    table = struct.pack(endian + "H", len(entries))
    values = b""
    area = offset + 2 + 12 * len(entries) + 4
    for tag, kind, count, raw in entries:
        if len(raw) <= 4:
            table += struct.pack(endian + "HHI", tag, kind, count) + raw.ljust(4, b"\x00")
        else:
            table += struct.pack(endian + "HHII", tag, kind, count, area + len(values))
            values += raw + (b"\x00" if len(raw) & 1 else b"")
    return table + b"\x00\x00\x00\x00" + values


def allowed_exif(payload: bytes) -> bytes | None:
    """A TIFF block (no "Exif\\0\\0" prefix) with only the allowed tags of ``payload``, or None when
    none of them is present and valid. Little-endian, deterministic: the same payload always gives
    the same bytes."""
    exif = load_exif(payload)
    if exif is None:
        return None
    endian = "<"
    top = _pick(exif, ALLOWED_IFD0, endian)
    try:
        sub = _pick(exif.get_ifd(ExifTags.IFD.Exif), ALLOWED_EXIF, endian)
    except Exception:  # noqa: BLE001
        sub = []
    if not top and not sub:
        return None
    head = b"II*\x00" + struct.pack("<I", 8)
    if not sub:
        return head + ifd_bytes(top, 8, endian)
    pointer = (EXIF_IFD, _LONG, 1, b"\x00\x00\x00\x00")
    first = ifd_bytes([*top, pointer], 8, endian)  # its size does not depend on the pointer's value
    at = 8 + len(first)
    first = ifd_bytes([*top, (EXIF_IFD, _LONG, 1, struct.pack("<I", at))], 8, endian)
    return head + first + ifd_bytes(sub, at, endian)


def _pick(ifd: Any, allowed: dict[int, tuple[str, str]], endian: str) -> list[Entry]:
    picked = []
    for tag, (_name, kind) in allowed.items():
        try:
            value = ifd.get(tag)
        except Exception:  # noqa: BLE001 - a tag Pillow cannot read is not kept
            continue
        if value is None:
            continue
        entry = _entry(kind, value, endian)
        if entry is not None:
            picked.append((tag, *entry))
    return picked
