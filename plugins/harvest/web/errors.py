"""Why a fetch failed, in a form the stages can group and retry by."""

from __future__ import annotations


class FetchError(Exception):
    """A URL could not be fetched; ``reason`` is short and stable enough to group failures by."""

    def __init__(self, url: str, reason: str, status: int | None = None, transient: bool = False):
        self.url = url
        self.reason = reason
        self.status = status
        self.transient = transient
        self.retry_after: float | None = None
        super().__init__(f"{url}: {reason}")


class DeadlineExceeded(FetchError):
    """The request's total deadline passed while the server was being read from."""


class HopRefused(FetchError):
    """A URL of the redirect chain was refused by the caller's check (not a failure of the site)."""
