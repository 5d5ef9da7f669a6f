"""BMP: headers and pixel array up to their computed end, the file size field set to it."""

from __future__ import annotations

import struct

from harvest.images.containers.cleaned import Cleaned, MetadataError


def clean_bmp(data: bytes) -> Cleaned:
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
