"""robots.txt, read once per host per task and applied to pages and images alike.

Follows RFC 9309: a missing robots.txt (4xx) allows everything; one that cannot be fetched because
the server or network fails (5xx, no answer) disallows the whole host until a later run. The
Crawl-delay of the group that matches our User-Agent raises the host's politeness delay, up to the
run's cap; a host asking for more is deferred to a later run (harvest.web.politeness).
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from urllib.parse import urlsplit

from protego import Protego

from harvest.web.http import FetchError, HttpClient

log = logging.getLogger(__name__)

MAX_ROBOTS_BYTES = 512 * 1024


def agent_token(user_agent: str) -> str:
    """The product token robots.txt groups are matched against ("image-harvester/0.1 (+url)" ->
    "image-harvester")."""
    token = user_agent.strip().split()[0] if user_agent.strip() else "*"
    return token.split("/")[0] or "*"


@dataclass
class RobotsRules:
    host: str
    parser: Protego | None  # None: everything allowed (no robots.txt)
    unavailable: str | None = None  # set: everything disallowed, for this reason

    def verdict(self, url: str, agent: str, obeyed: tuple[str, ...] = ()) -> str | None:
        """None if ``agent`` may fetch ``url``; otherwise the reason it may not. ``obeyed``: other
        crawlers' agents (AI crawlers) whose robots.txt groups the user asked to obey as ours; a
        group that names one of them explicitly and disallows the URL is an opt-out."""
        if self.unavailable:
            return self.unavailable
        if self.parser is not None and not self.parser.can_fetch(url, agent):
            return f"disallowed by robots.txt of {self.host} for user agent {agent!r}"
        for other in obeyed:  # a group naming that agent, not everyone's (ours is asked above)
            if self.parser is not None and not self.parser.can_fetch(url, other):
                return f"opt-out: Disallow for {other} (robots.txt of {self.host})"
        return None


class RobotsCache:
    """Per-host robots.txt for one task; thread-safe, each host fetched at most once."""

    def __init__(
        self, client: HttpClient, user_agent: str, enabled: bool = True, obeyed: tuple[str, ...] = ()
    ):
        self.client = client
        self.agent = agent_token(user_agent)
        #: AI crawlers' robots.txt groups obeyed as if they were ours (HARVEST_OBEY_AGENTS)
        self.obeyed = tuple(a for a in obeyed if a.lower() != self.agent.lower())
        self.enabled = enabled
        self._rules: dict[str, RobotsRules] = {}
        self._locks: dict[str, threading.Lock] = {}
        self._lock = threading.Lock()

    def rules_for(self, url: str) -> RobotsRules:
        parts = urlsplit(url)
        origin = f"{parts.scheme}://{parts.netloc}".lower()
        with self._lock:
            cached = self._rules.get(origin)
            if cached is not None:
                return cached
            host_lock = self._locks.setdefault(origin, threading.Lock())
        with host_lock:
            with self._lock:
                cached = self._rules.get(origin)
            if cached is None:
                cached = self._fetch(origin, (parts.hostname or "").lower())
                with self._lock:
                    self._rules[origin] = cached
        return cached

    def _fetch(self, origin: str, host: str) -> RobotsRules:
        robots_url = f"{origin}/robots.txt"
        try:
            result = self.client.get(
                robots_url, MAX_ROBOTS_BYTES, accept="text/plain,*/*;q=0.5", first_contact=False
            )
        except FetchError as exc:
            if exc.status is not None and 400 <= exc.status < 500 and exc.status != 429:
                return RobotsRules(host, None)
            if not exc.transient:  # refused by the guard, bad scheme: the fetch itself will say so
                return RobotsRules(host, None)
            reason = f"robots.txt of {host} unavailable ({exc.reason}); host treated as disallowed"
            log.warning("robots: %s", reason)
            return RobotsRules(host, None, unavailable=reason)
        text = result.body.decode("utf-8", errors="replace")
        parser = Protego.parse(text)
        delay = parser.crawl_delay(self.agent)
        if delay:
            self.client.gate.set_delay(host, float(delay))  # over the cap, the gate defers the host
            deferred = self.client.gate.paused_hosts().get(host)
            if deferred:
                log.warning("robots: %s", deferred)
            else:
                log.info("robots: %s asks for a crawl delay of %ss", host, delay)
        return RobotsRules(host, parser)

    def prime(self, origin: str) -> None:
        """Read robots.txt of an origin before anything else is requested from it (Crawl-delay)."""
        if self.enabled:
            self.rules_for(origin + "/")

    def skip_reason(self, url: str) -> str | None:
        """Why ``url`` must not be fetched by robots.txt, or None. Fetches robots.txt on first use."""
        if not self.enabled:
            return None
        return self.rules_for(url).verdict(url, self.agent, self.obeyed)


def robots_skip_reason(cache: RobotsCache | None, url: str) -> str | None:
    """For stages that fetch URLs found elsewhere (images): the robots verdict, None when allowed."""
    return cache.skip_reason(url) if cache is not None else None
