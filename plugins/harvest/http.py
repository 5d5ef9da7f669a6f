"""The one HTTP client every stage uses: timeouts, size caps, manual redirects and an SSRF guard.

Redirects are followed by hand so that every hop is checked against the guard; bodies are streamed
and cut off at a cap so a hostile server cannot exhaust a worker's memory.
"""

from __future__ import annotations

import ipaddress
import socket
import threading
import time
from dataclasses import dataclass, field
from urllib.parse import urljoin, urlsplit

import requests

REDIRECT_CODES = {301, 302, 303, 307, 308}


class FetchError(Exception):
    """A URL could not be fetched; ``reason`` is short and stable enough to group failures by."""

    def __init__(self, url: str, reason: str, status: int | None = None, transient: bool = False):
        self.url = url
        self.reason = reason
        self.status = status
        self.transient = transient
        super().__init__(f"{url}: {reason}")


@dataclass
class FetchResult:
    url: str
    status: int
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)

    @property
    def content_type(self) -> str:
        return self.headers.get("content-type", "").split(";")[0].strip().lower()


def _is_public(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%")[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
        ip = ip.ipv4_mapped
    # is_global excludes private, loopback, link-local, shared (100.64/10), reserved and unspecified
    return ip.is_global and not ip.is_multicast


def check_url(url: str, allow_private_networks: bool) -> None:
    """Refuse non-http(s) URLs and, unless allowed, hosts that resolve to non-public addresses."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise FetchError(url, f"unsupported scheme {parts.scheme!r}")
    host = parts.hostname
    if not host:
        raise FetchError(url, "no host in URL")
    if allow_private_networks:
        return
    try:
        infos = socket.getaddrinfo(host, parts.port or 80, proto=socket.IPPROTO_TCP)
    except socket.gaierror as exc:
        raise FetchError(url, f"cannot resolve host {host!r}: {exc.strerror}", transient=True) from exc
    for info in infos:
        address = str(info[4][0])
        if not _is_public(address):
            raise FetchError(
                url,
                f"refused: {host} resolves to non-public address {address} "
                "(set HARVEST_ALLOW_PRIVATE_NETWORKS=1 to allow)",
            )


class HttpClient:
    """Thread-safe GETs: each thread keeps its own pooled requests.Session."""

    def __init__(
        self,
        user_agent: str,
        connect_timeout: float = 5.0,
        read_timeout: float = 20.0,
        total_timeout: float = 60.0,
        allow_private_networks: bool = False,
        max_redirects: int = 5,
    ):
        self.user_agent = user_agent
        self.timeout = (connect_timeout, read_timeout)
        self.total_timeout = total_timeout
        self.allow_private_networks = allow_private_networks
        self.max_redirects = max_redirects
        self._local = threading.local()

    def _session(self) -> requests.Session:
        session = getattr(self._local, "session", None)
        if session is None:
            session = requests.Session()
            session.headers["User-Agent"] = self.user_agent
            self._local.session = session
        return session

    def get(self, url: str, max_bytes: int, accept: str = "*/*") -> FetchResult:
        deadline = time.monotonic() + self.total_timeout
        seen: set[str] = set()
        current = url
        for _ in range(self.max_redirects + 1):
            if current in seen:
                raise FetchError(url, f"redirect loop at {current}")
            seen.add(current)
            check_url(current, self.allow_private_networks)
            try:
                response = self._session().get(
                    current,
                    timeout=self.timeout,
                    allow_redirects=False,
                    stream=True,
                    headers={"Accept": accept},
                )
            except requests.Timeout as exc:
                raise FetchError(current, "timed out", transient=True) from exc
            except requests.RequestException as exc:
                raise FetchError(current, f"connection failed: {type(exc).__name__}", transient=True) from exc
            watchdog = threading.Timer(max(deadline - time.monotonic(), 0.0), _abort, args=(response,))
            watchdog.daemon = True
            watchdog.start()
            try:
                return self._read(response, current, max_bytes, deadline)
            except _Redirect as redirect:
                current = urljoin(current, redirect.location)
            finally:
                watchdog.cancel()
        raise FetchError(url, f"more than {self.max_redirects} redirects")

    def _read(
        self, response: requests.Response, current: str, max_bytes: int, deadline: float
    ) -> FetchResult:
        """Read one response; a watchdog closes it at the deadline, so a dripping server cannot hold us."""
        with response:
            if response.status_code in REDIRECT_CODES:
                location = response.headers.get("Location")
                if not location:
                    raise FetchError(current, f"HTTP {response.status_code} without Location")
                raise _Redirect(location)
            if response.status_code != 200:
                raise FetchError(
                    current,
                    f"HTTP {response.status_code}",
                    status=response.status_code,
                    transient=response.status_code in (408, 425, 429) or response.status_code >= 500,
                )
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
                    raise FetchError(
                        current, f"exceeded total deadline of {self.total_timeout}s", transient=True
                    ) from exc
                reason = f"body read failed: {type(exc).__name__}"
                raise FetchError(current, reason, transient=True) from exc
            if time.monotonic() >= deadline:
                raise FetchError(current, f"exceeded total deadline of {self.total_timeout}s", transient=True)
            headers = {k.lower(): v for k, v in response.headers.items()}
            return FetchResult(url=current, status=200, body=b"".join(chunks), headers=headers)


def _abort(response: requests.Response) -> None:
    """Shut the socket down: closing alone does not wake a thread blocked in recv()."""
    sock = getattr(getattr(response.raw, "connection", None), "sock", None)
    if sock is not None:
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
    response.close()


class _Redirect(Exception):
    def __init__(self, location: str):
        self.location = location
