"""Reading one HTTP response: a status that is not 200 becomes a FetchError, a body is streamed and
cut off at its cap, so a hostile server cannot exhaust a worker's memory."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import requests

from harvest.web.errors import DeadlineExceeded, FetchError
from harvest.web.plain_get import PlainResponse
from harvest.web.politeness import parse_retry_after

REDIRECT_CODES = {301, 302, 303, 307, 308}
NOT_MODIFIED = 304


@dataclass
class FetchResult:
    url: str
    status: int
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)

    @property
    def content_type(self) -> str:
        return self.headers.get("content-type", "").split(";")[0].strip().lower()


def past_deadline(url: str, total_timeout: float) -> FetchError:
    return DeadlineExceeded(url, f"exceeded total deadline of {total_timeout}s", transient=True)


def read_response(
    response: requests.Response | PlainResponse,
    current: str,
    max_bytes: int,
    deadline: float,
    total_timeout: float,
    conditional: bool = False,
) -> FetchResult:
    """Read one response: a 304 to a conditional request, the Location of a redirect (raised as
    :class:`Redirect`), or a 200 body of at most ``max_bytes``; any other status is a FetchError.
    The deadline timer shuts the socket at ``deadline``, so a dripping server cannot hold us."""
    with response:
        if conditional and response.status_code == NOT_MODIFIED:
            return FetchResult(url=current, status=NOT_MODIFIED, body=b"", headers=header_fields(response))
        if response.status_code in REDIRECT_CODES:
            location = response.headers.get("Location")
            if not location:
                raise FetchError(current, f"HTTP {response.status_code} without Location")
            raise Redirect(location)
        if response.status_code != 200:
            error = FetchError(
                current,
                f"HTTP {response.status_code}",
                status=response.status_code,
                transient=response.status_code in (408, 425, 429) or response.status_code >= 500,
            )
            error.retry_after = parse_retry_after(response.headers.get("Retry-After"))
            raise error
        declared = response.headers.get("Content-Length")
        if declared and declared.isdigit() and int(declared) > max_bytes:
            raise FetchError(current, f"body of {declared} bytes exceeds cap of {max_bytes}")
        chunks: list[bytes] = []
        size = 0
        try:
            for chunk in response.iter_content(64 * 1024):
                size += len(chunk)
                if size > max_bytes:
                    raise FetchError(current, f"body exceeds cap of {max_bytes} bytes")
                chunks.append(chunk)
        except Exception as exc:
            if isinstance(exc, FetchError):
                raise
            if time.monotonic() >= deadline:
                raise past_deadline(current, total_timeout) from exc
            reason = f"body read failed: {type(exc).__name__}"
            raise FetchError(current, reason, transient=True) from exc
        if time.monotonic() >= deadline:
            raise past_deadline(current, total_timeout)
        return FetchResult(url=current, status=200, body=b"".join(chunks), headers=header_fields(response))


def header_fields(response: requests.Response | PlainResponse) -> dict[str, str]:
    """Response headers by lower-case name, repeated fields joined by commas (either header type)."""
    return {name.lower(): response.headers[name] for name in response.headers}


class Redirect(Exception):
    """A 3xx answer: the hop to follow is ``location``."""

    def __init__(self, location: str):
        self.location = location
