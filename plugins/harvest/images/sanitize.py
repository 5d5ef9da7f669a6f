"""The published copy of an image: its own bytes up to its own end, with metadata by allow-list.

Every container is walked structure by structure (JPEG segments and the entropy-coded scans, PNG
and WebP chunks, GIF blocks, BMP headers, TIFF directories) and rebuilt from the parts a decoder
needs plus the few metadata items that identify nobody (orientation, colour profile, resolution,
capture time, camera make and model, exposure: :data:`harvest.images.exif.ALLOWED_IFD0` and
``ALLOWED_EXIF``). Everything else goes: XMP (also extended), IPTC, comments, other APPn segments,
text chunks, maker notes, thumbnails, and whatever follows the image's end marker (a ZIP archive
there turns an image into an archive that Airflow would load from a DAGs folder). Pixel data is
copied byte for byte, never decoded and encoded again.

The result is a function of the source bytes alone, so the same download always publishes the
same bytes. :data:`POLICY` names this rule set; a state DB row made under another one is cleaned
again before publishing.
"""

from __future__ import annotations

import io
import re
import struct
import zipfile
import zlib
from dataclasses import dataclass, field
from typing import Any

from harvest.images.exif import allowed_exif, ifd_bytes, load_exif, parse_exif
from harvest.images.xmp import iptc_private, photoshop_iptc, xmp_private

#: The metadata rule set that made a clean copy (recorded per image in the state DB).
POLICY = "allow-1"
_XMP = b"http://ns.adobe.com/xap/1.0/\x00"
_XMP_EXTENSION = b"http://ns.adobe.com/xmp/extension/\x00"
#: JPEG markers kept as they are: frame headers (SOF0-15), tables (DHT, DAC, DQT), DNL, DRI,
#: DHP, EXP and the start of scan.
_JPEG_KEEP = {*range(0xC0, 0xD0), 0xDA, 0xDB, 0xDC, 0xDD, 0xDE, 0xDF}
#: A marker inside entropy-coded data: 0xFF followed by neither a stuffed zero nor a restart marker
#: (a second 0xFF is a fill byte before the marker, which the segment walk skips). Starting with a
#: literal byte lets the regex engine scan for it at memchr speed.
_SCAN_MARKER = re.compile(rb"\xff[^\x00\xd0-\xd7]")
#: PNG chunks kept: the critical ones and the ancillary chunks about colour and physical size.
_PNG_KEEP = {b"IHDR", b"PLTE", b"IDAT", b"IEND", b"tRNS", b"gAMA", b"cHRM", b"sRGB", b"iCCP", b"sBIT"}
_PNG_KEEP |= {b"pHYs", b"bKGD"}
_PNG_IEND = b"\x00\x00\x00\x00IEND\xaeB`\x82"
_PNG_ANIMATION = {b"acTL", b"fcTL", b"fdAT"}
#: WebP chunks kept (VP8X with its flags recomputed); EXIF is replaced by the allowed EXIF.
_WEBP_KEEP = {b"VP8X", b"ICCP", b"ALPH", b"VP8 ", b"VP8L"}
_VP8X_ALPHA, _VP8X_ICC, _VP8X_EXIF = 0x10, 0x20, 0x08
#: GIF application extension kept: an ICC profile.
_GIF_ICC = b"ICCRGBG1012"
#: Markup that makes a file an HTML or script polyglot when it is found anywhere in it.
_MARKUP = re.compile(
    rb"<script|<html[\s>]|<body[\s>]|<iframe|<svg[\s>]|<\?php|<!doctype\s+html|<object[\s>]|<embed[\s>]",
    re.I,
)


class MetadataError(ValueError):
    """The container cannot be walked: it is cut short or its structure is not what its format says."""


@dataclass
class Cleaned:
    data: bytes
    #: bytes after the image's end (end marker, last chunk, trailer, RIFF or file size)
    trailing: int = 0
    #: what was taken out, for logs and tests ("APP1 XMP", "COM", "tEXt", ...)
    removed: list[str] = field(default_factory=list)
    #: something a decoder may read was changed (a header rewritten, a chunk decoders know about
    #: left out), so only decoding the copy proves its pixels; False when only metadata segments or
    #: chunks that decoders skip, and bytes after the end, were taken out of a JPEG or PNG
    restructured: bool = False
    #: identifying values found in XMP, IPTC and EXIF blocks Pillow does not read
    private: dict[str, Any] = field(default_factory=dict)
    xmp: list[bytes] = field(default_factory=list)
    iptc: list[bytes] = field(default_factory=list)
    exif: list[bytes] = field(default_factory=list)


