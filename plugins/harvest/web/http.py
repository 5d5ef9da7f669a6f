"""The one HTTP client every stage uses: timeouts, size caps, manual redirects, per-host politeness
and an SSRF guard.

Redirects are followed by hand so that every hop is checked against the guard; bodies are streamed
and cut off at a cap so a hostile server cannot exhaust a worker's memory. The guard checks a host's
resolved addresses before connecting *and* the peer address of every new socket, so a name that
resolves to a public address for the check and to a private one for the connection (DNS rebinding)
is still refused.
"""

from __future__ import annotations

import heapq
import ipaddress
import itertools
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import urljoin, urlsplit

import requests
from requests.adapters import HTTPAdapter
from requests.cookies import extract_cookies_to_jar
from requests.structures import CaseInsensitiveDict
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

from harvest.web.plain_get import PlainResponse, prepared_url, send_plain
from harvest.web.politeness import HostGate, HostPaused, SlotTimeout, backoff_delay, parse_retry_after

REDIRECT_CODES = {301, 302, 303, 307, 308}
NOT_MODIFIED = 304
CONDITIONAL_HEADERS = {"if-none-match", "if-modified-since"}
RETRY_STATUSES = {429, 503}


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


@dataclass
class FetchResult:
    url: str
    status: int
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)

    @property
    def content_type(self) -> str:
        return self.headers.get("content-type", "").split(";")[0].strip().lower()


IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
_NAT64 = ipaddress.ip_network("64:ff9b::/96")  # RFC 6052 well-known prefix: IPv4 in the last 32 bits
_IPV4_TRANSLATED = ipaddress.ip_network("::ffff:0:0:0/96")  # SIIT (RFC 2765)
_IPV4_COMPATIBLE = ipaddress.ip_network("::/96")  # deprecated ::a.b.c.d
#: IPv6 networks refused outright: the local-use NAT64 prefix (RFC 8215; where its IPv4 sits depends
#: on the operator's prefix length) and deprecated site-local addresses, which some stacks still route
_REFUSED_V6 = {
    ipaddress.ip_network("64:ff9b:1::/48"): "local-use NAT64 prefix 64:ff9b:1::/48",
    ipaddress.ip_network("fec0::/10"): "deprecated site-local prefix fec0::/10",
}


def _ip(address: str) -> IPAddress:
    return ipaddress.ip_address(address.split("%")[0])


def embedded_ipv4(ip: IPAddress) -> list[tuple[str, ipaddress.IPv4Address]]:
    """The IPv4 addresses an IPv6 address stands for, each with the name of its form: traffic to
    NAT64, 6to4, Teredo, mapped or compatible addresses reaches those IPv4 hosts, so the guard
    judges the IPv4 address, not the IPv6 wrapper."""
    if not isinstance(ip, ipaddress.IPv6Address):
        return []
    if ip.ipv4_mapped is not None:
        return [("IPv4-mapped", ip.ipv4_mapped)]
    if ip.sixtofour is not None:
        return [("6to4", ip.sixtofour)]
    if ip.teredo is not None:
        server, client = ip.teredo  # the client is stored XOR 0xffffffff; ipaddress undoes it
        return [("Teredo client", client), ("Teredo server", server)]
    low32 = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    if ip in _NAT64:
        return [("NAT64", low32)]
    if ip in _IPV4_TRANSLATED:
        return [("IPv4-translated", low32)]
    if ip in _IPV4_COMPATIBLE and int(ip) > 1:  # :: and ::1 are the unspecified and loopback addresses
        return [("IPv4-compatible", low32)]
    return []


def _is_public(address: str) -> bool:
    """Globally reachable, and so is every IPv4 address it embeds."""
    return _non_public_reason(_ip(address), ()) is None


