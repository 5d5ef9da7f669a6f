"""Per-host politeness shared by every thread of a task: a concurrency cap, an adaptive delay between
request starts (harvest.web.adaptive), host-wide back-off after 429/503, and a pause for hosts that
keep failing or that ask for a longer Crawl-delay than the run allows.

A site operator judges a crawler by what arrives at one host, so the limits are per host name and
enforced in one place that all of a task's threads go through. This gate holds them within one
process; harvest.web.host_budget holds the same limits for every task and worker of a deployment
through the state DB.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime

from harvest.web.adaptive import Answer, Limits, Pace, adapt


class HostPaused(Exception):
    """The host failed too often in this run; no more requests go to it."""

    def __init__(self, host: str, reason: str):
        self.host = host
        self.reason = reason
        super().__init__(reason)


class SlotTimeout(Exception):
    """No slot of the host came free before the request's deadline."""

    def __init__(self, host: str, waited: float, reason: str):
        self.host = host
        self.waited = waited
        self.reason = reason
        super().__init__(reason)


class HostBusy(Exception):
    """The host's next turn is further away than the caller is willing to wait (see :func:`patience`):
    no request was made, and the work can be taken up again later."""

    def __init__(self, host: str, wait: float):
        self.host = host
        self.wait = wait
        super().__init__(f"{host}: next request slot in {wait:.1f}s")


#: the longest wait for a host's turn the current thread accepts; None waits as long as it takes
_PATIENCE: ContextVar[float | None] = ContextVar("host_patience", default=None)


@contextmanager
def patience(seconds: float | None) -> Iterator[None]:
    """Within this block, a request whose host's next start is more than ``seconds`` away raises
    HostBusy instead of waiting: a downloader with work for other hosts does that first, rather than
    hold a thread (and its chunk of rows) for a host that is throttled or slow to allow requests."""
    token = _PATIENCE.set(seconds)
    try:
        yield
    finally:
        _PATIENCE.reset(token)


def check_patience(host: str, wait: float) -> None:
    """Raise HostBusy when ``wait`` is more than the current thread accepts."""
    limit = _PATIENCE.get()
    if limit is not None and wait > limit:
        raise HostBusy(host, wait)


@dataclass
class _Host:
    pace: Pace
    active: int = 0
    next_start: float = 0.0
    last_start: float | None = None
    held_until: float = 0.0  # a Retry-After or back-off hold: no start before it
    failures: int = 0
    paused: str | None = None

    @property
    def delay(self) -> float:
        return self.pace.delay


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds to wait from a Retry-After header: delta-seconds or an HTTP-date; None if unreadable."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    now = now or datetime.now(timezone.utc)
    return max((when - now).total_seconds(), 0.0)


def backoff_delay(
    attempt: int, base: float = 1.0, cap: float = 60.0, rng: random.Random | None = None
) -> float:
    """Exponential back-off with full jitter: uniform in [base * 2**attempt / 2, base * 2**attempt]."""
    ceiling = min(cap, base * (2**attempt))
    return (rng or random).uniform(ceiling / 2, ceiling)


