"""What every container walker returns, and the error it raises on a structure it cannot walk."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


class MetadataError(ValueError):
    """The container cannot be walked: it is cut short or its structure is not what its format says."""


@dataclass
class Cleaned:
    """The copy to publish, and what was taken out of the source to make it."""

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
