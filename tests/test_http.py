"""HttpClient against a real loopback server, and the SSRF guard (check_url) on its own."""

from __future__ import annotations

import gzip
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests

from harvest.web import guard as harvest_guard
from harvest.web.http import FetchError, FetchResult, HttpClient, check_url
from harvest.web.plain_get import PlainResponse

PAGE = b"<!doctype html><html><body><h1>Hello</h1></body></html>"
BIG = b"x" * 10_000
CHUNK = b"y" * 1_000
SLOW_SECONDS = 0.5
DRIP_BYTES = 8
DRIP_PAUSE = 0.08
REDIRECT_CHAIN = 10
ETAG = '"v1"'


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: LoopbackServer

    def log_message(self, format, *args):  # noqa: A002 - keep the test output quiet
        pass

    def handle_one_request(self):
        try:
            super().handle_one_request()
        except (BrokenPipeError, ConnectionResetError):  # the client gave up first, as intended
            self.close_connection = True

    def send_body(self, body: bytes, status: int = 200, content_type: str = "text/html; charset=utf-8"):
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def redirect(self, location: str | None, status: int = 302):
        self.send_response(status)
        if location is not None:
            self.send_header("Location", location)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def setup(self):
        super().setup()
        self.server.connections += 1

    def do_GET(self):
        self.server.requests.append(self.path)
        path = self.path
        if path == "/page":
            self.send_body(PAGE)
        elif path.startswith("/echo-request"):
            lines = [self.requestline] + sorted(f"{k}: {v}" for k, v in self.headers.items())
            self.send_body("\n".join(lines).encode(), content_type="text/plain")
        elif path == "/repeated-field":
            self.send_response(200)
            for value in ("a", "b"):
                self.send_header("X-Tag", value)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")
        elif path == "/echo-headers":
            text = f"{self.headers['User-Agent']}\n{self.headers['Accept']}"
            self.send_body(text.encode(), content_type="text/plain")
        elif path == "/set-cookie":
            self.send_response(200)
            self.send_header("Set-Cookie", "visit=1; Path=/")
            self.send_header("Content-Length", "0")
            self.end_headers()
        elif path == "/echo-cookie":
            self.send_body(str(self.headers.get("Cookie")).encode(), content_type="text/plain")
        elif path == "/gzip":
            if "gzip" not in self.headers.get("Accept-Encoding", ""):
                self.send_body(b"gzip not offered", status=406)
                return
            body = gzip.compress(PAGE)
            self.send_response(200)
            self.send_header("Content-Encoding", "gzip")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        elif path == "/r1":
            self.redirect("/r2", 302)
        elif path == "/r2":
            self.redirect(f"http://127.0.0.1:{self.server.server_port}/page", 302)
        elif path.startswith("/chain/"):
            step = int(path.rsplit("/", 1)[1])
            if step >= REDIRECT_CHAIN:
                self.send_body(PAGE)
            else:
                self.redirect(f"/chain/{step + 1}", 301 if step % 2 else 307)
        elif path == "/loop-a":
            self.redirect("/loop-b")
        elif path == "/loop-b":
            self.redirect("/loop-a")
        elif path == "/no-location":
            self.redirect(None)
        elif path == "/to-ftp":
            self.redirect("ftp://files.example/a.jpg")
        elif path == "/to-metadata":
            self.redirect("http://169.254.169.254/latest/meta-data/")
        elif path == "/versioned":
            if self.headers.get("If-None-Match") == ETAG:
                self.send_response(304)
                self.send_header("ETag", ETAG)
                self.send_header("Content-Length", "0")
                self.end_headers()
            else:
                self.send_body(PAGE)
        elif path == "/always-304":
            self.send_response(304)
            self.send_header("Content-Length", "0")
            self.end_headers()
        elif path == "/to-versioned":
            self.redirect("/versioned")
        elif path == "/missing":
            self.send_body(b"not here", status=404)
        elif path == "/unavailable":
            self.send_body(b"try later", status=503)
        elif path == "/big":
            self.send_body(BIG, content_type="application/octet-stream")
        elif path == "/big-chunked":
            self.send_chunked([CHUNK] * 10)
        elif path == "/small-chunked":
            self.send_chunked([b"abc", b"def"])
        elif path == "/slow":
            time.sleep(SLOW_SECONDS)
            self.send_body(PAGE)
        elif path == "/drip":
            self.send_response(200)
            self.send_header("Content-Length", str(DRIP_BYTES))
            self.end_headers()
            for _ in range(DRIP_BYTES):
                self.wfile.write(b"z")
                self.wfile.flush()
                time.sleep(DRIP_PAUSE)
        elif path == "/drip-close":  # no length, and the connection closes with the body
            self.send_response(200)
            self.send_header("Connection", "close")
            self.end_headers()
            self.close_connection = True
            for _ in range(DRIP_BYTES * 4):
                self.wfile.write(b"z")
                self.wfile.flush()
                time.sleep(DRIP_PAUSE)
        elif path == "/drip-headers":  # slowloris: the status line and headers a byte at a time
            for byte in b"HTTP/1.1 200 OK\r\nX-Padding: " + b"p" * DRIP_BYTES * 4:
                self.wfile.write(bytes([byte]))
                self.wfile.flush()
                time.sleep(DRIP_PAUSE)
            self.close_connection = True
        else:
            self.send_body(b"no route", status=404)

    def send_chunked(self, chunks: list[bytes]):
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        for chunk in chunks:
            self.wfile.write(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
        self.wfile.write(b"0\r\n\r\n")


class LoopbackServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self):
        super().__init__(("127.0.0.1", 0), Handler)
        self.requests: list[str] = []
        self.connections = 0

    def handle_error(self, request, client_address):  # a client that hung up is not a test failure
        pass


