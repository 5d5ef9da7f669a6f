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
again before publishing. The walkers live in :mod:`harvest.images.containers`, one module per family.
"""

from __future__ import annotations

import io
import re
import struct
import zipfile
from typing import Any

from harvest.images.containers.bmp import clean_bmp
from harvest.images.containers.cleaned import Cleaned, MetadataError
from harvest.images.containers.gif import clean_gif
from harvest.images.containers.jpeg import clean_jpeg
from harvest.images.containers.png import clean_png
from harvest.images.containers.tiff import clean_tiff
from harvest.images.containers.webp import clean_webp
from harvest.images.exif import load_exif, parse_exif
from harvest.images.xmp import iptc_private, xmp_private

#: The metadata rule set that made a clean copy (recorded per image in the state DB).
POLICY = "allow-1"
#: Markup that makes a file an HTML or script polyglot when it is found anywhere in it.
_MARKUP = re.compile(
    rb"<script|<html[\s>]|<body[\s>]|<iframe|<svg[\s>]|<\?php|<!doctype\s+html|<object[\s>]|<embed[\s>]",
    re.I,
)


def clean_file(data: bytes, fmt: str) -> Cleaned:
    """The bytes to publish for an image of format ``fmt`` (see the module docstring)."""
    walkers = {
        "JPEG": clean_jpeg,
        "PNG": clean_png,
        "WEBP": clean_webp,
        "GIF": clean_gif,
        "BMP": clean_bmp,
        "TIFF": clean_tiff,
    }
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
