"""JavaScript rendering for sites whose profile asks for it (``render: true``): headless Chromium,
driven by Playwright, turns the fetched HTML into the DOM a visitor's browser would show.

The browser never touches the network itself: the page's own HTML is the one the crawler already
fetched, and every request the page's scripts make is fetched through the crawler's HttpClient, so
robots.txt, per-host politeness and the SSRF guard (including the connected-address check) apply to
it as to any other request. Images, fonts, media and stylesheets are not loaded at all: only the DOM
is needed, and images are downloaded later by the download stage.

That holds for everything the page can open, not only its own requests: the whole browser context is
routed (popups, iframes and workers included), popups are closed as they open, service workers are
blocked and WebSockets refused. Whatever could still leave the browser unrouted (a WebRTC TURN
connection, say) is sent to a proxy that does not exist, loopback included, and WebRTC may not use UDP
outside that proxy. Chromium runs in its sandbox unless the process is root (Chromium refuses it there)
or ``HARVEST_CHROMIUM_NO_SANDBOX=1`` says otherwise.

Playwright's sync API is bound to the thread that started it, so one dedicated thread owns the browser
and every call is handed to it.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor

from harvest.settings.config import chromium_path
from harvest.web.http import FetchError, HttpClient
from harvest.web.robots import RobotsCache

log = logging.getLogger(__name__)

SKIPPED_RESOURCES = {"image", "media", "font", "stylesheet", "imageset", "texttrack", "manifest"}
MAX_SCRIPT_BYTES = 5 * 1024 * 1024
RENDER_TIMEOUT_MS = 20_000
SETTLE_TIMEOUT_MS = 3_000


def chromium_sandbox(env: Mapping[str, str] | None = None, euid: int | None = None) -> bool:
    """Whether Chromium runs in its sandbox: yes, unless ``HARVEST_CHROMIUM_NO_SANDBOX=1`` or the process
    is root, where Chromium refuses to start sandboxed at all."""
    env = os.environ if env is None else env
    if (env.get("HARVEST_CHROMIUM_NO_SANDBOX") or "").strip().lower() in {"1", "true", "yes", "on"}:
        return False
    return (os.geteuid() if euid is None else euid) != 0


def reserve_dead_port() -> socket.socket:
    """A loopback TCP port that refuses every connection: bound (so nobody else can listen on it) but
    never listening. The browser's proxy points here, so anything unrouted fails at once."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    return sock


def launch_args(dead_proxy_port: int) -> list[str]:
    """Chromium switches that send everything Playwright's routing does not see to a dead proxy.

    ``<-loopback>`` removes Chromium's implicit bypass of localhost and 127.0.0.0/8, so loopback goes
    to the proxy as well; WebRTC may not send UDP that bypasses the proxy."""
    return [
        "--disable-gpu",
        f"--proxy-server=http://127.0.0.1:{dead_proxy_port}",
        "--proxy-bypass-list=<-loopback>",
        "--webrtc-ip-handling-policy=disable_non_proxied_udp",
        "--force-webrtc-ip-handling-policy=disable_non_proxied_udp",  # the switch's older name
        "--no-pings",
        "--dns-prefetch-disable",
    ]


def _launch_problem(exc: Exception, sandbox: bool) -> str:
    """The first line of a launch error, and what to do when it is the sandbox that failed."""
    text = str(exc)
    problem = text.strip().splitlines()[0] if text.strip() else type(exc).__name__
    if sandbox and "sandbox" in text.lower():
        problem += (
            " (Chromium could not start its sandbox: allow user namespaces for this user, e.g. the "
            "container's seccomp profile, or set HARVEST_CHROMIUM_NO_SANDBOX=1 to run without it)"
        )
    return problem


class RenderError(Exception):
    pass


class Renderer:
    """One headless browser per crawl task, started on first use."""

    def __init__(self, client: HttpClient, robots: RobotsCache, executable: str | None = None):
        self.client = client
        self.robots = robots
        self.executable = executable or chromium_path()
        self.sandbox = chromium_sandbox()
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="render")
        self._playwright = None
        self._browser = None
        self._dead_proxy: socket.socket | None = None
        #: popups the pages tried to open (each closed at once), for the log and the tests
        self.popups_closed = 0

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

        self._dead_proxy = reserve_dead_port()
        self._playwright = sync_playwright().start()
        try:
            self._browser = self._playwright.chromium.launch(
                executable_path=self.executable,
                args=launch_args(self._dead_proxy.getsockname()[1]),
                chromium_sandbox=self.sandbox,
            )
        except Exception as exc:
            self._close()
            raise RenderError(f"Chromium did not start: {_launch_problem(exc, self.sandbox)}") from exc

    def _close(self) -> None:
        if self._browser is not None:
            self._browser.close()
        if self._playwright is not None:
            self._playwright.stop()
        if self._dead_proxy is not None:
            self._dead_proxy.close()
        self._browser = self._playwright = self._dead_proxy = None

    def _render(self, url: str, html: bytes, content_type: str) -> bytes:
        self._start()
        context = self._browser.new_context(
            user_agent=self.client.user_agent, java_script_enabled=True, service_workers="block"
        )
        try:
            # the context, not the page: popups, iframes and workers are routed too
            context.route("**/*", lambda route: self._route(route, url, html, content_type))
            context.route_web_socket("**/*", lambda ws: ws.close(code=1008, reason="not allowed"))
            page = context.new_page()
            context.on("page", lambda popup: self._close_popup(url, popup))
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

    def _close_popup(self, page_url: str, popup) -> None:
        """A window the page opened: its requests are routed like the page's, and it is closed at once."""
        self.popups_closed += 1
        log.info("render: %s opened a popup (%s); closed", page_url, popup.url)
        try:
            popup.close()
        except Exception:  # noqa: BLE001 - already closed with its context
            pass

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