class HostGate:
    """The politeness state of one task; thread-safe. ``limits`` (harvest.web.adaptive.Limits) make
    the delay adaptive; without them a host keeps ``delay`` and ``concurrency`` whatever it answers."""

    def __init__(
        self,
        concurrency: int = 2,
        delay: float = 0.5,
        failure_limit: int = 5,
        clock: Callable[[], float] = time.monotonic,
        max_delay: float = float("inf"),
        limits: Limits | None = None,
    ):
        self.concurrency = max(1, concurrency)
        self.delay = max(0.0, delay)
        #: the adaptive rules, or None for a fixed delay
        self.limits = limits
        self.failure_limit = max(1, failure_limit)
        #: the longest Crawl-delay honoured; a host asking for more is deferred to a later run
        self.max_delay = max_delay
        self._clock = clock
        self._cond = threading.Condition()
        self._hosts: dict[str, _Host] = {}

    def _host(self, host: str) -> _Host:
        state = self._hosts.get(host)
        if state is None:
            state = self._hosts[host] = _Host(Pace(delay=self.delay))
        return state

    def _concurrency(self, state: _Host) -> int:
        return self.limits.concurrency_of(state.pace.kind) if self.limits else self.concurrency

    def set_delay(self, host: str, seconds: float) -> None:
        """Raise the host's delay (a robots.txt Crawl-delay); never below the configured minimum. A
        delay over ``max_delay`` is not waited for: the host is paused with the reason, so its URLs
        fail at once and a later run retries them, instead of one host holding the task for hours."""
        with self._cond:
            state = self._host(host)
            if seconds > self.max_delay:
                state.paused = state.paused or (
                    f"host {host} deferred to a later run: robots.txt crawl-delay {seconds:g} s "
                    f"exceeds cap {self.max_delay:g} s (HARVEST_MAX_CRAWL_DELAY)"
                )
                self._cond.notify_all()
                return
            state.pace.floor = max(state.pace.floor, seconds)
            state.pace.delay = max(state.pace.delay, self.delay, seconds)
            if state.last_start is not None:
                state.next_start = max(state.next_start, state.last_start + state.delay)

    def delay_of(self, host: str) -> float:
        with self._cond:
            return self._host(host).delay

    def hold(self, host: str, seconds: float) -> None:
        """No request to ``host`` starts for ``seconds`` (Retry-After / back-off applies to every thread)."""
        with self._cond:
            state = self._host(host)
            state.held_until = max(state.held_until, self._clock() + seconds)
            state.next_start = max(state.next_start, state.held_until)
            self._cond.notify_all()

    @contextmanager
    def slot(self, host: str, deadline: float | None = None) -> Iterator[None]:
        """Wait for a free slot of ``host`` and its delay; raises HostPaused for a paused host, and
        SlotTimeout when ``deadline`` (on the gate's clock) passes first or is sure to: a host's next
        start only ever moves later, so a request that cannot start in time fails at once."""
        with self._cond:
            queued = self._clock()
            while True:
                state = self._host(host)
                if state.paused:
                    raise HostPaused(host, state.paused)
                now = self._clock()
                limit = self._concurrency(state)
                if state.active < limit and now >= state.next_start:
                    state.active += 1
                    state.last_start = now
                    state.next_start = now + state.delay
                    break
                if deadline is not None and (now >= deadline or state.next_start > deadline):
                    raise SlotTimeout(host, now - queued, self._late(host, state, now - queued))
                if state.active < limit:
                    check_patience(host, state.next_start - now)
                wait = state.next_start - now if state.active < limit else 1.0
                if deadline is not None:
                    wait = min(wait, deadline - now)
                self._cond.wait(timeout=max(min(wait, 1.0), 0.001))
        try:
            yield
        finally:
            with self._cond:
                self._host(host).active -= 1
                self._cond.notify_all()

    def _late(self, host: str, state: _Host, waited: float) -> str:
        busy = f"{state.active} of {self._concurrency(state)} requests in flight"
        return (
            f"waited {waited:.1f}s for a request slot at {host} ({busy}, {state.delay:g}s between "
            f"requests, next start in {max(state.next_start - self._clock(), 0.0):.1f}s)"
        )

    def succeeded(self, host: str) -> None:
        with self._cond:
            self._host(host).failures = 0

    def failed(self, host: str, reason: str) -> None:
        """Count a failure that says something about the host (no answer, 5xx, 429)."""
        with self._cond:
            state = self._host(host)
            state.failures += 1
            if state.failures >= self.failure_limit and not state.paused:
                state.paused = (
                    f"host {host} paused for the rest of the run after {state.failures} "
                    f"consecutive failures (last: {reason})"
                )
                self._cond.notify_all()

    def observe(self, host: str, answer: Answer) -> None:
        """Let the host's answer move its delay (adaptive gates only); a Retry-After holds every
        thread's next request, whether or not the request that got it is retried."""
        if self.limits is None:
            return
        with self._cond:
            state = self._host(host)
            hold = adapt(state.pace, answer, self.limits)
            if state.last_start is not None:  # the new delay applies from the last start on
                state.next_start = max(state.last_start + state.pace.delay, state.held_until)
            if hold:
                state.held_until = max(state.held_until, self._clock() + hold)
                state.next_start = max(state.next_start, state.held_until)
            self._cond.notify_all()

    def paces(self) -> dict[str, Pace]:
        """Each host's adaptive state so far (copies): what the per-domain statistics report."""
        with self._cond:
            return {host: Pace(**vars(state.pace)) for host, state in self._hosts.items()}

    def paused_hosts(self) -> dict[str, str]:
        with self._cond:
            return {host: state.paused for host, state in self._hosts.items() if state.paused}
