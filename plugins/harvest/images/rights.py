"""What an image file says about its rights: read from the XMP, IPTC and EXIF blocks before they
are stripped from the published copy (:mod:`harvest.images.sanitize`).

XMP ``xmpRights:WebStatement`` (the licence page), ``xmpRights:UsageTerms``, ``cc:license``,
``dc:rights`` and ``photoshop:Credit``; IPTC-IIM copyright notice (2:116) and credit (2:110); EXIF
Copyright. The creator (``dc:creator``, IPTC by-line, EXIF Artist) is personal data: it is kept in
clear only when the file's own licence requires attribution; otherwise it stays among the
encrypted private fields like the other names (:mod:`harvest.images.privacy`).
"""

from __future__ import annotations

from typing import Any

from harvest.images.xmp import iptc_records, xmp_values
from harvest.licences import requires_attribution, spdx_from_text, spdx_from_url

_XMP_NAMES = ("WebStatement", "UsageTerms", "license", "rights", "Credit", "creator")
_IPTC_COPYRIGHT, _IPTC_CREDIT, _IPTC_BY_LINE = 116, 110, 80


def file_rights(xmp: list[bytes], iptc: list[bytes], exif_copyright: str | None, artist: Any) -> dict:
    """The file's rights statements and the licence they name: {"license": SPDX id or None,
    "license_url": ..., "usage_terms": ..., "copyright": ..., "credit": ..., "creator": [...]}
    (empty values left out; ``creator`` only when the licence requires attribution)."""
    values = xmp_values(xmp, _XMP_NAMES) if xmp else {}
    records = iptc_records(iptc) if iptc else []
    first = lambda name: (values.get(name) or [None])[0]  # noqa: E731
    iptc_of = lambda dataset: next((t for d, t in records if d == dataset), None)  # noqa: E731
    rights: dict[str, Any] = {
        "license_url": first("WebStatement") or first("license"),
        "usage_terms": first("UsageTerms"),
        "copyright": first("rights") or iptc_of(_IPTC_COPYRIGHT) or exif_copyright,
        "credit": first("Credit") or iptc_of(_IPTC_CREDIT),
    }
    spdx = (
        spdx_from_url(rights["license_url"])
        or spdx_from_text(rights["usage_terms"])
        or spdx_from_text(rights["copyright"])
    )
    rights["license"] = spdx
    creators = list(values.get("creator", [])) + [t for d, t in records if d == _IPTC_BY_LINE]
    if isinstance(artist, str) and artist:
        creators.append(artist)
    if creators and requires_attribution(spdx):
        rights["creator"] = list(dict.fromkeys(creators))
    elif creators:
        rights["creator_private"] = True  # named in the encrypted private fields only
    return {name: value for name, value in rights.items() if value}
