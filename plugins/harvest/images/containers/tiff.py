"""TIFF: a new file with the first image's data blocks and one directory of the tags kept."""

from __future__ import annotations

import struct

from harvest.images.containers.cleaned import Cleaned, MetadataError
from harvest.images.exif import ifd_bytes
from harvest.images.xmp import photoshop_iptc

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


def clean_tiff(data: bytes) -> Cleaned:
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