@pytest.fixture(autouse=True)
def no_proxies(monkeypatch):
    """requests honours *_PROXY variables; a proxy must not sit between the client and loopback."""
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(scope="module")
def server() -> Iterator[LoopbackServer]:
    server = LoopbackServer()
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.fixture
def base(server) -> str:
    server.requests.clear()
    return f"http://127.0.0.1:{server.server_port}"


def client(**kwargs) -> HttpClient:
    options = {"user_agent": "test-agent/1.0", "allow_private_networks": True, **kwargs}
    return HttpClient(**options)


def fetch_error(url: str, max_bytes: int = 1_000_000, **kwargs) -> FetchError:
    with pytest.raises(FetchError) as info:
        client(**kwargs).get(url, max_bytes=max_bytes)
    return info.value


def test_get_returns_body_status_and_lower_cased_headers(base):
    result = client().get(f"{base}/page", max_bytes=10_000)
    assert isinstance(result, FetchResult)
    assert result.url == f"{base}/page"
    assert result.status == 200
    assert result.body == PAGE
    assert result.headers["content-length"] == str(len(PAGE))
    assert result.content_type == "text/html"


def test_conditional_get_returns_304_without_body(base, server):
    result = client().get(f"{base}/to-versioned", max_bytes=10_000, headers={"If-None-Match": ETAG})
    assert (result.status, result.body, result.url) == (304, b"", f"{base}/versioned")
    assert result.headers["etag"] == ETAG
    assert server.requests == ["/to-versioned", "/versioned"]


def test_conditional_get_with_stale_validator_returns_the_body(base):
    result = client().get(f"{base}/versioned", max_bytes=10_000, headers={"If-None-Match": '"v0"'})
    assert (result.status, result.body) == (200, PAGE)


def test_304_to_an_unconditional_get_is_an_error(base):
    with pytest.raises(FetchError) as info:
        client().get(f"{base}/always-304", max_bytes=10_000, headers={"X-Trace": "1"})
    assert (info.value.status, info.value.reason) == (304, "HTTP 304")


def test_user_agent_and_accept_headers_are_sent(base):
    result = client().get(f"{base}/echo-headers", max_bytes=10_000, accept="image/*")
    assert result.body.decode().splitlines() == ["test-agent/1.0", "image/*"]


