"""Loopback stand-ins for the Wikimedia Commons API and the Flickr API: real HTTP servers that answer
in each API's documented JSON shape (MediaWiki ``action=query`` formatversion 2 with ``continue``;
Flickr REST ``flickr.photos.search`` with ``nojsoncallback=1``), including their error answers, empty
pages and rate-limit answers, and that serve the images they list.

A test scripts trouble with ``fail_next``: answers given, in order, before the normal ones.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit


@dataclass
class Answer:
    """A scripted answer: a status, headers and a JSON (or raw) body."""

    status: int = 200
    body: object = None
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class File:
    """One image the API knows, with its bytes and its metadata."""

    name: str
    data: bytes
    width: int
    height: int
    mime: str = "image/jpeg"
    license: str = "CC BY-SA 4.0"
    license_url: str = "https://creativecommons.org/licenses/by-sa/4.0"
    artist_html: str = '<a href="//commons.wikimedia.org/wiki/User:Jane">Jane Doe</a>'
    flickr_license: str = "4"
    owner: str = "12345678@N00"
    owner_name: str = "Jane Doe"


class _Api(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    state: dict

    def log_message(self, format: str, *args) -> None:  # noqa: A002 - signature from the base class
        pass

    def _send(
        self, status: int, body: bytes, content_type: str, headers: dict[str, str] | None = None
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def _json(self, answer: Answer) -> None:
        body = answer.body if isinstance(answer.body, bytes) else json.dumps(answer.body).encode()
        self._send(answer.status, body, "application/json; charset=utf-8", answer.headers)

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        parts = urlsplit(self.path)
        if parts.path.startswith("/files/"):
            file = self.state["files"].get(parts.path.rsplit("/", 1)[-1])
            if file is None:
                self._send(404, b"not found", "text/plain")
            else:
                self._send(200, file.data, file.mime)
            return
        if parts.path != self.state["path"]:
            self._send(404, b"not found", "text/plain")
            return
        query = {k: v[0] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
        with self.state["lock"]:
            self.state["requests"].append((time.monotonic(), query))
            scripted = self.state["fail_next"].pop(0) if self.state["fail_next"] else None
        self._json(scripted or self.state["answer"](self.state, query))


def _base(state: dict) -> str:
    return state["base"]


def commons_answer(state: dict, query: dict) -> Answer:
    """``action=query&generator=search&gsrnamespace=6&prop=imageinfo`` as MediaWiki answers it."""
    if query.get("action") != "query" or query.get("gsrnamespace") != "6":
        return Answer(body={"error": {"code": "badvalue", "info": "Unrecognized value for parameter"}})
    matches = state["by_term"].get(query.get("gsrsearch", ""), [])
    offset = int(query.get("gsroffset", "0"))
    limit = min(int(query.get("gsrlimit", "10")), state["page_cap"])
    page = matches[offset : offset + limit]
    if not page:
        return Answer(body={"batchcomplete": True})  # no "query" at all: nothing found
    width = int(query.get("iiurlwidth", "0"))
    pages = []
    for index, name in enumerate(page, offset + 1):
        file = state["files"][name]
        info = {
            "size": len(file.data),
            "width": file.width,
            "height": file.height,
            "url": f"{_base(state)}/files/{name}",
            "descriptionurl": f"{_base(state)}/wiki/File:{name}",
            "descriptionshorturl": f"{_base(state)}/w/index.php?curid={1000 + index}",
            "mime": file.mime,
            "extmetadata": {
                "LicenseShortName": {"value": file.license, "source": "commons-desc-page", "hidden": ""},
                "LicenseUrl": {"value": file.license_url, "source": "commons-desc-page", "hidden": ""},
                "Artist": {"value": file.artist_html, "source": "commons-desc-page"},
                "AttributionRequired": {"value": "true", "source": "commons-desc-page", "hidden": ""},
            },
        }
        if width and file.width > width:
            info.update(thumburl=f"{_base(state)}/files/w{width}-{name}", thumbwidth=width)
        pages.append(
            {"pageid": 1000 + index, "ns": 6, "title": f"File:{name}", "index": index, "imageinfo": [info]}
        )
    body: dict = {"batchcomplete": True, "query": {"pages": pages}}
    if offset + limit < len(matches):
        body["continue"] = {"gsroffset": offset + limit, "continue": "gsroffset||"}
    return Answer(body=body)


def flickr_answer(state: dict, query: dict) -> Answer:
    """``flickr.photos.search`` as Flickr's REST endpoint answers it with ``nojsoncallback=1``."""
    if query.get("api_key") != state["key"]:
        return Answer(
            body={"stat": "fail", "code": 100, "message": "Invalid API Key (Key has invalid format)"}
        )
    if query.get("method") != "flickr.photos.search":
        return Answer(
            body={"stat": "fail", "code": 112, "message": f'Method "{query.get("method")}" not found'}
        )
    matches = state["by_term"].get(query.get("text", ""), [])
    per_page = min(int(query.get("per_page", "100")), state["page_cap"])
    page = int(query.get("page", "1"))
    chosen = matches[(page - 1) * per_page : page * per_page]
    photos = []
    for offset, name in enumerate(chosen):
        file = state["files"][name]
        photo = {
            "id": str(52000000000 + (page - 1) * per_page + offset),
            "owner": file.owner,
            "secret": "a1b2c3d4e5",
            "server": "65535",
            "farm": 66,
            "title": name.rsplit(".", 1)[0].replace("-", " "),
            "ispublic": 1,
            "isfriend": 0,
            "isfamily": 0,
            "license": file.flickr_license,
            "ownername": file.owner_name,
        }
        for size, cap in (("l", 1024), ("c", 800), ("z", 640)):
            if file.width >= cap or size == "z":
                photo[f"url_{size}"] = f"{_base(state)}/files/{name}"
                photo[f"height_{size}"], photo[f"width_{size}"] = file.height, file.width
                break
        photos.append(photo)
    pages = -(-len(matches) // per_page) if matches else 0
    return Answer(
        body={
            "photos": {
                "page": page,
                "pages": pages,
                "perpage": per_page,
                "total": len(matches),
                "photo": photos,
            },
            "stat": "ok",
        }
    )


@contextmanager
def serve_api(
    kind: str, files: list[File], by_term: dict[str, list[str]], key: str = "", page_cap: int = 2
) -> Iterator[dict]:
    """Start the stand-in (``kind`` "commons" or "flickr"); yields its state: ``endpoint``, ``base``,
    ``requests`` [(time, query)], ``fail_next`` [Answer] to script trouble."""
    state: dict = {
        "files": {f.name: f for f in files},
        "by_term": by_term,
        "key": key,
        "page_cap": page_cap,
        "requests": [],
        "fail_next": [],
        "lock": threading.Lock(),
        "path": "/w/api.php" if kind == "commons" else "/services/rest/",
        "answer": commons_answer if kind == "commons" else flickr_answer,
    }
    for file in files:  # the scaled renditions Commons links as thumburl
        state["files"][f"w1024-{file.name}"] = file
    handler = type("Handler", (_Api,), {"state": state})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    state["base"] = f"http://127.0.0.1:{server.server_address[1]}"
    state["endpoint"] = state["base"] + state["path"]
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