def clean_file(data: bytes, fmt: str) -> Cleaned:
    """The bytes to publish for an image of format ``fmt`` (see the module docstring)."""
    walkers = {"JPEG": _jpeg, "PNG": _png, "WEBP": _webp, "GIF": _gif, "BMP": _bmp, "TIFF": _tiff}
    if fmt not in walkers:
        raise MetadataError(f"no metadata rules for {fmt}")
    try:
        cleaned = walkers[fmt](data)
    except (IndexError, struct.error) as exc:
        raise MetadataError(f"{fmt} structure cut short ({exc})") from exc
    if fmt not in ("JPEG", "PNG"):  # headers rewritten: flags, sizes, offsets
        cleaned.restructured = cleaned.data != data
    cleaned.private = _private(cleaned)
    return cleaned


def _private(cleaned: Cleaned) -> dict[str, Any]:
    """Identifying values of the removed blocks: XMP, IPTC, and EXIF blocks after the first one
    (Pillow, and so :func:`harvest.images.exif.read_exif`, reads only the first)."""
    found: dict[str, Any] = {}
    for payload in cleaned.exif[1:]:
        exif = load_exif(payload)
        if exif is not None:
            for name, value in parse_exif(exif)[1].items():
                found.setdefault(name, value)
    found.update(xmp_private(cleaned.xmp))
    found.update(iptc_private(cleaned.iptc))
    return found


def polyglot_reason(data: bytes) -> str | None:
    """Why ``data`` would be taken for something other than an image, or None: a ZIP archive (the
    central directory near the end) or HTML/script markup anywhere in it."""
    if zipfile.is_zipfile(io.BytesIO(data)):
        return "polyglot: the file is also a ZIP archive"
    found = _MARKUP.search(data)
    if found:
        markup = found.group(0).decode("ascii", "replace").lower()
        return f"polyglot: the file carries HTML/script markup ({markup!r} at byte {found.start()})"
    return None


# --- JPEG ------------------------------------------------------------------------------------------


def _jpeg(data: bytes) -> Cleaned:
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


# --- PNG -------------------------------------------------------------------------------------------


def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def _png(data: bytes) -> Cleaned:
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        raise MetadataError("PNG signature missing")
    cleaned = Cleaned(b"")
    chunks: list[tuple[bytes, int, int]] = []  # (type, start, end) up to and including IEND
    pos, size = 8, len(data)
    while pos + 8 <= size:
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind = data[pos + 4 : pos + 8]
        stop = pos + 12 + length
        if stop > size:
            raise MetadataError(f"PNG chunk {kind!r} at byte {pos} runs past the end")
        chunks.append((kind, pos, stop))
        pos = stop
        if kind == b"IEND":
            break
    end = pos if chunks and chunks[-1][0] == b"IEND" else size
    exif = next((data[start + 8 : stop - 4] for kind, start, stop in chunks if kind == b"eXIf"), None)
    allowed = allowed_exif(exif) if exif is not None else None
    out = [data[:8]]
    for kind, start, stop in chunks:
        if kind == b"IDAT" and allowed is not None:  # before the first image data, as PNG asks
            out.append(_png_chunk(b"eXIf", allowed))
            allowed = None
        if kind in _PNG_KEEP:
            out.append(data[start:stop])
        else:
            _png_removed(kind, data[start + 8 : stop - 4], cleaned)
    if not chunks or chunks[-1][0] != b"IEND":  # decodable without its IEND: the end chunk is added
        out.append(_PNG_IEND)
    cleaned.data = b"".join(out)
    cleaned.trailing = size - end
    if cleaned.trailing:
        cleaned.removed.append(f"{cleaned.trailing} bytes after IEND")
    return cleaned


