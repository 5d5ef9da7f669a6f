"""PNG: chunks walked up to IEND; the critical ones and those about colour and size are kept."""

from __future__ import annotations

import struct
import zlib

from harvest.images.containers.cleaned import Cleaned, MetadataError
from harvest.images.exif import allowed_exif

#: PNG chunks kept: the critical ones and the ancillary chunks about colour and physical size.
_PNG_KEEP = {b"IHDR", b"PLTE", b"IDAT", b"IEND", b"tRNS", b"gAMA", b"cHRM", b"sRGB", b"iCCP", b"sBIT"}
_PNG_KEEP |= {b"pHYs", b"bKGD"}
_PNG_IEND = b"\x00\x00\x00\x00IEND\xaeB`\x82"
_PNG_ANIMATION = {b"acTL", b"fcTL", b"fdAT"}


def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def clean_png(data: bytes) -> Cleaned:
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
