"""WebP: RIFF chunks walked up to the RIFF size; the VP8X flags recomputed for what is kept."""

from __future__ import annotations

import struct

from harvest.images.containers.cleaned import Cleaned, MetadataError
from harvest.images.exif import allowed_exif

#: WebP chunks kept (VP8X with its flags recomputed); EXIF is replaced by the allowed EXIF.
_WEBP_KEEP = {b"VP8X", b"ICCP", b"ALPH", b"VP8 ", b"VP8L"}
_VP8X_ALPHA, _VP8X_ICC, _VP8X_EXIF = 0x10, 0x20, 0x08


def clean_webp(data: bytes) -> Cleaned:
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