def _png_removed(kind: bytes, payload: bytes, cleaned: Cleaned) -> None:
    """Note a chunk left out; XMP in iTXt and EXIF in eXIf are kept aside for their private values."""
    cleaned.removed.append(kind.decode("latin-1"))
    if kind[:1].isupper() or kind in _PNG_ANIMATION:  # critical, or read by the decoder
        cleaned.restructured = True
    if kind == b"eXIf":
        cleaned.exif.append(payload)
    elif kind == b"iTXt" and payload.startswith(b"XML:com.adobe.xmp\x00"):
        rest = payload[len(b"XML:com.adobe.xmp\x00") :]
        compressed = rest[:1] == b"\x01"
        parts = rest[2:].split(b"\x00", 2)  # language tag, translated keyword, text
        if len(parts) == 3:
            text = parts[2]
            if compressed:
                try:
                    text = zlib.decompressobj().decompress(text, 4 * 1024 * 1024)
                except zlib.error:
                    text = b""
            cleaned.xmp.append(text)


# --- WebP ------------------------------------------------------------------------------------------


def _webp(data: bytes) -> Cleaned:
    if data[:4] != b"RIFF" or data[8:12] != b"WEBP":
        raise MetadataError("WebP RIFF header missing")
    cleaned = Cleaned(b"")
    (riff_size,) = struct.unpack("<I", data[4:8])
    end = 8 + riff_size
    if end > len(data):
        raise MetadataError(f"WebP RIFF size {riff_size} runs past the end ({len(data)} bytes)")
    chunks: list[tuple[bytes, bytes]] = []
    pos = 12
    while pos + 8 <= end:
        kind = data[pos : pos + 4]
        (length,) = struct.unpack("<I", data[pos + 4 : pos + 8])
        if pos + 8 + length > end:
            raise MetadataError(f"WebP chunk {kind!r} at byte {pos} runs past the RIFF size")
        chunks.append((kind, data[pos + 8 : pos + 8 + length]))
        pos += 8 + length + (length & 1)
    extended = any(kind == b"VP8X" for kind, _ in chunks)
    out: list[tuple[bytes, bytes]] = []
    for kind, payload in chunks:
        if kind in _WEBP_KEEP:
            out.append((kind, payload))
            continue
        cleaned.removed.append(kind.decode("latin-1").strip())
        if kind == b"EXIF":
            cleaned.exif.append(payload)
            tiff = allowed_exif(payload) if extended and len(cleaned.exif) == 1 else None
            if tiff:
                out.append((b"EXIF", tiff))
        elif kind == b"XMP ":
            cleaned.xmp.append(payload)
    kinds = {kind for kind, _ in out}
    body = b"".join(
        _riff_chunk(kind, _vp8x(payload, kinds) if kind == b"VP8X" else payload) for kind, payload in out
    )
    cleaned.data = b"RIFF" + struct.pack("<I", 4 + len(body)) + b"WEBP" + body
    cleaned.trailing = len(data) - end
    if cleaned.trailing:
        cleaned.removed.append(f"{cleaned.trailing} bytes after the RIFF size")
    return cleaned


def _vp8x(payload: bytes, kinds: set[bytes]) -> bytes:
    """The VP8X header with its flags saying what the rebuilt file holds: alpha as before, an ICC
    profile and EXIF when kept, no XMP, no animation."""
    if len(payload) < 10:
        raise MetadataError("WebP VP8X chunk too short")
    flags = payload[0] & _VP8X_ALPHA
    flags |= _VP8X_ICC if b"ICCP" in kinds else 0
    flags |= _VP8X_EXIF if b"EXIF" in kinds else 0
    return bytes((flags,)) + b"\x00\x00\x00" + payload[4:10]


def _riff_chunk(kind: bytes, payload: bytes) -> bytes:
    return kind + struct.pack("<I", len(payload)) + payload + (b"\x00" if len(payload) & 1 else b"")


# --- GIF -------------------------------------------------------------------------------------------


def _gif_blocks(data: bytes, pos: int) -> int:
    """The position after a chain of data sub-blocks starting at ``pos`` (its zero-length end)."""
    while True:
        length = data[pos]
        pos += 1 + length
        if length == 0:
            return pos
        if pos > len(data):
            raise MetadataError("GIF data sub-blocks run past the end")


