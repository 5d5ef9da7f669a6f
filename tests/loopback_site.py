"""A scriptable website on loopback for crawler tests: routes are plain data or small functions, and
the server records every request (path, user agent, start time, how many were in flight at once)."""

from __future__ import annotations

import io
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from PIL import Image


@dataclass
class Response:
    body: bytes = b""
    status: int = 200
    content_type: str = "text/html; charset=utf-8"
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0


Route = Response | Callable[["SiteServer", str], Response]


@dataclass
class Hit:
    path: str
    user_agent: str
    started: float
    in_flight: int


def jpeg(width: int = 200, height: int = 150, color: tuple[int, int, int] = (200, 120, 40)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), color).save(buffer, "JPEG")
    return buffer.getvalue()


def html(body: str, head: str = "") -> Response:
    return Response(f"<!doctype html><html><head>{head}</head><body>{body}</body></html>".encode())


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: SiteServer

    def log_message(self, format, *args):  # noqa: A002 - quiet test output
        pass

    def do_GET(self):
        site = self.server
        with site.lock:
            site.in_flight += 1
            site.hits.append(
                Hit(self.path, self.headers.get("User-Agent", ""), time.monotonic(), site.in_flight)
            )
        try:
            route = site.routes.get(self.path)
            if route is None:
                route = site.routes.get(self.path.split("?")[0])
            if route is None and site.fallback is not None:
                route = site.fallback
            if route is None:
                response = Response(b"not found", status=404, content_type="text/plain")
            elif callable(route):
                response = route(site, self.path)
            else:
                response = route
            if response.delay:
                time.sleep(response.delay)
            self.send_response(response.status)
            self.send_header("Content-Type", response.content_type)
            self.send_header("Content-Length", str(len(response.body)))
            for name, value in response.headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(response.body)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
        finally:
            with site.lock:
                site.in_flight -= 1


class SiteServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, host: str = "127.0.0.1"):
        super().__init__((host, 0), _Handler)
        self.routes: dict[str, Route] = {}
        self.fallback: Route | None = None
        self.hits: list[Hit] = []
        self.in_flight = 0
        self.lock = threading.Lock()
        self.counters: dict[str, int] = {}

    @property
    def base(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}"

    def paths(self) -> list[str]:
        with self.lock:
            return [hit.path for hit in self.hits]

    def handle_error(self, request, client_address):  # a client that hung up is not a test failure
        pass


@contextmanager
def serve(host: str = "127.0.0.1") -> Iterator[SiteServer]:
    server = SiteServer(host)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