def _non_public_reason(ip: IPAddress, allowed: tuple[str, ...]) -> str | None:
    """None if ``ip`` may be contacted: public, or inside one of the ``allowed`` networks; else why not
    ("" for a plain private, loopback, link-local, reserved... address)."""
    if any(ip in ipaddress.ip_network(net, strict=False) for net in allowed):
        return None
    embedded = embedded_ipv4(ip)
    if embedded:
        for kind, ipv4 in embedded:
            if _non_public_reason(ipv4, allowed) is not None:
                return f"{kind} form of {ipv4}"
        return None
    for network, reason in _REFUSED_V6.items():
        if ip.version == network.version and ip in network:
            return reason
    # is_global excludes private, loopback, link-local, shared (100.64/10), reserved and unspecified
    if ip.is_global and not ip.is_multicast:
        return None
    return ""


@dataclass(frozen=True)
class AddressPolicy:
    """Which peer addresses may be contacted: public ones, plus explicitly allowed networks. An IPv6
    address that embeds an IPv4 address (NAT64, 6to4, Teredo, mapped) is judged by that address."""

    allow_private_networks: bool = False
    allowed_networks: tuple[str, ...] = ()

    def refusal(self, address: str) -> str | None:
        """None if ``address`` may be contacted, else what it is ("non-public address X (...)")."""
        if self.allow_private_networks or _is_public(address):
            return None
        reason = _non_public_reason(_ip(address), self.allowed_networks)
        if reason is None:
            return None
        return f"non-public address {address}" + (f" ({reason})" if reason else "")

    def permits(self, address: str) -> bool:
        return self.refusal(address) is None


class AddressRefused(Exception):
    """Raised inside a connection when the socket's peer is not a permitted address."""


def _refusal(host: str, what: str, connected: bool) -> str:
    verb = "connected to" if connected else "resolves to"
    return f"refused: {host} {verb} {what} (set HARVEST_ALLOW_PRIVATE_NETWORKS=1 to allow)"


def _checked(conn: HTTPConnection, sock: socket.socket, policy: AddressPolicy) -> socket.socket:
    address = str(sock.getpeername()[0])
    refusal = policy.refusal(address)
    if refusal is not None:
        sock.close()
        raise AddressRefused(_refusal(conn.host, refusal, connected=True))
    return sock


class _Watch:
    """The total deadline of one hop: when it passes, the hop's socket is shut down, whether the
    server is dripping its headers or its body (a read timeout alone never fires on a server that
    sends a byte now and then). The socket itself is kept: once a response says ``Connection:
    close`` the connection object lets go of it, and closing the response from this thread would
    wait for the very read it is meant to end."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.fired = False
        self.sock: socket.socket | None = None

    def attach(self, sock: socket.socket | None) -> None:
        """The socket that is about to wait for the response; shut at once if time is up."""
        with self.lock:
            self.sock = sock
            fired = self.fired
        if fired:
            _shutdown(sock)

    def abort(self) -> None:
        with self.lock:
            self.fired = True
            sock = self.sock
        _shutdown(sock)


#: the watch of the hop the current thread is making (sessions, and so connections, are per thread)
_watching = threading.local()


def _watched_getresponse(conn: HTTPConnection, getresponse: Callable, *args, **kwargs):
    watch: _Watch | None = getattr(_watching, "current", None)
    if watch is not None:
        watch.attach(getattr(conn, "sock", None))
    return getresponse(*args, **kwargs)


def _guarded_adapter(policy: AddressPolicy) -> HTTPAdapter:
    """An adapter whose new connections check their peer address before any byte is sent, and
    whose wait for a response ends at the hop's total deadline."""

    class GuardedHTTPConnection(HTTPConnection):
        def _new_conn(self) -> socket.socket:
            return _checked(self, super()._new_conn(), policy)

        def getresponse(self, *args, **kwargs):
            return _watched_getresponse(self, super().getresponse, *args, **kwargs)

    class GuardedHTTPSConnection(HTTPSConnection):
        def _new_conn(self) -> socket.socket:
            return _checked(self, super()._new_conn(), policy)

        def getresponse(self, *args, **kwargs):
            return _watched_getresponse(self, super().getresponse, *args, **kwargs)

    class GuardedHTTPPool(HTTPConnectionPool):
        ConnectionCls = GuardedHTTPConnection

    class GuardedHTTPSPool(HTTPSConnectionPool):
        ConnectionCls = GuardedHTTPSConnection

    class GuardedAdapter(HTTPAdapter):
        def init_poolmanager(self, *args, **kwargs) -> None:
            super().init_poolmanager(*args, **kwargs)
            self.poolmanager.pool_classes_by_scheme = {"http": GuardedHTTPPool, "https": GuardedHTTPSPool}

    return GuardedAdapter()