def _gif(data: bytes) -> Cleaned:
    if data[:6] not in (b"GIF87a", b"GIF89a"):
        raise MetadataError("GIF header missing")
    cleaned = Cleaned(b"")
    packed = data[10]
    pos = 13 + (3 << ((packed & 7) + 1) if packed & 0x80 else 0)
    out = [data[:pos]]
    size = len(data)
    while True:
        if pos >= size:  # decodable without its trailer: the trailer is added
            out.append(b";")
            end = size
            break
        introducer = data[pos]
        if introducer == 0x3B:
            out.append(b";")
            end = pos + 1
            break
        if introducer == 0x2C:  # image descriptor, local colour table, LZW code size, data
            flags = data[pos + 9]
            start = pos
            pos += 10 + (3 << ((flags & 7) + 1) if flags & 0x80 else 0)
            pos = _gif_blocks(data, pos + 1)
            out.append(data[start:pos])
        elif introducer == 0x21:
            label = data[pos + 1]
            start = pos
            pos = _gif_blocks(data, pos + 2)
            block = data[start:pos]
            graphic_control = label == 0xF9  # the transparency index
            icc = label == 0xFF and data[start + 2] == 11 and data[start + 3 : start + 14] == _GIF_ICC
            if graphic_control or icc:
                out.append(block)
            else:
                names = {0xFE: "comment", 0x01: "plain text", 0xFF: "application"}
                cleaned.removed.append(f"GIF {names.get(label, hex(label))} extension")
                if label == 0xFF and data[start + 3 : start + 14] == b"XMP DataXMP":
                    cleaned.xmp.append(block[14:])
        else:
            raise MetadataError(f"GIF block 0x{introducer:02X} unknown at byte {pos}")
    cleaned.data = b"".join(out)
    cleaned.trailing = size - end
    if cleaned.trailing:
        cleaned.removed.append(f"{cleaned.trailing} bytes after the trailer")
    return cleaned


# --- BMP -------------------------------------------------------------------------------------------


