"""An HTTP proxy in front of the S3 server that starts refusing uploads on command (an S3 outage)."""

from __future__ import annotations

import http.client
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade"}

OUTAGE_BODY = (
    b'<?xml version="1.0" encoding="UTF-8"?><Error><Code>ServiceUnavailable</Code>'
    b"<Message>Injected outage</Message></Error>"
)


class Outage:
    """Lets ``allowed_puts`` uploads through, then answers 503 to every PUT until healed."""

    def __init__(self) -> None:
        self.allowed_puts: int | None = None
        self.puts_seen = 0
        self.refused = 0
        self.lock = threading.Lock()

    def should_refuse(self) -> bool:
        with self.lock:
            if self.allowed_puts is None:
                return False
            if self.puts_seen < self.allowed_puts:
                self.puts_seen += 1
                return False
            self.refused += 1
            return True

    def heal(self) -> None:
        with self.lock:
            self.allowed_puts = None


def _read_body(handler: BaseHTTPRequestHandler) -> bytes:
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
    return handler.rfile.read(length) if length else b""


@contextmanager
def flaky_s3_proxy(upstream: str) -> Iterator[tuple[str, Outage]]:
    target = urlsplit(upstream)
    outage = Outage()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args) -> None:  # noqa: A002
            pass

        def _forward(self) -> None:
            body = _read_body(self)
            if self.command == "PUT" and outage.should_refuse():
                self.send_response(503)
                self.send_header("Content-Type", "application/xml")
                self.send_header("Content-Length", str(len(OUTAGE_BODY)))
                self.end_headers()
                self.wfile.write(OUTAGE_BODY)
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
            self.send_response(response.status)
            for key, value in response.getheaders():
                if key.lower() not in HOP_BY_HOP and key.lower() != "content-length":
                    self.send_header(key, value)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            if self.command != "HEAD":
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
