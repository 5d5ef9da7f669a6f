"""A loopback HTTP server that answers each path with a fixed status, Content-Type and body.

Bodies may be bytes or a (size, chunk) pair streamed without holding it in memory; ``length=False``
leaves out Content-Length so the client only finds the size by reading.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Response:
    body: bytes | tuple[int, bytes] = b""
    content_type: str = "image/jpeg"
    status: int = 200
    length: bool = True


class _Handler(BaseHTTPRequestHandler):
    routes: dict[str, Response] = {}
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args) -> None:  # noqa: A002 - signature from the base class
        pass

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        response = self.routes.get(self.path)
        if response is None:
            response = Response(b"not found", "text/plain", 404)
        body = response.body
        size = len(body) if isinstance(body, bytes) else body[0]
        try:
            self.send_response(response.status)
            self.send_header("Content-Type", response.content_type)
            if response.length:
                self.send_header("Content-Length", str(size))
            else:
                self.send_header("Connection", "close")
                self.close_connection = True
            self.end_headers()
            if isinstance(body, bytes):
                self.wfile.write(body)
            else:
                chunk = body[1]
                for _ in range(size // len(chunk)):
                    self.wfile.write(chunk)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True


@contextmanager
def serve(routes: dict[str, Response]) -> Iterator[str]:
    handler = type("Handler", (_Handler,), {"routes": routes})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
