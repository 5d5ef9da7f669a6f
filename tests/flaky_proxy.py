"""An HTTP proxy in front of the S3 server that fails requests on command (an S3 outage) and keeps a
log of every exchange, so a test can count the uploads of each key.

Faults: an S3 error answer (503 ServiceUnavailable, 503 SlowDown, 500 InternalError), a connection
closed without an answer, or one cut off halfway (an upload's body half read, a download's body half
sent). A fault lasts for a number of requests or a time window; requests before it pass untouched.
"""

from __future__ import annotations

import http.client
import re
import socket
import threading
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlsplit

HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade"}

#: fault name -> (HTTP status, S3 error code, message) for the faults that answer
ERROR_ANSWERS = {
    "unavailable": (503, "ServiceUnavailable", "Injected outage"),
    "slowdown": (503, "SlowDown", "Please reduce your request rate."),
    "internal": (500, "InternalError", "We encountered an internal error. Please try again."),
}
#: faults that hang up instead of answering
DROPS = ("drop", "drop_mid_body")
FAULTS = (*ERROR_ANSWERS, *DROPS)
ALL_METHODS = frozenset({"GET", "HEAD", "PUT", "POST", "DELETE"})

#: kept for older callers: the body of the 503 answer
OUTAGE_BODY = (
    b'<?xml version="1.0" encoding="UTF-8"?><Error><Code>ServiceUnavailable</Code>'
    b"<Message>Injected outage</Message></Error>"
)


def error_body(code: str, message: str) -> bytes:
    return (
        f'<?xml version="1.0" encoding="UTF-8"?><Error><Code>{code}</Code>'
        f"<Message>{message}</Message></Error>"
    ).encode()


@dataclass(frozen=True)
class Exchange:
    """One request seen by the proxy: ``outcome`` is the upstream status, or the fault injected."""

    method: str
    key: str
    outcome: int | str
    body: bytes | None = None  # manifests (*.jsonl) only, for checking what they named when written
    credential: str | None = None  # the signature's scope: access key/date/region/service/aws4_request
    token: str | None = None  # X-Amz-Security-Token: temporary credentials sign with one
    action: str | None = None  # a query API call (STS AssumeRole, ...) posted as a form

    @property
    def access_key(self) -> str | None:
        return self.credential.split("/", 1)[0] if self.credential else None

    @property
    def stored(self) -> bool:
        """An upload the S3 server accepted."""
        return self.method == "PUT" and isinstance(self.outcome, int) and 200 <= self.outcome < 300


class Outage:
    """When and how the proxy fails requests; thread-safe. Nothing fails until told to."""

    def __init__(self) -> None:
        #: legacy switch: let this many uploads through, then answer 503 to every upload until healed
        self.allowed_puts: int | None = None
        self.puts_seen = 0
        #: requests failed so far, whatever the fault
        self.refused = 0
        self.log: list[Exchange] = []
        self.lock = threading.Lock()
        self._fault = "unavailable"
        self._methods: frozenset[str] = frozenset({"PUT"})
        self._pass = 0  # matching requests still let through before the fault starts
        self._requests: int | None = None  # matching requests still to fail; None: no limit
        self._until: float | None = None  # the fault ends at this monotonic time
        self._armed = False

    def start(
        self,
        fault: str,
        *,
        requests: int | None = None,
        seconds: float | None = None,
        methods: Iterable[str] = ALL_METHODS,
        after: int = 0,
    ) -> None:
        """Fail the ``methods`` requests with ``fault``: the next ``requests`` of them, or all for
        ``seconds``, or all until :meth:`heal`; the first ``after`` matching requests pass."""
        if fault not in FAULTS:
            raise ValueError(f"unknown fault {fault!r}; choose from {FAULTS}")
        with self.lock:
            self._fault = fault
            self._methods = frozenset(m.upper() for m in methods)
            self._pass = after
            self._requests = requests
            self._until = None if seconds is None else time.monotonic() + seconds
            self._armed = True

    def heal(self) -> None:
        with self.lock:
            self.allowed_puts = None
            self._armed = False

    @property
    def active(self) -> bool:
        with self.lock:
            return self._active()

    def _active(self) -> bool:
        if not self._armed:
            return False
        if self._until is not None and time.monotonic() >= self._until:
            return False
        return self._requests is None or self._requests > 0

    def decide(self, method: str) -> str | None:
        """The fault to inject into this request, or None to forward it."""
        with self.lock:
            if self.allowed_puts is not None and method == "PUT":
                if self.puts_seen < self.allowed_puts:
                    self.puts_seen += 1
                    return None
                self.refused += 1
                return "unavailable"
            if method not in self._methods or not self._active():
                return None
            if self._pass > 0:
                self._pass -= 1
                return None
            if self._requests is not None:
                self._requests -= 1
            self.refused += 1
            return self._fault

    def record(self, exchange: Exchange) -> None:
        with self.lock:
            self.log.append(exchange)

    def stored(self, prefix: str = "") -> Counter:
        """Key -> how many uploads of it the S3 server accepted."""
        with self.lock:
            return Counter(e.key for e in self.log if e.stored and e.key.startswith(prefix))

    def injected(self) -> Counter:
        """Fault -> how many requests it was injected into."""
        with self.lock:
            return Counter(str(e.outcome) for e in self.log if isinstance(e.outcome, str))


