"""How fast one host may be asked: the rules that move a host's spacing between request starts.

The same rules serve the in-process gate (one task, SQLite) and the budget shared through the state
DB (every task and worker), so a host is treated alike whichever of the two holds its state.

A host starts at the configured spacing. Answers that come fast and clean shorten it step by step
toward the host's ceiling rate; a 429 or 503, an error (no answer, 5xx) or a slow answer doubles it
at once, and a Retry-After longer than the spacing becomes the spacing. A host that has served only
images (an image CDN) gets its own, larger, concurrency and ceiling once it has served a few of them.
"""

from __future__ import annotations

from dataclasses import dataclass

#: fast clean answers in a row before the spacing shortens one step
RISE_EVERY = 5
#: each step up multiplies the rate by this much
RISE_FACTOR = 1.5
#: the shortest spacing a back-off starts from, for a host configured with none (``HARVEST_HOST_DELAY=0``)
BACKOFF_FLOOR = 0.1
#: image answers (and no page) after which a host counts as an image CDN
CDN_AFTER = 5
#: a host answered by no one for this long starts again from the configured spacing
IDLE_RESET = 900.0

THROTTLE_STATUSES = (429, 503)


@dataclass(frozen=True)
class Limits:
    """The politeness settings one gate applies to every host (seconds, requests per second)."""

    concurrency: int = 2
    delay: float = 0.5  # the starting spacing
    max_rate: float = 10.0  # the ceiling a site's host may rise to
    cdn_concurrency: int = 8
    cdn_max_rate: float = 50.0  # the ceiling of a host that serves only images
    fast_seconds: float = 0.5  # an answer at most this long lets the rate rise
    slow_seconds: float = 5.0  # an answer longer than this backs the rate off
    max_delay: float = 60.0  # the longest spacing a back-off reaches (Retry-After holds beyond it)
    #: the longest a Retry-After holds the host (a day-long one would otherwise keep it, through the
    #: shared budget, from every run until tomorrow; its requests fail and a later run retries them)
    max_hold: float = 600.0

    def min_delay(self, kind: str) -> float:
        """The spacing at the host's ceiling; never above the configured start (a start faster than
        the ceiling, as a bench or a test sets, is kept)."""
        rate = self.cdn_max_rate if kind == "images" else self.max_rate
        return min(self.delay, 1.0 / rate if rate > 0 else float("inf"))

    def concurrency_of(self, kind: str) -> int:
        return max(self.concurrency, self.cdn_concurrency) if kind == "images" else self.concurrency


@dataclass(frozen=True)
class Answer:
    """What one request to a host came to: ``status`` None when no answer came (connection failed,
    timed out), ``seconds`` from the request's start to the end of its body."""

    status: int | None
    seconds: float
    retry_after: float | None = None
    image: bool | None = None  # whether the body was an image (None: no body to judge, e.g. a redirect)


@dataclass
class Pace:
    """One host's adaptive state."""

    delay: float
    floor: float = 0.0  # robots.txt Crawl-delay: the spacing never goes below it
    streak: int = 0
    pages: int = 0
    images: int = 0
    requests: int = 0
    throttled: int = 0
    errors: int = 0
    peak_rate: float = 0.0

    @property
    def kind(self) -> str:
        """ "images" for a host that served only images (at least CDN_AFTER of them), else "site"."""
        return "images" if self.images >= CDN_AFTER and not self.pages else "site"

    @property
    def rate(self) -> float:
        """Requests per second the spacing allows (0 spacing: unlimited, shown as 0)."""
        return 1.0 / self.delay if self.delay > 0 else 0.0


def adapt(pace: Pace, answer: Answer, limits: Limits) -> float | None:
    """Apply one answer to ``pace``; returns how long no request may start (a Retry-After), if any."""
    pace.requests += 1
    if answer.image is True:
        pace.images += 1
    elif answer.image is False:
        pace.pages += 1
    hold = None
    if answer.status in THROTTLE_STATUSES:
        pace.throttled += 1
        pace.streak = 0
        wanted = max(pace.delay * 2, BACKOFF_FLOOR, min(answer.retry_after or 0.0, limits.max_delay))
        pace.delay = min(wanted, max(limits.max_delay, pace.delay))
        hold = min(answer.retry_after, limits.max_hold) if answer.retry_after else None
    elif answer.status is None or answer.status >= 500 or answer.seconds > limits.slow_seconds:
        pace.errors += answer.status is None or answer.status >= 500
        pace.streak = 0
        pace.delay = min(max(pace.delay * 2, BACKOFF_FLOOR), max(limits.max_delay, pace.delay))
    elif answer.seconds <= limits.fast_seconds:
        pace.streak += 1
        if pace.streak >= RISE_EVERY:
            pace.streak = 0
            pace.delay = max(pace.delay / RISE_FACTOR, limits.min_delay(pace.kind))
    else:
        pace.streak = 0
    pace.delay = max(pace.delay, pace.floor)
    if pace.delay > 0:
        pace.peak_rate = max(pace.peak_rate, 1.0 / pace.delay)
    return hold
