"""Once per origin, before its first request: the crawler reads robots.txt there, so a Crawl-delay
holds from the first request on, in every stage."""

from __future__ import annotations

import threading
from collections.abc import Callable
from urllib.parse import urlsplit


class OncePerOrigin:
    """Runs a hook once per origin (scheme://host:port); threads reaching the same origin meanwhile
    wait until it has run, so none of them gets ahead of the origin's robots.txt."""

    def __init__(self) -> None:
        self._done: dict[str, threading.Event] = {}
        self._lock = threading.Lock()

    def run(self, url: str, hook: Callable[[str], None] | None) -> None:
        if hook is None:
            return
        parts = urlsplit(url)
        origin = f"{parts.scheme}://{parts.netloc}".lower()
        with self._lock:
            done = self._done.get(origin)
            first = done is None
            if first:
                done = self._done[origin] = threading.Event()
        if not first:
            done.wait()  # other threads wait until robots.txt of the origin has been read
            return
        try:
            hook(origin)
        finally:
            done.set()