def test_cookies_come_back_and_compressed_bodies_are_decoded_as_a_session_would(base):
    """The client sends its requests below requests.Session.get, and must still behave like it."""
    http = client()
    assert http.get(f"{base}/echo-cookie", max_bytes=10_000).body == b"None"
    http.get(f"{base}/set-cookie", max_bytes=10_000)
    assert http.get(f"{base}/echo-cookie", max_bytes=10_000).body == b"visit=1"
    assert http.get(f"{base}/gzip", max_bytes=10_000).body == PAGE


def test_a_plain_get_sends_what_requests_sends(base):
    """A GET with nothing to add (no proxy, no cookie) skips requests' layers (harvest.web.plain_get):
    the server must see the same request line and fields as from requests itself."""
    url = f"{base}/echo-request/caf\u00e9 menu?q=a b&x=%41"
    plain = client().get(url, max_bytes=10_000).body
    expected = requests.get(url, headers={"User-Agent": "test-agent/1.0"}, allow_redirects=False).content
    assert plain == expected and b"GET /echo-request/caf%C3%A9%20menu?q=a%20b&x=A HTTP/1.1" in plain


def test_plain_gets_reuse_their_connection_and_cookies_take_requests_path(base, server):
    http = client()
    session = http._session()
    before = server.connections
    for _ in range(3):
        assert http.get(f"{base}/page", max_bytes=10_000).body == PAGE
    assert server.connections - before == 1  # kept alive: a read-out body hands its connection back
    with session.get_streamed(f"{base}/page", {}, http.timeout) as response:
        assert isinstance(response, PlainResponse)
    http.get(f"{base}/set-cookie", max_bytes=10_000)
    with session.get_streamed(f"{base}/page", {}, http.timeout) as response:
        assert isinstance(response, requests.Response)  # a cookie to send: requests prepares it


def test_repeated_response_fields_are_joined_as_requests_joins_them(base):
    assert client().get(f"{base}/repeated-field", max_bytes=10_000).headers["x-tag"] == "a, b"


def test_a_header_value_with_a_line_break_is_refused_before_sending(base, server):
    with pytest.raises(FetchError) as info:
        client().get(f"{base}/page", max_bytes=10_000, headers={"If-None-Match": '"v1"\r\nX-Injected: 1'})
    error = info.value
    assert error.reason == "connection failed: InvalidHeader" and server.requests == []


def test_a_user_agent_with_a_line_break_is_refused_before_sending(base, server):
    error = fetch_error(f"{base}/page", user_agent="agent/1.0\r\nX-Injected: 1")
    assert error.reason == "connection failed: InvalidHeader" and server.requests == []


def test_redirect_chain_is_followed_to_the_final_url(base, server):
    result = client().get(f"{base}/r1", max_bytes=10_000)
    assert result.body == PAGE
    assert result.url == f"{base}/page"
    assert server.requests == ["/r1", "/r2", "/page"]


def test_redirect_loop_is_detected(base, server):
    error = fetch_error(f"{base}/loop-a")
    assert error.url == f"{base}/loop-a"
    assert error.reason.startswith("redirect loop")
    assert server.requests == ["/loop-a", "/loop-b"]


def test_exactly_max_redirects_is_still_followed(base):
    result = client(max_redirects=5).get(f"{base}/chain/{REDIRECT_CHAIN - 5}", max_bytes=10_000)
    assert result.body == PAGE
    assert result.url == f"{base}/chain/{REDIRECT_CHAIN}"


def test_more_redirects_than_the_limit_fail(base, server):
    error = fetch_error(f"{base}/chain/{REDIRECT_CHAIN - 6}", max_redirects=5)
    assert error.reason == "more than 5 redirects"
    assert error.transient is False
    assert len(server.requests) == 6  # the 7th hop is never requested


def test_redirect_without_location_fails(base):
    error = fetch_error(f"{base}/no-location")
    assert error.reason == "HTTP 302 without Location"


