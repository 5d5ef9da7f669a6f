"""srcset attributes: split as the HTML spec does, ranked by size, the largest chosen."""

from __future__ import annotations

import re

_DESCRIPTOR = re.compile(r"^(\d+(?:\.\d+)?)([wx])$")


def parse_srcset(srcset: str) -> list[tuple[str, str | None]]:
    """(url, descriptor) pairs, split as the HTML spec does: URLs may contain commas (CDN transforms)."""
    items: list[tuple[str, str | None]] = []
    position, length = 0, len(srcset)
    while position < length:
        while position < length and (srcset[position].isspace() or srcset[position] == ","):
            position += 1
        start = position
        while position < length and not srcset[position].isspace():
            position += 1
        url = srcset[start:position]
        if not url:
            break
        if url.endswith(","):
            items.append((url.rstrip(","), None))
            continue
        start = position
        while position < length and srcset[position] != ",":
            position += 1
        descriptor = srcset[start:position].strip() or None
        items.append((url, descriptor))
    return items


def _descriptor_size(descriptor: str | None) -> tuple[float, int | None]:
    """Sort key of a srcset descriptor, and the width in pixels when it is a w descriptor."""
    match = _DESCRIPTOR.match(descriptor.split()[-1]) if descriptor else None
    if not match:
        return 1.0, None
    value = float(match.group(1))
    if match.group(2) == "w":
        return value, int(value)
    return value * 10_000, None


def ranked_srcset(srcset: str) -> list[tuple[str, str | None, int | None]]:
    """(url, descriptor, width) of a srcset, largest first (ties keep document order)."""
    entries = [(url, descriptor, *_descriptor_size(descriptor)) for url, descriptor in parse_srcset(srcset)]
    order = sorted(range(len(entries)), key=lambda i: -entries[i][2])
    return [(entries[i][0], entries[i][1], entries[i][3]) for i in order]


def best_from_srcset(srcset: str) -> str | None:
    """The largest candidate of a srcset, by its w or x descriptor."""
    ranked = ranked_srcset(srcset)
    return ranked[0][0] if ranked else None


def srcset_density(srcset: str, url: str | None) -> float | None:
    for candidate, descriptor in parse_srcset(srcset):
        if candidate == url:
            if not descriptor:
                return 1.0
            match = _DESCRIPTOR.match(descriptor.split()[-1])
            return float(match.group(1)) if match and match.group(2) == "x" else None
    return None
