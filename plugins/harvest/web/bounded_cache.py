"""Per-client caches that are emptied when full instead of growing with every host a crawl meets."""

from __future__ import annotations

#: entries a per-client cache (resolutions, environment settings per origin) holds before it starts again
CACHE_ENTRIES = 4096


def remember(cache: dict, key, value):
    """Put ``value`` in a cache that is emptied when full: a crawl meeting ever more hosts does
    not grow it without bound, and the few hosts being downloaded from are back in it at once."""
    if len(cache) >= CACHE_ENTRIES:
        cache.clear()
    cache[key] = value
    return value