def _find_refusal(exc: BaseException) -> AddressRefused | None:
    seen: set[int] = set()
    stack: list[BaseException | None] = [exc]
    while stack:
        current = stack.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, AddressRefused):
            return current
        stack.extend([current.__cause__, current.__context__, getattr(current, "reason", None)])
        stack.extend(arg for arg in getattr(current, "args", ()) if isinstance(arg, BaseException))
    return None


#: How long a client trusts its own resolution of a host for the pre-connect check. The connection
#: resolves the name again and its peer address is checked whatever this said (DNS rebinding), so
#: the cache only spares the resolver a second question per request; failures are never cached.
RESOLVE_TTL = 60.0
#: entries a per-client cache (resolutions, environment settings per origin) holds before it starts again
CACHE_ENTRIES = 4096


def _remember(cache: dict, key, value):
    """Put ``value`` in a cache that is emptied when full: a crawl meeting ever more hosts does
    not grow it without bound, and the few hosts being downloaded from are back in it at once."""
    if len(cache) >= CACHE_ENTRIES:
        cache.clear()
    cache[key] = value
    return value


def check_url(
    url: str,
    allow_private_networks: bool,
    allowed_networks: tuple[str, ...] = (),
    resolved: dict[tuple[str, int], tuple[float, tuple[str, ...]]] | None = None,
) -> None:
    """Refuse non-http(s) URLs and, unless allowed, hosts that resolve to non-public addresses.
    ``resolved`` is a client's cache of recent resolutions (see RESOLVE_TTL)."""
    policy = AddressPolicy(allow_private_networks, allowed_networks)
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise FetchError(url, f"unsupported scheme {parts.scheme!r}")
    host = parts.hostname
    if not host:
        raise FetchError(url, "no host in URL")
    if allow_private_networks:
        return
    for address in _addresses(url, host, parts.port or 80, resolved):
        refusal = policy.refusal(address)
        if refusal is not None:
            raise FetchError(url, _refusal(host, refusal, connected=False))


def _addresses(
    url: str, host: str, port: int, cache: dict[tuple[str, int], tuple[float, tuple[str, ...]]] | None
) -> tuple[str, ...]:
    now = time.monotonic()
    if cache is not None:
        hit = cache.get((host, port))
        if hit is not None and now - hit[0] < RESOLVE_TTL:
            return hit[1]
    try:
        infos = socket.getaddrinfo(host, port, proto=socket.IPPROTO_TCP)
    except socket.gaierror as exc:
        raise FetchError(url, f"cannot resolve host {host!r}: {exc.strerror}", transient=True) from exc
    addresses = tuple(str(info[4][0]) for info in infos)
    if cache is not None:
        _remember(cache, (host, port), (now, addresses))
    return addresses