def _bmp(data: bytes) -> Cleaned:
    """BMP has no metadata besides an embedded colour profile; what ends the file is the pixel
    array (or the profile after it), computed from the headers. The file size field is set to it."""
    if data[:2] != b"BM":
        raise MetadataError("BMP header missing")
    (offset,) = struct.unpack("<I", data[10:14])
    (header,) = struct.unpack("<I", data[14:18])
    if header == 12:  # OS/2 core header
        width, height, _planes, bits = struct.unpack("<HHHH", data[18:26])
        compression, image_size = 0, 0
    else:
        width, height, _planes, bits, compression, image_size = struct.unpack("<iiHHII", data[18:38])
    if compression in (0, 3, 6):  # uncompressed rows, padded to 4 bytes
        pixels = ((bits * abs(width) + 31) // 32) * 4 * abs(height)
    else:
        pixels = image_size
    end = offset + pixels
    if header >= 124:  # V5: an embedded profile may follow the pixels
        (colour_space,) = struct.unpack("<I", data[14 + 56 : 14 + 60])
        profile_at, profile_size = struct.unpack("<II", data[14 + 112 : 14 + 120])
        if colour_space == 0x4D424544:  # 'MBED'
            end = max(end, 14 + profile_at + profile_size)
    if pixels <= 0 or end > len(data):
        raise MetadataError(f"BMP pixel data ({pixels} bytes from byte {offset}) runs past the end")
    cleaned = Cleaned(data[:2] + struct.pack("<I", end) + data[6:end])
    cleaned.trailing = len(data) - end
    if cleaned.trailing:
        cleaned.removed.append(f"{cleaned.trailing} bytes after the pixel data")
    return cleaned


# --- TIFF ------------------------------------------------------------------------------------------

#: TIFF tags a decoder needs, kept as they are (strip and tile offsets are rewritten).
_TIFF_IMAGE = {
    254, 256, 257, 258, 259, 262, 266, 277, 278, 284, 317, 318, 319, 320, 322, 323, 338, 339, 340,
    341, 347, 529, 530, 531, 532,
}  # fmt: skip
#: TIFF tags of the allow-list: orientation, resolution, make and model, ICC profile.
_TIFF_ALLOWED = {274, 282, 283, 296, 271, 272, 34675}
_TIFF_SIZES = {1: 1, 2: 1, 3: 2, 4: 4, 5: 8, 6: 1, 7: 1, 8: 2, 9: 4, 10: 8, 11: 4, 12: 8, 13: 4}
_STRIPS, _TILES = (273, 279), (324, 325)
_XMP_TAG, _IPTC_TAG, _PHOTOSHOP_TAG = 700, 33723, 34377


def _tiff(data: bytes) -> Cleaned:
    """A new TIFF holding the first image's data blocks and a single directory with the decoder's
    tags and the allowed ones; nothing else of the source (other directories, EXIF, XMP, IPTC,
    gaps between blocks, trailing bytes) is carried over. Capture time is not kept for TIFF."""
    endian = "<" if data[:2] == b"II" else ">"
    (first,) = struct.unpack(endian + "I", data[4:8])
    entries = _tiff_entries(data, first, endian)
    cleaned = Cleaned(b"")
    by_tag = {tag: (kind, count, raw) for tag, kind, count, raw in entries}
    offsets_tag, counts_tag = _TILES if _TILES[0] in by_tag else _STRIPS
    if offsets_tag not in by_tag or counts_tag not in by_tag:
        raise MetadataError("TIFF without strip or tile offsets")
    offsets = _tiff_numbers(by_tag[offsets_tag], endian)
    counts = _tiff_numbers(by_tag[counts_tag], endian)
    if len(offsets) != len(counts):
        raise MetadataError("TIFF strip offsets and byte counts differ in number")
    blocks, new_offsets, pos = [], [], 8
    for offset, count in zip(offsets, counts, strict=True):
        if offset + count > len(data):
            raise MetadataError(f"TIFF data block at byte {offset} runs past the end")
        new_offsets.append(pos)
        blocks.append(data[offset : offset + count] + (b"\x00" if count & 1 else b""))
        pos += count + (count & 1)
    kept = []
    for tag, kind, count, raw in entries:
        if tag in _TIFF_IMAGE or tag in _TIFF_ALLOWED:
            kept.append((tag, kind, count, raw))
        elif tag == counts_tag:
            kept.append((tag, 4, count, struct.pack(endian + f"{count}I", *counts)))
        elif tag != offsets_tag:
            cleaned.removed.append(f"TIFF tag {tag}")
            _tiff_aside(tag, raw, cleaned)
    kept.append(
        (offsets_tag, 4, len(new_offsets), struct.pack(endian + f"{len(new_offsets)}I", *new_offsets))
    )
    head = (b"II*\x00" if endian == "<" else b"MM\x00*") + struct.pack(endian + "I", pos)
    cleaned.data = head + b"".join(blocks) + ifd_bytes(kept, pos, endian)
    return cleaned


def _tiff_entries(data: bytes, offset: int, endian: str) -> list[tuple[int, int, int, bytes]]:
    """The entries of the directory at ``offset``: (tag, type, count, value bytes)."""
    if offset + 2 > len(data):
        raise MetadataError("TIFF directory offset runs past the end")
    (number,) = struct.unpack(endian + "H", data[offset : offset + 2])
    entries = []
    for index in range(number):
        at = offset + 2 + 12 * index
        tag, kind, count = struct.unpack(endian + "HHI", data[at : at + 8])
        if kind not in _TIFF_SIZES:
            continue
        length = _TIFF_SIZES[kind] * count
        if length <= 4:
            raw = data[at + 8 : at + 8 + length]
        else:
            (where,) = struct.unpack(endian + "I", data[at + 8 : at + 12])
            if where + length > len(data):
                raise MetadataError(f"TIFF tag {tag} value runs past the end")
            raw = data[where : where + length]
        entries.append((tag, kind, count, raw))
    return entries


def _tiff_numbers(entry: tuple[int, int, bytes], endian: str) -> list[int]:
    kind, count, raw = entry
    code = {3: "H", 4: "I", 13: "I"}.get(kind)
    if code is None:
        raise MetadataError(f"TIFF offsets of type {kind}")
    return list(struct.unpack(endian + code * count, raw))


def _tiff_aside(tag: int, raw: bytes, cleaned: Cleaned) -> None:
    """Keep removed XMP, IPTC and EXIF blocks aside for their private values."""
    if tag == _XMP_TAG:
        cleaned.xmp.append(raw)
    elif tag == _IPTC_TAG:
        cleaned.iptc.append(raw)
    elif tag == _PHOTOSHOP_TAG:
        cleaned.iptc.extend(photoshop_iptc(raw))
