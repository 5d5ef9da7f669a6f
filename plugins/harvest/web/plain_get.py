"""A plain GET (no proxy, no cookies to send, no client certificate) through a requests adapter's
own connection pool, skipping the layers of ``HTTPAdapter.send`` that such a request never uses.

On a download of small images those layers (pool lookup by a freshly built context, response
object with its own cookie jar, case-insensitive header copy) cost a large share of the client's
CPU per request (bench/README.md, "Notes moved from the code"). What reaches the server is the
same: the URL as requests prepares it, the same headers, the same pool with its SSRF-guarded
connections and TLS settings, the same urlopen arguments; errors come out as the exceptions requests would raise, so callers cannot tell the paths
apart. Anything beyond a plain GET takes requests' own path (harvest.web.http decides).
"""

from __future__ import annotations

from collections.abc import Iterator

import requests
from requests.adapters import HTTPAdapter
from requests.utils import check_header_validity
from urllib3.exceptions import (
    ClosedPoolError,
    ConnectTimeoutError,
    DecodeError,
    InvalidHeader,
    LocationValueError,
    MaxRetryError,
    NewConnectionError,
    ProtocolError,
    ReadTimeoutError,
    ResponseError,
)
from urllib3.exceptions import HTTPError as _HTTPError
from urllib3.exceptions import ProxyError as _ProxyError
from urllib3.exceptions import SSLError as _SSLError
from urllib3.util import Timeout

#: a thread's session keeps this many origins' pools at hand before it starts again
POOLS = 256


class PlainResponse:
    """What harvest.web.http reads of a requests.Response (status, headers, streamed body, raw
    response for cookies), over urllib3's response; headers are urllib3's case-insensitive dict,
    whose ``[]`` joins repeated fields as requests' copy does."""

    def __init__(self, raw, request: requests.PreparedRequest):
        self.raw = raw
        self.request = request
        self.status_code: int = raw.status
        self.headers = raw.headers
        #: read to its end: closing then hands the connection back to the pool for the next request
        self.consumed = False

    def iter_content(self, chunk_size: int) -> Iterator[bytes]:
        """The decoded body in chunks, read errors as requests.Response.iter_content names them."""
        try:
            yield from self.raw.stream(chunk_size, decode_content=True)
            self.consumed = True
        except ProtocolError as exc:
            raise requests.exceptions.ChunkedEncodingError(exc) from exc
        except DecodeError as exc:
            raise requests.exceptions.ContentDecodingError(exc) from exc
        except ReadTimeoutError as exc:
            raise requests.exceptions.ConnectionError(exc) from exc
        except _SSLError as exc:
            raise requests.exceptions.SSLError(exc) from exc

    def close(self) -> None:
        if not self.consumed:
            self.raw.close()
        self.raw.release_conn()

    def __enter__(self) -> PlainResponse:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


#: what HTTPAdapter.send raises for a MaxRetryError's reason (else ConnectionError) ...
_RETRY_REASONS = (
    (ResponseError, requests.exceptions.RetryError),
    (_ProxyError, requests.exceptions.ProxyError),
    (_SSLError, requests.exceptions.SSLError),
)
#: ... and for urllib3 errors raised as they are (others pass through unchanged)
_RAISED = (
    (_SSLError, requests.exceptions.SSLError),
    (ReadTimeoutError, requests.exceptions.ReadTimeout),
    (InvalidHeader, requests.exceptions.InvalidHeader),
)


def _named(exc: BaseException, table: tuple) -> type[Exception] | None:
    return next((error for kind, error in table if isinstance(exc, kind)), None)


def prepared_url(url: str) -> requests.PreparedRequest:
    """A GET request with only its URL prepared (IDNA, quoting), as requests prepares it."""
    request = requests.PreparedRequest()
    request.method = "GET"
    request.prepare_url(url, None)
    return request


def send_plain(
    adapter: HTTPAdapter,
    pools: dict,
    request: requests.PreparedRequest,
    headers: requests.structures.CaseInsensitiveDict,
    timeout: tuple[float, float],
    verify: bool | str,
) -> PlainResponse:
    """GET ``request`` (from :func:`prepared_url`) with ``headers`` (the session's, already merged
    with the caller's own, all checked here as requests checks them) the way ``adapter.send``
    would, minus its overhead. ``pools`` caches the pool per origin for this adapter (one thread's
    session)."""
    for header in headers.items():
        check_header_validity(header)
    request.headers = headers
    request.body = None
    parts = request.url.split("/", 3)
    key = (parts[0], parts[2], verify)
    pool = pools.get(key)
    if pool is None or pool.pool is None:  # not seen, or closed since (the pool manager let it go)
        if len(pools) >= POOLS:
            pools.clear()
        try:
            pool = adapter.get_connection_with_tls_context(request, verify)
        except LocationValueError as exc:
            raise requests.exceptions.InvalidURL(exc, request=request) from exc
        adapter.cert_verify(pool, request.url, verify, None)
        pools[key] = pool
    path = request.path_url
    if path.startswith("//"):
        path = f"/{path.lstrip('/')}"
    try:
        raw = pool.urlopen(
            method="GET",
            url=path,
            body=None,
            headers=headers,
            redirect=False,
            assert_same_host=False,
            preload_content=False,
            decode_content=False,
            retries=adapter.max_retries,
            timeout=Timeout(connect=timeout[0], read=timeout[1]),
            chunked=False,
        )
    except (ProtocolError, OSError) as err:
        raise requests.exceptions.ConnectionError(err, request=request) from err
    except MaxRetryError as exc:
        reason = exc.reason
        if isinstance(reason, ConnectTimeoutError) and not isinstance(reason, NewConnectionError):
            raise requests.exceptions.ConnectTimeout(exc, request=request) from exc
        error = _named(reason, _RETRY_REASONS) or requests.exceptions.ConnectionError
        raise error(exc, request=request) from exc
    except ClosedPoolError as exc:
        raise requests.exceptions.ConnectionError(exc, request=request) from exc
    except _ProxyError as exc:
        raise requests.exceptions.ProxyError(exc) from exc
    except _HTTPError as exc:  # urllib3's own SSLError is one too
        error = _named(exc, _RAISED)
        if error is None:
            raise
        raise error(exc, request=request) from exc
    return PlainResponse(raw, request)