class _Session(requests.Session):
    """A requests.Session that reads the proxy and CA settings from the environment once per origin:
    requests scans the whole of os.environ for them on every request, which costs about as much as
    parsing the response."""

    def __init__(self) -> None:
        super().__init__()
        self._settings: dict[tuple, dict] = {}
        #: connection pools of the plain GETs, per origin (harvest.web.plain_get)
        self._pools: dict[tuple, object] = {}

    def merge_environment_settings(self, url: str, proxies, stream, verify, cert) -> dict:
        if proxies or cert is not None or verify not in (None, True):
            return super().merge_environment_settings(url, proxies, stream, verify, cert)
        parts = urlsplit(url)
        key = (parts.scheme, parts.netloc, stream, verify)
        settings = self._settings.get(key)
        if settings is None:
            settings = _remember(
                self._settings, key, super().merge_environment_settings(url, {}, stream, verify, cert)
            )
        return {**settings, "proxies": dict(settings["proxies"])}

    def get_streamed(
        self, url: str, headers: dict[str, str], timeout: tuple[float, float]
    ) -> requests.Response | PlainResponse:
        """``get(url, headers=headers, timeout=timeout, stream=True, allow_redirects=False)``
        without the layers of Session.request and Session.send that a GET without redirects, hooks
        or a body does not need, and that cost more CPU than the adapter's whole request (copying
        the cookie jar, merging settings, resolving the redirect it will not follow). Same headers,
        cookies, proxies and certificate settings; only ~/.netrc is not read: its credentials are
        never sent to the servers a crawl happens upon. A GET with no proxy and no cookie to send
        skips the adapter's own layers too (harvest.web.plain_get)."""
        merged = CaseInsensitiveDict(self.headers)
        merged.update(headers)
        request = prepared_url(url)
        settings = self.merge_environment_settings(request.url, {}, True, None, None)
        if not settings["proxies"] and settings["cert"] is None and not self.cookies:
            adapter = self.get_adapter(request.url)
            response = send_plain(adapter, self._pools, request, merged, timeout, settings["verify"])
        else:
            request = requests.PreparedRequest()  # the URL prepares as above: the settings stand
            request.prepare(method="GET", url=url, headers=merged, cookies=self.cookies)
            response = self.get_adapter(request.url).send(request, timeout=timeout, **settings)
        if "set-cookie" in response.headers:
            extract_cookies_to_jar(self.cookies, request, response.raw)
        return response


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
        self._contacted: dict[str, threading.Event] = {}
        self._contact_lock = threading.Lock()
        self._local = threading.local()
        self._watchdog = _Watchdog()
        self._resolved: dict[tuple[str, int], tuple[float, tuple[str, ...]]] = {}

    def _session(self) -> requests.Session:
        session = getattr(self._local, "session", None)
        if session is None:
            session = _Session()
            session.headers["User-Agent"] = self.user_agent
            adapter = _guarded_adapter(self.policy)
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
        if self.first_contact is None:
            return
        parts = urlsplit(url)
        origin = f"{parts.scheme}://{parts.netloc}".lower()
        with self._contact_lock:
            done = self._contacted.get(origin)
            first = done is None
            if first:
                done = self._contacted[origin] = threading.Event()
        if not first:
            done.wait()  # other threads wait until robots.txt of the origin has been read
            return
        try:
            self.first_contact(origin)
        finally:
            done.set()

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
        watch = _Watch()
        _watching.current = watch
        alarm = self._watchdog.call_at(deadline, watch.abort)
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
                refused = _find_refusal(exc)
                if refused is not None:
                    raise FetchError(current, str(refused)) from exc
                if watch.fired:
                    raise self._past_deadline(current) from exc
                raise FetchError(current, f"connection failed: {type(exc).__name__}", transient=True) from exc
            try:
                result = self._read(response, current, max_bytes, deadline, conditional)
            except _Redirect as redirect:
                self.gate.succeeded(host)
                return redirect.location
            if watch.fired:  # shut under a body without a length: the cut looked like its end
                raise self._past_deadline(current)
        except FetchError as exc:
            if exc.transient and self._host_to_blame(exc, served + time.monotonic() - started):
                self.gate.failed(host, exc.reason)
            raise
        finally:
            self._watchdog.cancel(alarm)
            _watching.current = None
        self.gate.succeeded(host)
        return result

    def _host_to_blame(self, exc: FetchError, served: float) -> bool:
        """Whether a transient failure counts toward pausing the host. A deadline that passed
        while the request had spent most of it queued for the host says little about the server:
        it counts only when the servers had at least half the deadline."""
        return not isinstance(exc, DeadlineExceeded) or served >= self.total_timeout / 2

    def _past_deadline(self, url: str) -> FetchError:
        return DeadlineExceeded(url, f"exceeded total deadline of {self.total_timeout}s", transient=True)

    def _read(
        self,
        response: requests.Response | PlainResponse,
        current: str,
        max_bytes: int,
        deadline: float,
        conditional: bool = False,
    ) -> FetchResult:
        """Read one response; a watchdog closes it at the deadline, so a dripping server cannot hold us."""
        with response:
            if conditional and response.status_code == NOT_MODIFIED:
                return FetchResult(url=current, status=NOT_MODIFIED, body=b"", headers=_fields(response))
            if response.status_code in REDIRECT_CODES:
                location = response.headers.get("Location")
                if not location:
                    raise FetchError(current, f"HTTP {response.status_code} without Location")
                raise _Redirect(location)
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
                    raise self._past_deadline(current) from exc
                reason = f"body read failed: {type(exc).__name__}"
                raise FetchError(current, reason, transient=True) from exc
            if time.monotonic() >= deadline:
                raise self._past_deadline(current)
            return FetchResult(url=current, status=200, body=b"".join(chunks), headers=_fields(response))


