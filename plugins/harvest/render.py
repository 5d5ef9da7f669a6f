"""JavaScript rendering for sites whose profile asks for it (``render: true``): headless Chromium,
driven by Playwright, turns the fetched HTML into the DOM a visitor's browser would show.

The browser never touches the network itself: the page's own HTML is the one the crawler already
fetched, and every request the page's scripts make is fetched through the crawler's HttpClient, so
robots.txt, per-host politeness and the SSRF guard (including the connected-address check) apply to
it as to any other request. Images, fonts, media and stylesheets are not loaded at all: only the DOM
is needed, and images are downloaded later by the download stage.

Playwright's sync API is bound to the thread that started it, so one dedicated thread owns the browser
and every call is handed to it.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from harvest.http import FetchError, HttpClient
from harvest.robots import RobotsCache

log = logging.getLogger(__name__)

SKIPPED_RESOURCES = {"image", "media", "font", "stylesheet", "imageset", "texttrack", "manifest"}
MAX_SCRIPT_BYTES = 5 * 1024 * 1024
RENDER_TIMEOUT_MS = 20_000
SETTLE_TIMEOUT_MS = 3_000


def chromium_path(env: Mapping[str, str] | None = None) -> str | None:
    """``HARVEST_CHROMIUM``, else Debian's chromium binary (the ``/usr/bin`` launcher is a shell script)."""
    env = os.environ if env is None else env
    if env.get("HARVEST_CHROMIUM"):
        return env["HARVEST_CHROMIUM"]
    for candidate in (
        "/usr/lib/chromium/chromium",
        shutil.which("chromium"),
        shutil.which("chromium-browser"),
    ):
        if candidate and Path(candidate).exists():
            return candidate
    return None


class RenderError(Exception):
    pass


class Renderer:
    """One headless browser per crawl task, started on first use."""

    def __init__(self, client: HttpClient, robots: RobotsCache, executable: str | None = None):
        self.client = client
        self.robots = robots
        self.executable = executable or chromium_path()
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="render")
        self._playwright = None
        self._browser = None

    def render(self, url: str, html: bytes, content_type: str = "text/html") -> bytes:
        """The DOM after the page's scripts ran, serialised as HTML."""
        return self._thread.submit(self._render, url, html, content_type).result()

    def close(self) -> None:
        self._thread.submit(self._close).result()
        self._thread.shutdown(wait=True)

    def _start(self) -> None:
        if self._browser is not None:
            return
        if not self.executable:
            raise RenderError("no Chromium found (install Debian's chromium or set HARVEST_CHROMIUM)")
        from playwright.sync_api import sync_playwright

        self._playwright = sync_playwright().start()
        self._browser = self._playwright.chromium.launch(
            executable_path=self.executable, args=["--no-sandbox", "--disable-gpu"]
        )

    def _close(self) -> None:
        if self._browser is not None:
            self._browser.close()
            self._playwright.stop()
            self._browser = self._playwright = None

    def _render(self, url: str, html: bytes, content_type: str) -> bytes:
        self._start()
        context = self._browser.new_context(user_agent=self.client.user_agent, java_script_enabled=True)
        try:
            page = context.new_page()
            page.route("**/*", lambda route: self._route(route, url, html, content_type))
            try:
                page.goto(url, wait_until="load", timeout=RENDER_TIMEOUT_MS)
            except Exception as exc:  # a timeout or a crashed page: the error names the page
                raise RenderError(f"page did not load: {type(exc).__name__}") from exc
            try:
                page.wait_for_load_state("networkidle", timeout=SETTLE_TIMEOUT_MS)
            except Exception:  # scripts still polling: take the DOM as it is now
                pass
            return page.content().encode("utf-8")
        finally:
            context.close()

    def _route(self, route, page_url: str, html: bytes, content_type: str) -> None:
        request = route.request
        if request.url == page_url and request.is_navigation_request():
            route.fulfill(status=200, body=html, content_type=content_type or "text/html")
            return
        if request.resource_type in SKIPPED_RESOURCES or request.method != "GET":
            route.abort()
            return
        reason = self.robots.skip_reason(request.url)
        if reason:
            log.info("render: %s: %s", request.url, reason)
            route.abort()
            return
        try:
            result = self.client.get(request.url, MAX_SCRIPT_BYTES)
        except FetchError as exc:
            log.info("render: %s", exc)
            route.abort()
            return
        headers = {"content-type": result.headers.get("content-type", "application/octet-stream")}
        route.fulfill(status=200, body=result.body, headers=headers)