def test_redirect_to_a_non_http_scheme_is_refused(base):
    error = fetch_error(f"{base}/to-ftp")
    assert error.url == "ftp://files.example/a.jpg"
    assert "unsupported scheme 'ftp'" in error.reason


def test_every_redirect_hop_goes_through_the_guard(base, monkeypatch, server):
    """Pretend the loopback test server is a public site: the hop to the metadata address must still
    be refused, before any connection is attempted."""
    real_is_public = harvest_guard._is_public
    monkeypatch.setattr(
        harvest_guard, "_is_public", lambda address: address == "127.0.0.1" or real_is_public(address)
    )
    error = fetch_error(f"{base}/to-metadata", allow_private_networks=False)
    assert error.url == "http://169.254.169.254/latest/meta-data/"
    assert "non-public address 169.254.169.254" in error.reason
    assert server.requests == ["/to-metadata"]


def test_404_is_a_permanent_failure(base):
    error = fetch_error(f"{base}/missing")
    assert (error.reason, error.status, error.transient) == ("HTTP 404", 404, False)
    assert error.url == f"{base}/missing"
    assert str(error) == f"{base}/missing: HTTP 404"


def test_503_is_a_transient_failure(base):
    error = fetch_error(f"{base}/unavailable")
    assert (error.reason, error.status, error.transient) == ("HTTP 503", 503, True)


def test_declared_body_over_the_cap_is_refused(base):
    error = fetch_error(f"{base}/big", max_bytes=len(BIG) - 1)
    assert error.reason == f"body of {len(BIG)} bytes exceeds cap of {len(BIG) - 1}"
    assert error.transient is False


def test_body_exactly_at_the_cap_is_accepted(base):
    assert client().get(f"{base}/big", max_bytes=len(BIG)).body == BIG


def test_streamed_body_without_content_length_is_cut_off_at_the_cap(base):
    error = fetch_error(f"{base}/big-chunked", max_bytes=5_000)
    assert error.reason == "body exceeds cap of 5000 bytes"


def test_streamed_body_under_the_cap_is_reassembled(base):
    result = client().get(f"{base}/small-chunked", max_bytes=100)
    assert result.body == b"abcdef"
    assert "content-length" not in result.headers


def test_slow_response_times_out_as_a_transient_failure(base):
    started = time.monotonic()
    error = fetch_error(f"{base}/slow", read_timeout=0.1)
    assert error.reason == "timed out"
    assert error.transient is True
    assert time.monotonic() - started < SLOW_SECONDS


def test_total_deadline_is_enforced_while_reading_the_body(base):
    error = fetch_error(f"{base}/small-chunked", total_timeout=0.0)
    assert error.reason == "exceeded total deadline of 0.0s"


def test_total_deadline_cuts_off_a_dripping_server(base):
    started = time.monotonic()
    with pytest.raises(FetchError):
        client(total_timeout=0.1, read_timeout=1.0).get(f"{base}/drip", max_bytes=1_000)
    assert time.monotonic() - started < (DRIP_BYTES - 1) * DRIP_PAUSE / 2


def test_total_deadline_cuts_off_a_server_dripping_its_headers(base):
    """Each byte comes well within the read timeout, so only the total deadline can end the wait."""
    started = time.monotonic()
    error = fetch_error(f"{base}/drip-headers", total_timeout=0.3, read_timeout=1.0)
    assert error.reason == "exceeded total deadline of 0.3s"
    assert error.transient is True
    assert time.monotonic() - started < DRIP_BYTES * 4 * DRIP_PAUSE / 2


def test_total_deadline_cuts_off_a_dripping_body_on_a_closing_connection(base):
    """With ``Connection: close`` the connection object lets go of its socket once the headers are
    in; the deadline still has to reach the socket under the body."""
    started = time.monotonic()
    error = fetch_error(f"{base}/drip-close", total_timeout=0.3, read_timeout=1.0)
    assert error.reason == "exceeded total deadline of 0.3s"
    assert time.monotonic() - started < DRIP_BYTES * 4 * DRIP_PAUSE / 2


