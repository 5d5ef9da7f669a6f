"""The one HTTP client every stage uses: timeouts, size caps, manual redirects, per-host politeness
and an SSRF guard.

Redirects are followed by hand so that every hop is checked against the guard; bodies are streamed
and cut off at a cap so a hostile server cannot exhaust a worker's memory. The guard checks a host's
resolved addresses before connecting *and* the peer address of every new socket, so a name that
resolves to a public address for the check and to a private one for the connection (DNS rebinding)
is still refused.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from urllib.parse import urljoin, urlsplit

import requests

from harvest.web.adaptive import Answer
from harvest.web.deadline import DeadlineTimer, HopDeadline, this_thread
from harvest.web.errors import DeadlineExceeded, FetchError, HopRefused
from harvest.web.first_contact import OncePerOrigin
from harvest.web.guard import AddressPolicy, AddressRefused, check_url, find_refusal
from harvest.web.politeness import HostGate, HostPaused, SlotTimeout, backoff_delay, patience
from harvest.web.response import NOT_MODIFIED, FetchResult, Redirect, past_deadline, read_response
from harvest.web.session import FastSession, guarded_adapter

CONDITIONAL_HEADERS = {"if-none-match", "if-modified-since"}
RETRY_STATUSES = {429, 503}

#: what the stages and tests import from here: the client's errors, results and guard
__all__ = [
    "NOT_MODIFIED",
    "AddressPolicy",
    "DeadlineExceeded",
    "FetchError",
    "FetchResult",
    "HopRefused",
    "HttpClient",
    "check_url",
]


class HttpClient:
    """Thread-safe GETs: each thread keeps its own pooled requests.Session; all share one HostGate."""

    def __init__(
        self,
        user_agent: str,
        connect_timeout: float = 5.0,
        read_timeout: float = 20.0,
        total_timeout: float = 60.0,
        allow_private_networks: bool = False,
        max_redirects: int = 5,
        allowed_networks: tuple[str, ...] = (),
        gate: HostGate | None = None,
        retry_attempts: int = 0,
        max_retry_after: float = 120.0,
        backoff_base: float = 1.0,
    ):
        self.user_agent = user_agent
        self.timeout = (connect_timeout, read_timeout)
        self.total_timeout = total_timeout
        self.allow_private_networks = allow_private_networks
        self.allowed_networks = allowed_networks
        self.policy = AddressPolicy(allow_private_networks, allowed_networks)
        self.max_redirects = max_redirects
        self.gate = gate or HostGate(concurrency=1_000, delay=0.0, failure_limit=1_000_000)
        self.retry_attempts = retry_attempts
        self.max_retry_after = max_retry_after
        self.backoff_base = backoff_base
        #: called once per origin (scheme://host:port) before its first request; the crawler uses it
        #: to read robots.txt first, so a Crawl-delay holds from the first request on, in every stage
        self.first_contact: Callable[[str], None] | None = None
        self.robots = None  # the crawler's harvest.web.robots.RobotsCache for this client, if any
        self.tdmrep = None  # and its harvest.web.optout.TdmRepCache (/.well-known/tdmrep.json)
        self._contacts = OncePerOrigin()
        self._local = threading.local()
        self._deadline_timer = DeadlineTimer()
        self._resolved: dict[tuple[str, int], tuple[float, tuple[str, ...]]] = {}

    def _session(self) -> requests.Session:
        session = getattr(self._local, "session", None)
        if session is None:
            session = FastSession()
            session.headers["User-Agent"] = self.user_agent
            adapter = guarded_adapter(self.policy)
            session.mount("http://", adapter)
            session.mount("https://", adapter)
            self._local.session = session
        return session

    def get(
        self,
        url: str,
        max_bytes: int,
        accept: str = "*/*",
        hop_check: Callable[[str], str | None] | None = None,
        first_contact: bool = True,
        headers: dict[str, str] | None = None,
    ) -> FetchResult:
        """GET with redirects; 429/503 are retried after Retry-After or an exponential, jittered back-off.

        ``hop_check`` sees every URL before it is requested (the first and each redirect target); a
        reason it returns stops the fetch with :class:`HopRefused` (robots.txt of a redirect target).
        ``first_contact=False`` skips the first-contact hook (the hook's own robots.txt request).
        ``headers`` are sent with every hop; when they make the request conditional (If-None-Match,
        If-Modified-Since), a 304 is a result with status 304 and no body, not an error."""
        attempt = 0
        held = 0.0  # the Retry-After wait before this attempt: the attempt's deadline starts after it
        while True:
            try:
                return self._get_once(url, max_bytes, accept, hop_check, first_contact, headers, held)
            except FetchError as exc:
                if exc.status not in RETRY_STATUSES or attempt >= self.retry_attempts:
                    raise
                host = (urlsplit(exc.url).hostname or "").lower()
                wait = exc.retry_after
                if wait is None:
                    wait = backoff_delay(attempt, base=self.backoff_base, cap=self.max_retry_after)
                if wait > self.max_retry_after:
                    raise FetchError(
                        exc.url,
                        f"HTTP {exc.status} asking to retry after {wait:.0f}s "
                        f"(more than {self.max_retry_after:.0f}s)",
                        status=exc.status,
                        transient=True,
                    ) from exc
                self.gate.hold(host, wait)
                held = wait
                attempt += 1

    def _get_once(
        self,
        url: str,
        max_bytes: int,
        accept: str,
        hop_check: Callable[[str], str | None] | None,
        first_contact: bool = True,
        headers: dict[str, str] | None = None,
        held: float = 0.0,
    ) -> FetchResult:
        # one deadline for the whole request, queue included: time spent waiting for the host's
        # politeness slot (other requests in flight, its delay or Crawl-delay, a back-off hold) counts,
        # so no queue holds a request longer than total_timeout. Not counted: reading robots.txt on
        # first contact (a request with its own deadline) and a Retry-After this request waits out.
        deadline = time.monotonic() + held + self.total_timeout
        served = 0.0  # seconds the hops so far spent on the servers
        seen: set[str] = set()
        current = url
        for _ in range(self.max_redirects + 1):
            if current in seen:
                raise FetchError(url, f"redirect loop at {current}")
            seen.add(current)
            check_url(current, self.allow_private_networks, self.allowed_networks, self._resolved)
            refusal = hop_check(current) if hop_check is not None else None
            if refusal:
                raise HopRefused(current, refusal)
            if first_contact:
                contacting = time.monotonic()
                self._first_contact(current)
                deadline += time.monotonic() - contacting
            host = (urlsplit(current).hostname or "").lower()
            try:
                with self.gate.slot(host, deadline):
                    started = time.monotonic()
                    try:
                        result = self._hop(current, host, max_bytes, accept, deadline, headers, served)
                    finally:
                        served += time.monotonic() - started
            except HostPaused as exc:
                raise FetchError(current, exc.reason) from exc
            except SlotTimeout as exc:
                raise FetchError(
                    current,
                    f"timed out: {exc.reason}; the total deadline of {self.total_timeout}s counts time queued",
                    transient=True,
                ) from exc
            if isinstance(result, FetchResult):
                return result
            current = urljoin(current, result)
        raise FetchError(url, f"more than {self.max_redirects} redirects")

    def _first_contact(self, url: str) -> None:
        with patience(None):  # robots.txt is read once per host, by whoever comes first: it waits its turn
            self._contacts.run(url, self.first_contact)

    def _hop(
        self,
        current: str,
        host: str,
        max_bytes: int,
        accept: str,
        deadline: float,
        headers: dict[str, str] | None = None,
        served: float = 0.0,
    ) -> FetchResult | str:
        """One request; returns the result, or the Location to follow. Feeds the host's failure count.
        ``served``: seconds the earlier hops of the request spent on servers."""
        conditional = any(name.lower() in CONDITIONAL_HEADERS for name in headers or {})
        started = time.monotonic()
        hop_deadline = HopDeadline()
        this_thread.hop_deadline = hop_deadline
        alarm = self._deadline_timer.call_at(deadline, hop_deadline.abort)
        try:
            try:
                response = self._session().get_streamed(
                    current, {**(headers or {}), "Accept": accept}, self.timeout
                )
            except AddressRefused as exc:
                raise FetchError(current, str(exc)) from exc
            except requests.Timeout as exc:
                raise FetchError(current, "timed out", transient=True) from exc
            except requests.RequestException as exc:
                refused = find_refusal(exc)
                if refused is not None:
                    raise FetchError(current, str(refused)) from exc
                if hop_deadline.fired:
                    raise self._past_deadline(current) from exc
                raise FetchError(current, f"connection failed: {type(exc).__name__}", transient=True) from exc
            try:
                result = read_response(
                    response, current, max_bytes, deadline, self.total_timeout, conditional
                )
            except Redirect as redirect:
                self.gate.succeeded(host)
                self.gate.observe(host, Answer(302, time.monotonic() - started))
                return redirect.location
            if hop_deadline.fired:  # shut under a body without a length: the cut looked like its end
                raise self._past_deadline(current)
        except FetchError as exc:
            blamed = self._host_to_blame(exc, served + time.monotonic() - started)
            if exc.transient and blamed:
                self.gate.failed(host, exc.reason)
            if blamed and (exc.status is not None or exc.transient):  # an answer, or none at all
                answer = Answer(exc.status, time.monotonic() - started, exc.retry_after)
                self.gate.observe(host, answer)
            raise
        finally:
            self._deadline_timer.cancel(alarm)
            this_thread.hop_deadline = None
        self.gate.succeeded(host)
        self.gate.observe(host, Answer(result.status, time.monotonic() - started, None, _is_image(result)))
        return result

    def _host_to_blame(self, exc: FetchError, served: float) -> bool:
        """Whether a transient failure counts toward pausing the host. A deadline that passed
        while the request had spent most of it queued for the host says little about the server:
        it counts only when the servers had at least half the deadline."""
        return not isinstance(exc, DeadlineExceeded) or served >= self.total_timeout / 2

    def _past_deadline(self, url: str) -> FetchError:
        return past_deadline(url, self.total_timeout)


def _is_image(result: FetchResult) -> bool | None:
    """Whether the answer was an image (True), a page (False) or neither (robots.txt, a 304): what
    tells an image CDN from a site (harvest.web.adaptive)."""
    kind = result.content_type
    if kind.startswith("image/"):
        return True
    if kind in ("text/html", "application/xhtml+xml"):
        return False
    return None
