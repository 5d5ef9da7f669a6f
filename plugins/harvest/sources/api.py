"""The JSON-over-HTTP client the search connectors share.

Each API has its own rate limit (requests per second, at most one request in flight): the client
waits between requests rather than be throttled. A rate-limit answer (HTTP 429, or an API's own
"slow down" error that the connector recognises) and a server error are retried after the
``Retry-After`` the server gave or a growing back-off, a few times; then the request fails with a
:class:`SearchError` naming the URL (API key masked) and the reason.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import urlencode

import requests

from harvest.sources.interface import SearchError

log = logging.getLogger(__name__)

#: parameters whose value never appears in a log line or an error
SECRET_PARAMS = ("api_key",)


class RetryLater(Exception):
    """An answer that says "not now" (raised by a connector's check of the JSON)."""

    def __init__(self, reason: str, after: float | None = None):
        self.reason = reason
        self.after = after
        super().__init__(reason)


def shown_url(endpoint: str, params: Mapping[str, Any]) -> str:
    safe = {k: ("***" if k in SECRET_PARAMS else v) for k, v in params.items()}
    return f"{endpoint}?{urlencode(safe)}"


def _retry_after(value: str | None) -> float | None:
    try:
        return max(0.0, float(value)) if value else None
    except ValueError:
        return None


class JsonApi:
    """GETs of one API endpoint, spaced by its rate limit, retried on rate-limit and server errors."""

    def __init__(
        self,
        endpoint: str,
        user_agent: str,
        requests_per_second: float,
        attempts: int = 4,
        max_wait: float = 60.0,
        timeout: tuple[float, float] = (5.0, 30.0),
    ):
        self.endpoint = endpoint
        self.interval = 1.0 / requests_per_second if requests_per_second > 0 else 0.0
        self.attempts = attempts
        self.max_wait = max_wait
        self.timeout = timeout
        self.session = requests.Session()
        self.session.headers["User-Agent"] = user_agent
        self.session.trust_env = False  # no proxy or .netrc from the environment reaches an API key
        self._lock = threading.Lock()
        self._next = 0.0
        #: requests sent and seconds waited for the rate limit, for the stage report
        self.sent = 0
        self.waited = 0.0

    def _pace(self) -> None:
        with self._lock:
            now = time.monotonic()
            if self._next > now:
                self.waited += self._next - now
                time.sleep(self._next - now)
            self._next = max(now, self._next) + self.interval

    def get(self, params: Mapping[str, Any], check: Callable[[dict], None] | None = None) -> dict:
        """The JSON answer to ``params``; ``check`` raises RetryLater or SearchError on an API error."""
        shown = shown_url(self.endpoint, params)
        reason = "no attempt"
        for attempt in range(1, self.attempts + 1):
            self._pace()
            wait: float | None = None
            try:
                self.sent += 1
                response = self.session.get(
                    self.endpoint, params=params, timeout=self.timeout, allow_redirects=False
                )
            except requests.RequestException as exc:
                reason = f"no answer ({type(exc).__name__})"
            else:
                if response.status_code == 429 or response.status_code >= 500:
                    reason = f"HTTP {response.status_code}"
                    wait = _retry_after(response.headers.get("Retry-After"))
                elif response.status_code != 200:
                    raise SearchError(shown, f"HTTP {response.status_code}")
                else:
                    try:
                        answer = response.json()
                    except ValueError as exc:
                        raise SearchError(shown, "the answer is not JSON") from exc
                    if not isinstance(answer, dict):
                        raise SearchError(shown, "the answer is not a JSON object")
                    try:
                        if check:
                            check(answer)
                        return answer
                    except RetryLater as later:
                        reason, wait = later.reason, later.after
                    except SearchError as exc:  # the API's own error: named with the request
                        raise SearchError(shown, exc.reason) from exc
            if attempt == self.attempts:
                break
            pause = min(self.max_wait, wait if wait is not None else 2.0 ** (attempt - 1))
            log.warning(
                "%s: %s; attempt %d of %d again in %.1f s", shown, reason, attempt + 1, self.attempts, pause
            )
            self.waited += pause
            time.sleep(pause)
        raise SearchError(shown, f"{reason} after {self.attempts} attempts")