def test_time_queued_behind_the_hosts_other_requests_counts_toward_the_deadline(base):
    """One slot per host: the second request waits ~0.6s for the first and would read for ~0.6s
    more; its deadline started when it was asked for, so it fails naming its URL (a queue behind a
    slow or Crawl-delayed host cannot hold a request longer than the deadline)."""
    from harvest.web.politeness import HostGate

    shared = client(total_timeout=1.0, gate=HostGate(concurrency=1, delay=0.0, failure_limit=100))
    first = threading.Thread(target=shared.get, args=(f"{base}/drip", 1_000))
    first.start()
    time.sleep(0.05)
    with pytest.raises(FetchError) as late:
        shared.get(f"{base}/drip", 1_000)
    first.join()
    assert late.value.url == f"{base}/drip" and late.value.reason == "exceeded total deadline of 1.0s"


def test_connection_refused_is_transient():
    error = fetch_error("http://127.0.0.1:1/nothing-listens-here", connect_timeout=1.0)
    assert error.reason.startswith("connection failed")
    assert error.transient is True


def test_private_address_is_refused_unless_allowed(base, server):
    error = fetch_error(f"{base}/page", allow_private_networks=False)
    assert error.url == f"{base}/page"
    assert "HARVEST_ALLOW_PRIVATE_NETWORKS" in error.reason
    assert error.transient is False
    assert server.requests == []


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1/",
        "http://localhost:8080/",
        "http://10.0.0.1/",
        "http://172.16.5.4/",
        "http://192.168.1.1/",
        "http://169.254.169.254/latest/meta-data/",
        "http://[::1]/",
        "http://[::ffff:127.0.0.1]/",
        "http://[fd00::1]/",
        "http://0.0.0.0/",
        "http://2130706433/",  # 127.0.0.1 written as one decimal number
    ],
)
def test_check_url_refuses_non_public_addresses(url):
    with pytest.raises(FetchError) as info:
        check_url(url, allow_private_networks=False)
    assert info.value.url == url
    assert "non-public address" in info.value.reason
    assert "HARVEST_ALLOW_PRIVATE_NETWORKS" in info.value.reason


@pytest.mark.parametrize(
    "url", ["http://127.0.0.1/", "http://10.0.0.1/", "http://[::1]/", "http://localhost/"]
)
def test_check_url_allows_non_public_addresses_when_asked(url):
    check_url(url, allow_private_networks=True)


@pytest.mark.parametrize("url", ["http://8.8.8.8/", "https://1.1.1.1:8443/x", "http://[2606:4700::1111]/"])
def test_check_url_allows_public_addresses(url):
    check_url(url, allow_private_networks=False)


def test_check_url_refuses_shared_address_space():
    with pytest.raises(FetchError):
        check_url("http://100.100.100.200/latest/meta-data/", allow_private_networks=False)


@pytest.mark.parametrize("allowed", [True, False])
@pytest.mark.parametrize(
    ("url", "scheme"),
    [("ftp://example.com/a.jpg", "ftp"), ("file:///etc/passwd", "file"), ("gopher://x/", "gopher")],
)
def test_check_url_refuses_other_schemes_always(url, scheme, allowed):
    with pytest.raises(FetchError) as info:
        check_url(url, allow_private_networks=allowed)
    assert info.value.reason == f"unsupported scheme {scheme!r}"


def test_check_url_refuses_a_url_without_host():
    with pytest.raises(FetchError) as info:
        check_url("http:///path", allow_private_networks=True)
    assert info.value.reason == "no host in URL"


def test_unresolvable_host_is_a_transient_failure(monkeypatch):
    def no_dns(*args, **kwargs):
        raise harvest_guard.socket.gaierror(-2, "Name or service not known")

    monkeypatch.setattr(harvest_guard.socket, "getaddrinfo", no_dns)
    with pytest.raises(FetchError) as info:
        check_url("http://no-such-host.invalid/", allow_private_networks=False)
    assert "cannot resolve host 'no-such-host.invalid'" in info.value.reason
    assert info.value.transient is True