def _read_body(handler: BaseHTTPRequestHandler, limit: int | None = None) -> bytes:
    """The request body (chunked or sized); with ``limit``, only that many bytes of a sized one."""
    if handler.headers.get("Transfer-Encoding", "").lower() == "chunked":
        chunks = []
        while True:
            size = int(handler.rfile.readline().strip().split(b";")[0], 16)
            if size == 0:
                while handler.rfile.readline() not in (b"\r\n", b"\n", b""):
                    pass
                return b"".join(chunks)
            chunks.append(handler.rfile.read(size))
            handler.rfile.readline()
    length = int(handler.headers.get("Content-Length") or 0)
    if limit is not None:
        length = min(length, limit)
    return handler.rfile.read(length) if length else b""


def _hang_up(handler: BaseHTTPRequestHandler) -> None:
    handler.close_connection = True
    try:
        handler.connection.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass


@contextmanager
def flaky_s3_proxy(upstream: str) -> Iterator[tuple[str, Outage]]:
    target = urlsplit(upstream)
    outage = Outage()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args) -> None:  # noqa: A002
            pass

        def _key(self) -> str:
            """The object key of a path-style request (/bucket/key?query), without the bucket."""
            return unquote(urlsplit(self.path).path).lstrip("/").partition("/")[2]

        def _forward(self) -> None:
            key = self._key()
            fault = outage.decide(self.command)
            declared = int(self.headers.get("Content-Length") or 0)
            if fault == "drop_mid_body" and declared:  # the upload stops halfway: nothing is stored
                _read_body(self, limit=declared // 2)
                outage.record(Exchange(self.command, key, fault))
                _hang_up(self)
                return
            body = _read_body(self)
            if fault == "drop" or (fault == "drop_mid_body" and self.command != "GET"):
                outage.record(Exchange(self.command, key, fault))
                _hang_up(self)
                return
            if fault in ERROR_ANSWERS:
                status, code, message = ERROR_ANSWERS[fault]
                answer = error_body(code, message)
                self.send_response(status)
                self.send_header("Content-Type", "application/xml")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(answer)
                outage.record(Exchange(self.command, key, fault))
                return
            headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
            headers["Content-Length"] = str(len(body))
            conn = http.client.HTTPConnection(target.hostname, target.port, timeout=30)
            try:
                conn.request(self.command, self.path, body=body, headers=headers)
                response = conn.getresponse()
                payload = response.read()
            finally:
                conn.close()
            kept = body if self.command == "PUT" and key.endswith(".jsonl") else None
            signed = re.search(r"Credential=([^,\s]+)", self.headers.get("Authorization", ""))
            action = re.match(rb"Action=(\w+)", body) if self.command == "POST" else None
            outage.record(
                Exchange(
                    self.command,
                    key,
                    fault or response.status,
                    kept,
                    credential=signed.group(1) if signed else None,
                    token=self.headers.get("X-Amz-Security-Token"),
                    action=action.group(1).decode() if action else None,
                )
            )
            self.send_response(response.status)
            for name, value in response.getheaders():
                if name.lower() not in HOP_BY_HOP and name.lower() != "content-length":
                    self.send_header(name, value)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            if self.command == "HEAD":
                return
            if fault == "drop_mid_body":  # a download cut off halfway through its body
                self.wfile.write(payload[: len(payload) // 2])
                self.wfile.flush()
                _hang_up(self)
                return
            self.wfile.write(payload)

        do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = _forward

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", outage
    finally:
        server.shutdown()
        server.server_close()
