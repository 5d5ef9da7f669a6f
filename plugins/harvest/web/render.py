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

While a page renders, what its scripts fetched is noted (:class:`ScriptResponse`: the URL, the type,
the SHA-256 of the body, and the body itself when it is JSON; web/script_capture.py), and every element that shows a ``blob:``
image is traced back to the fetched bytes: ``URL.createObjectURL`` is wrapped so each Blob stays
readable, and a Blob whose bytes hash like a response's body is that response's image. The element
then names the response's URL in the serialised DOM, so the image is downloaded like any other (see
docs/script-fed-pages.md; pages/script_fed.py reads the notes).

Playwright's sync API is bound to the thread that started it, so one dedicated thread owns the browser
and every call is handed to it.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor

from harvest.settings.config import chromium_path
from harvest.web.http import FetchError, HttpClient
from harvest.web.robots import RobotsCache
from harvest.web.script_capture import (
    KEEP_BLOBS,
    MAX_BLOB_BYTES,
    MAX_BLOB_ELEMENTS,
    MAX_BLOB_TOTAL,
    MAX_SCRIPT_BYTES,
    NAME_TRACED,
    READ_BLOBS,
    SCRIPT_FETCHES,
    BlobImage,
    Rendered,
    ScriptResponse,
    noted,
    trace_blobs,
)

log = logging.getLogger(__name__)

SKIPPED_RESOURCES = {"image", "media", "font", "stylesheet", "imageset", "texttrack", "manifest"}
RENDER_TIMEOUT_MS = 20_000
#: after the load event, how long the page's scripts may keep requesting: each of their requests waits
#: for the host's politeness gate (0.5 s, or a robots.txt Crawl-delay), so a gallery fetching a dozen
#: photos one after the other takes seconds; the DOM is taken as it is when this runs out
SETTLE_BUDGET_SECONDS = 15.0
#: the page has settled when no request was in flight for this long (a script parsing one answer
#: before it asks for the next may take a while on a loaded machine)
QUIET_SECONDS = 1.0


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


class _Activity:
    """The requests of a rendering page in flight, and when one last started or ended. Playwright's
    own "networkidle" gives up after a fixed time, though each request here may wait its turn at
    the host's politeness gate."""

    def __init__(self) -> None:
        self.in_flight = 0
        self.last = time.monotonic()

    def started(self, _request) -> None:
        self.in_flight += 1
        self.last = time.monotonic()

    def ended(self, _request) -> None:
        self.in_flight = max(0, self.in_flight - 1)
        self.last = time.monotonic()

    def settle(self, page, deadline: float) -> bool:
        """Wait (letting the route handlers run) until no request was in flight for QUIET_SECONDS;
        False when ``deadline`` came first."""
        while time.monotonic() < deadline:
            if self.in_flight == 0 and time.monotonic() - self.last >= QUIET_SECONDS:
                return True
            try:
                page.wait_for_timeout(100)
            except Exception:  # noqa: BLE001 - the page closed or crashed: take what there is
                return False
        return False


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
        return self.render_page(url, html, content_type).html

    def render_page(self, url: str, html: bytes, content_type: str = "text/html") -> Rendered:
        """The DOM after the page's scripts ran, with what they fetched and the blob: images traced."""
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

    def _render(self, url: str, html: bytes, content_type: str) -> Rendered:
        started = time.monotonic()
        self._start()
        context = self._browser.new_context(
            user_agent=self.client.user_agent, java_script_enabled=True, service_workers="block"
        )
        responses: list[ScriptResponse] = []
        try:
            context.add_init_script(KEEP_BLOBS)
            activity = _Activity()
            context.on("request", activity.started)
            context.on("requestfinished", activity.ended)
            context.on("requestfailed", activity.ended)
            # the context, not the page: popups, iframes and workers are routed too
            context.route("**/*", lambda route: self._route(route, url, html, content_type, responses))
            context.route_web_socket("**/*", lambda ws: ws.close(code=1008, reason="not allowed"))
            page = context.new_page()
            context.on("page", lambda popup: self._close_popup(url, popup))
            try:
                page.goto(url, wait_until="load", timeout=RENDER_TIMEOUT_MS)
            except Exception as exc:  # a timeout or a crashed page: the error names the page
                raise RenderError(f"page did not load: {type(exc).__name__}") from exc
            if not activity.settle(page, time.monotonic() + SETTLE_BUDGET_SECONDS):
                log.info("render: %s: scripts still requesting after %.0f s", url, SETTLE_BUDGET_SECONDS)
            blobs = self._trace_blobs(page, responses)
            return Rendered(
                page.content().encode("utf-8"), responses, blobs, round(time.monotonic() - started, 3)
            )
        finally:
            context.close()

    def _trace_blobs(self, page, responses: list[ScriptResponse]) -> list[BlobImage]:
        """The page's blob: images traced to the responses; the traced ones name the response's URL."""
        try:
            found = page.evaluate(READ_BLOBS, [MAX_BLOB_BYTES, MAX_BLOB_ELEMENTS, MAX_BLOB_TOTAL])
        except Exception as exc:  # noqa: BLE001 - the page navigated away or crashed: no tracing
            log.info("render: %s: blob images not read: %s", page.url, exc)
            return []
        blobs = trace_blobs(found, responses)
        named = [[i, blob.kind, blob.response_url] for i, blob in enumerate(blobs) if blob.response_url]
        if named:
            page.evaluate(NAME_TRACED, named)
        return blobs

    def _close_popup(self, page_url: str, popup) -> None:
        """A window the page opened: its requests are routed like the page's, and it is closed at once."""
        self.popups_closed += 1
        log.info("render: %s opened a popup (%s); closed", page_url, popup.url)
        try:
            popup.close()
        except Exception:  # noqa: BLE001 - already closed with its context
            pass

    def _route(
        self,
        route,
        page_url: str,
        html: bytes,
        content_type: str,
        responses: list[ScriptResponse] | None = None,
    ) -> None:
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
        if responses is not None and request.resource_type in SCRIPT_FETCHES:
            kept = sum(len(answer.json) for answer in responses if answer.json is not None)
            responses.append(noted(result.url, headers["content-type"], result.body, kept))
        route.fulfill(status=200, body=result.body, headers=headers)
