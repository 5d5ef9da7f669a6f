"""Opt-outs from AI training and indexing that a site declares, read wherever it may declare them.

* ``X-Robots-Tag`` response headers of pages and images: ``noai, noimageai`` for every crawler, or
  scoped to one (``image-harvester: noai``); the directives honoured are a setting
  (``HARVEST_OPTOUT_DIRECTIVES``, by default those img2dataset honours).
* ``<meta name="robots">`` and ``<meta name="{our user agent}">`` in a page: for the page's images.
* TDMRep (W3C TDM Reservation Protocol): the ``tdm-reservation`` response header, the
  ``<meta name="tdm-reservation">`` of a page, and the path rules of ``/.well-known/tdmrep.json``
  (read once per origin through the crawler's client, like robots.txt).

Each finding is an :class:`OptOut`: the directive and where it was found, which is what a skipped
candidate records and what the statistics and the dataset card count.
"""

from __future__ import annotations

import json
import logging
import re
import threading
from dataclasses import dataclass
from urllib.parse import urlsplit

from harvest.web.errors import FetchError

log = logging.getLogger(__name__)

#: img2dataset's defaults: what a site says when it does not want its images in a training set
DEFAULT_DIRECTIVES = ("noai", "noimageai", "noindex", "noimageindex")
TDMREP_PATH = "/.well-known/tdmrep.json"
MAX_TDMREP_BYTES = 256 * 1024
#: X-Robots-Tag rules whose value holds a colon: not a user-agent prefix
_VALUED_RULES = {"unavailable_after", "max-snippet", "max-image-preview", "max-video-preview"}


@dataclass(frozen=True)
class OptOut:
    directive: str
    found: str

    @property
    def reason(self) -> str:
        """The candidate's recorded skip reason (the report groups by the part before " (")."""
        return f"opt-out: {self.directive} ({self.found})"

    def as_dict(self) -> dict:
        return {"directive": self.directive, "found": self.found}


def robots_directives(value: str, agent: str) -> list[str]:
    """The directives of an X-Robots-Tag (or robots meta) value that apply to ``agent``: unscoped
    ones, and those after an ``agent:`` prefix naming us (a prefix holds until the next one)."""
    found: list[str] = []
    scope: str | None = None
    for raw in value.split(","):
        token = raw.strip().lower()
        if not token:
            continue
        head, colon, rest = token.partition(":")
        if colon and head.strip() not in _VALUED_RULES:
            scope, token = head.strip(), rest.strip()
            if not token:
                continue
        if scope is None or scope == agent.lower():
            found.append(token.split()[0] if token.split() else token)
    return found


def header_values(headers, name: str) -> list[str]:
    """Every value of a response header (requests joins repeated headers with ", ")."""
    if headers is None:
        return []
    value = headers.get(name)
    return [value] if value else []


def from_headers(headers, agent: str, directives: tuple[str, ...], what: str) -> OptOut | None:
    """The opt-out the response headers of ``what`` ("the image", "the page") declare, or None."""
    for value in header_values(headers, "x-robots-tag"):
        for directive in robots_directives(value, agent):
            if directive in directives:
                return OptOut(directive, f"X-Robots-Tag header of {what}")
    for value in header_values(headers, "tdm-reservation"):
        if value.strip() == "1":
            return OptOut("tdm-reservation: 1", f"TDMRep header of {what}")
    return None


def from_meta(metas: list[tuple[str, str]], agent: str, directives: tuple[str, ...]) -> OptOut | None:
    """The opt-out a page's ``<meta name=... content=...>`` pairs declare for its images."""
    for name, content in metas:
        name = name.strip().lower()
        if name in ("robots", agent.lower()):
            for directive in robots_directives(content, agent):
                if directive in directives:
                    return OptOut(directive, f'<meta name="{name}"> of the page')
        elif name == "tdm-reservation" and content.strip() == "1":
            return OptOut("tdm-reservation: 1", '<meta name="tdm-reservation"> of the page')
    return None


def _location_pattern(location: str) -> re.Pattern[str] | None:
    """A tdmrep.json ``location``: a path pattern with robots.txt wildcards (``*``, a final ``$``)."""
    if not location.startswith("/"):
        return None
    anchored = location.endswith("$")
    body = location[:-1] if anchored else location
    pattern = ".*".join(re.escape(part) for part in body.split("*"))
    return re.compile(pattern + ("$" if anchored else ""))


@dataclass
class TdmRules:
    """One origin's tdmrep.json rules: (location, pattern, reservation, policy), in file order."""

    origin: str
    rules: list[tuple[str, re.Pattern[str], bool, str | None]]

    def verdict(self, url: str) -> OptOut | None:
        """The longest matching rule decides (as in robots.txt); a reservation of 1 is an opt-out."""
        parts = urlsplit(url)
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        best: tuple[str, bool, str | None] | None = None
        for location, pattern, reserved, policy in self.rules:
            if pattern.match(path) and (best is None or len(location) > len(best[0])):
                best = (location, reserved, policy)
        if best is None or not best[1]:
            return None
        policy = f", policy {best[2]}" if best[2] else ""
        return OptOut("tdm-reservation: 1", f"{self.origin}{TDMREP_PATH} rule {best[0]!r}{policy}")


def parse_tdmrep(origin: str, text: str) -> TdmRules:
    """The rules of a tdmrep.json document; malformed entries are passed over."""
    try:
        data = json.loads(text)
    except ValueError:
        log.warning("tdmrep: %s%s is not JSON; no rules read", origin, TDMREP_PATH)
        return TdmRules(origin, [])
    rules = []
    for entry in data if isinstance(data, list) else []:
        if not isinstance(entry, dict) or not isinstance(entry.get("location"), str):
            continue
        pattern = _location_pattern(entry["location"])
        if pattern is None:
            continue
        reserved = str(entry.get("tdm-reservation", 0)).strip() == "1"
        policy = entry.get("tdm-policy") if isinstance(entry.get("tdm-policy"), str) else None
        rules.append((entry["location"], pattern, reserved, policy))
    return TdmRules(origin, rules)


class TdmRepCache:
    """Per-origin tdmrep.json for one task, fetched at most once through the crawler's client (its
    guard, politeness and robots first contact). A missing or unreadable file reserves nothing."""

    def __init__(self, client, enabled: bool = True):
        self.client = client
        self.enabled = enabled
        self._rules: dict[str, TdmRules] = {}
        self._lock = threading.Lock()
        self._origin_locks: dict[str, threading.Lock] = {}

    def rules_for(self, url: str) -> TdmRules:
        parts = urlsplit(url)
        origin = f"{parts.scheme}://{parts.netloc}".lower()
        with self._lock:
            lock = self._origin_locks.setdefault(origin, threading.Lock())
        with lock:
            cached = self._rules.get(origin)
            if cached is None:
                cached = self._fetch(origin)
                self._rules[origin] = cached
        return cached

    def _fetch(self, origin: str) -> TdmRules:
        try:
            result = self.client.get(origin + TDMREP_PATH, MAX_TDMREP_BYTES, accept="application/json")
        except FetchError as exc:
            if exc.status not in (404, 410):
                log.info(
                    "tdmrep: %s%s not read (%s); no reservation assumed", origin, TDMREP_PATH, exc.reason
                )
            return TdmRules(origin, [])
        return parse_tdmrep(origin, result.body.decode("utf-8", errors="replace"))

    def verdict(self, url: str) -> OptOut | None:
        if not self.enabled or not url.startswith(("http://", "https://")):
            return None
        return self.rules_for(url).verdict(url)
