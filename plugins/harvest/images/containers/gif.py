"""GIF: blocks walked up to the trailer; image data, graphic control and ICC profile kept."""

from __future__ import annotations

from harvest.images.containers.cleaned import Cleaned, MetadataError

#: GIF application extension kept: an ICC profile.
_GIF_ICC = b"ICCRGBG1012"


def _gif_blocks(data: bytes, pos: int) -> int:
    """The position after a chain of data sub-blocks starting at ``pos`` (its zero-length end)."""
    while True:
        length = data[pos]
        pos += 1 + length
        if length == 0:
            return pos
        if pos > len(data):
            raise MetadataError("GIF data sub-blocks run past the end")


def clean_gif(data: bytes) -> Cleaned:
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
