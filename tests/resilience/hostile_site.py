"""A hostile website on loopback, written on raw sockets so that it can misbehave the way real servers
do: drip its headers a byte a second, never end a body, lie about lengths and types.

Routes are functions ``(out, path) -> None`` that write raw HTTP to the client. Every request is
recorded; for the dripping routes the server also records how long the client listened before it
hung up, so a test can tell that the client gave up (and when) without timing the client itself.
Everything the server does is bounded: drips and endless bodies stop at a byte budget, at the
client's hang-up, or when the site is shut down.
"""

from __future__ import annotations

import socket
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager

#: no route sends more than this, even to a client that never stops reading
MAX_STREAM_BYTES = 256 * 1024 * 1024


class ClientGone(Exception):
    """The client hung up; the route stops."""


class Out:
    """The client's socket, for a route to write to."""

    def __init__(self, sock: socket.socket, stop: threading.Event):
        self.sock = sock
        self.stop = stop

    def send(self, data: bytes) -> None:
        if self.stop.is_set():
            raise ClientGone
        try:
            self.sock.sendall(data)
        except OSError as exc:
            raise ClientGone from exc

    def drip(self, data: bytes, pause: float) -> None:
        """``data`` a byte at a time, ``pause`` seconds apart: each byte comes well within any read
        timeout, so only a deadline on the whole response ends the wait."""
        for byte in data:
            self.send(bytes([byte]))
            if self.stop.wait(pause):
                raise ClientGone


Route = Callable[[Out, str], None]


def head(status: str = "200 OK", content_type: str = "text/html; charset=utf-8", **headers: str) -> bytes:
    lines = [f"HTTP/1.1 {status}", f"Content-Type: {content_type}", "Connection: close"]
    lines += [f"{name.replace('_', '-')}: {value}" for name, value in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def body(data: bytes, content_type: str = "text/html; charset=utf-8", status: str = "200 OK") -> Route:
    def route(out: Out, path: str) -> None:
        out.send(head(status, content_type, Content_Length=str(len(data))) + data)

    return route


def html(markup: str) -> Route:
    return body(f"<!doctype html><html><body>{markup}</body></html>".encode())


def redirect(location: Callable[[str], str] | str, status: str = "302 Found") -> Route:
    def route(out: Out, path: str) -> None:
        target = location(path) if callable(location) else location
        out.send(head(status, Location=target, Content_Length="0"))

    return route


def drip_headers(pause: float = 1.0) -> Route:
    """Slowloris: the status line and headers a byte at a time, never finished in a test's life."""

    def route(out: Out, path: str) -> None:
        out.drip(b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nX-Padding: " + b"p" * 10_000, pause)

    return route


def drip_body(content_type: str, pause: float = 1.0, length: int = 10_000) -> Route:
    """Headers at once, then a body of ``length`` bytes a byte at a time."""

    def route(out: Out, path: str) -> None:
        out.send(head(content_type=content_type, Content_Length=str(length)))
        out.drip(b"x" * length, pause)

    return route


def endless(content_type: str, declared: int | None = None, chunk: bytes = b"\0" * 65536) -> Route:
    """A body that does not end (up to MAX_STREAM_BYTES); ``declared`` is the Content-Length it
    claims, None for none at all."""

    def route(out: Out, path: str) -> None:
        extra = {"Content_Length": str(declared)} if declared is not None else {}
        out.send(head(content_type=content_type, **extra))
        for _ in range(MAX_STREAM_BYTES // len(chunk)):
            out.send(chunk)

    return route


def gzip_bomb(content_type: str, expanded: int = 64 * 1024 * 1024) -> Route:
    """A small gzip body (Content-Encoding: gzip) that inflates to ``expanded`` bytes of zeros."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, 31)  # 31: gzip framing
    block = b"\0" * (1024 * 1024)
    data = b"".join(compressor.compress(block) for _ in range(expanded // len(block))) + compressor.flush()

    def route(out: Out, path: str) -> None:
        out.send(
            head(content_type=content_type, Content_Encoding="gzip", Content_Length=str(len(data))) + data
        )

    return route


class HostileSite:
    """Serves ``routes`` (exact path, then path without query, then the longest matching prefix)."""

    def __init__(self, host: str = "127.0.0.2"):
        self.listener = socket.create_server((host, 0))
        self.listener.settimeout(0.1)
        address, port = self.listener.getsockname()[:2]
        self.base = f"http://{address}:{port}"
        self.routes: dict[str, Route] = {}
        self.prefixes: dict[str, Route] = {}
        self.hits: list[str] = []
        #: path -> seconds between the request and the client's hang-up, for routes cut short
        self.hung_up: dict[str, float] = {}
        self.lock = threading.Lock()
        self.stop = threading.Event()

    def route_for(self, path: str) -> Route | None:
        found = self.routes.get(path) or self.routes.get(path.split("?")[0])
        if found is not None:
            return found
        matches = [prefix for prefix in self.prefixes if path.startswith(prefix)]
        return self.prefixes[max(matches, key=len)] if matches else None

    def serve_forever(self) -> None:
        while not self.stop.is_set():
            try:
                sock, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=self._handle, args=(sock,), daemon=True).start()

    def _handle(self, sock: socket.socket) -> None:
        with sock:
            sock.settimeout(5)
            request = b""
            try:
                while b"\r\n\r\n" not in request and len(request) < 65536:
                    data = sock.recv(4096)
                    if not data:
                        return
                    request += data
            except OSError:
                return
            parts = request.split(b"\r\n", 1)[0].decode("latin-1").split()
            path = parts[1] if len(parts) >= 2 else "/"
            with self.lock:
                self.hits.append(path)
            route = self.route_for(path) or body(b"not found", "text/plain", "404 Not Found")
            started = time.monotonic()
            try:
                route(Out(sock, self.stop), path)
            except ClientGone:
                with self.lock:
                    self.hung_up[path] = time.monotonic() - started

    def paths(self) -> list[str]:
        with self.lock:
            return list(self.hits)


@contextmanager
def serve(host: str = "127.0.0.2") -> Iterator[HostileSite]:
    site = HostileSite(host)
    thread = threading.Thread(target=site.serve_forever, daemon=True)
    thread.start()
    try:
        yield site
    finally:
        site.stop.set()
        thread.join(timeout=5)
        site.listener.close()
