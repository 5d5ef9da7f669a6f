"""Which discovered links become pages: site, allow/deny patterns, and bounds against crawler traps.

Calendars, faceted search and session ids generate endless distinct URLs; they are bounded by a
per-host page budget and by how many query-string variants of one path are accepted.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from urllib.parse import urlsplit

from harvest.settings.config import HarvestConfig
from harvest.urls import compile_url_pattern, host_of, same_site


class Scope:
    """Admission rules for one crawl; counts are seeded from the pages a resumed run already has."""

    def __init__(self, cfg: HarvestConfig, known_urls: Iterable[str] = ()):
        self.same_domain = cfg.same_domain
        # RE2, not re: a pattern is matched against URLs the crawled sites choose, and a
        # backtracking engine can spend exponential time on one URL
        self.allow = [compile_url_pattern(p) for p in cfg.url_allow]
        self.deny = [compile_url_pattern(p) for p in cfg.url_deny]
        self.max_pages_per_host = cfg.max_pages_per_host
        self.max_query_variants = cfg.max_query_variants
        self.per_host: Counter[str] = Counter()
        self.per_path: Counter[tuple[str, str]] = Counter()
        for url in known_urls:
            self.admitted(url)

    def refusal(self, url: str, seed_url: str) -> str | None:
        """Why ``url`` is not crawled, or None if it is in scope and within the trap bounds."""
        if self.same_domain and not same_site(url, seed_url):
            return "off-site link"
        if self.allow and not any(p.search(url) for p in self.allow):
            return "matches no url_allow pattern"
        if any(p.search(url) for p in self.deny):
            return "matches a url_deny pattern"
        host = host_of(url)
        if self.per_host[host] >= self.max_pages_per_host:
            return f"host page budget of {self.max_pages_per_host} reached"
        parts = urlsplit(url)
        if parts.query and self.per_path[(host, parts.path)] >= self.max_query_variants:
            return f"more than {self.max_query_variants} query variants of {parts.path}"
        return None

    def admitted(self, url: str) -> None:
        parts = urlsplit(url)
        host = host_of(url)
        self.per_host[host] += 1
        if parts.query:
            self.per_path[(host, parts.path)] += 1