def _fields(response: requests.Response | PlainResponse) -> dict[str, str]:
    """Response headers by lower-case name, repeated fields joined by commas (either header type)."""
    return {name.lower(): response.headers[name] for name in response.headers}


class _Watchdog:
    """Calls each hop's abort at its total deadline unless cancelled first. One thread per client
    serves every hop: a timer thread per request would cost a thread start each, in the hot path of
    a download."""

    #: seconds without anything to watch after which the thread ends (the next hop starts another)
    IDLE = 10.0

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._deadlines: list[tuple[float, int]] = []  # a heap; cancelled tokens are skipped lazily
        self._live: dict[int, Callable[[], None]] = {}
        self._tokens = itertools.count()
        self._thread: threading.Thread | None = None

    def call_at(self, deadline: float, action: Callable[[], None]) -> int:
        """Run ``action`` at ``deadline`` (time.monotonic()); returns the token that cancels it."""
        with self._cond:
            token = next(self._tokens)
            self._live[token] = action
            heapq.heappush(self._deadlines, (deadline, token))
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="http-watchdog", daemon=True)
                self._thread.start()
            elif self._deadlines[0][1] == token:
                self._cond.notify()
            return token

    def cancel(self, token: int) -> None:
        with self._cond:
            self._live.pop(token, None)
            if len(self._deadlines) > 2 * len(self._live) + 64:  # drop what was cancelled
                self._deadlines = [entry for entry in self._deadlines if entry[1] in self._live]
                heapq.heapify(self._deadlines)

    def _run(self) -> None:
        while True:
            with self._cond:
                while True:
                    while self._deadlines and self._deadlines[0][1] not in self._live:
                        heapq.heappop(self._deadlines)
                    if not self._deadlines:
                        if not self._cond.wait(self.IDLE) and not self._live:
                            self._thread = None
                            return
                        continue
                    wait = self._deadlines[0][0] - time.monotonic()
                    if wait <= 0:
                        action = self._live.pop(heapq.heappop(self._deadlines)[1])
                        break
                    self._cond.wait(wait)
            try:
                action()
            except Exception:  # noqa: BLE001 - the hop sees its socket shut either way
                pass


def _shutdown(sock: socket.socket | None) -> None:
    """Shut the socket down: closing alone does not wake a thread blocked in recv()."""
    if sock is not None:
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


class _Redirect(Exception):
    def __init__(self, location: str):
        self.location = location
