"""A rendered page whose scripts try every way out of the browser to a private address: a popup
(``window.open``), ``fetch``, an ``<img>``, an iframe, a WebSocket, an EventSource, a dedicated worker,
a service worker and a WebRTC TURN server. The page itself is served on 127.0.0.2 (allow-listed, so the
crawler fetches it through its guarded client); the target is a second loopback server on 127.0.0.1
that counts every TCP connection and UDP datagram it receives. With the SSRF guard on, it must see none.

Skipped when no Chromium is installed.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import socketserver
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from crawl_helpers import crawl_config, pages
from loopback_site import Response, html, serve

from harvest.settings.config import chromium_path
from harvest.stages.crawl import run_crawl
from harvest.web.render import Renderer, chromium_sandbox, launch_args

pytestmark = pytest.mark.skipif(chromium_path() is None, reason="no Chromium installed")

PROBE = Path(__file__).with_name("render_sandbox_probe.py")


class _Counted(socketserver.StreamRequestHandler):
    """Records the request line of every connection and answers a small page."""

    def handle(self) -> None:
        self.connection.settimeout(2)
        try:
            line = self.rfile.readline(4096).decode("latin-1").strip()
        except OSError:
            line = ""
        self.server.record(line or "<no request line>")
        body = b"<html><body>secret</body></html>"
        try:
            self.wfile.write(
                b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nAccess-Control-Allow-Origin: *\r\n"
                b"Content-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(body), body)
            )
        except OSError:
            pass


class CountingServer(socketserver.ThreadingTCPServer):
    """A private-address target: every connection (HTTP, WebSocket, TURN over TCP) is one hit; a UDP
    socket on the same address counts datagrams (STUN/TURN over UDP)."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Counted)
        self.hits: list[str] = []
        self.lock = threading.Lock()
        self.udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.udp.bind(("127.0.0.1", 0))
        self.udp.settimeout(0.1)
        self.datagrams = 0
        self._stop = threading.Event()

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    @property
    def udp_port(self) -> int:
        return self.udp.getsockname()[1]

    def record(self, line: str) -> None:
        with self.lock:
            self.hits.append(line)

    def count_udp(self) -> None:
        while not self._stop.is_set():
            try:
                self.udp.recvfrom(2048)
            except OSError:
                continue
            with self.lock:
                self.datagrams += 1


@pytest.fixture
def target() -> Iterator[CountingServer]:
    server = CountingServer()
    threads = [
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True),
        threading.Thread(target=server.count_udp, daemon=True),
    ]
    for thread in threads:
        thread.start()
    try:
        yield server
    finally:
        server._stop.set()
        server.shutdown()
        server.server_close()
        server.udp.close()
        for thread in threads:
            thread.join(timeout=5)


def _escape_script(secret: str, udp_port: int) -> bytes:
    """Every way a page's script can reach an address, each aimed at the private target."""
    host_port = secret.removeprefix("http://")
    return f"""
const secret = {secret!r};
window.open(secret + '/popup');
window.open('about:blank').location = secret + '/popup-navigated';
fetch(secret + '/fetch').catch(() => {{}});
fetch(secret + '/fetch-no-cors', {{mode: 'no-cors'}}).catch(() => {{}});
const img = new Image(); img.src = secret + '/img.jpg'; document.body.appendChild(img);
const frame = document.createElement('iframe'); frame.src = secret + '/iframe';
document.body.appendChild(frame);
try {{ new WebSocket('ws://{host_port}/websocket'); }} catch (e) {{}}
try {{ new EventSource(secret + '/events'); }} catch (e) {{}}
try {{ navigator.sendBeacon(secret + '/beacon', 'x'); }} catch (e) {{}}
const workerCode = "fetch('" + secret + "/worker').catch(() => {{}});";
try {{ new Worker(URL.createObjectURL(new Blob([workerCode], {{type: 'text/javascript'}}))); }}
catch (e) {{}}
if (navigator.serviceWorker) navigator.serviceWorker.register('/sw.js').catch(() => {{}});
try {{
  const pc = new RTCPeerConnection({{iceServers: [
    {{urls: 'stun:127.0.0.1:{udp_port}'}},
    {{urls: 'turn:127.0.0.1:{udp_port}?transport=udp', username: 'u', credential: 'p'}},
    {{urls: 'turn:{host_port}?transport=tcp', username: 'u', credential: 'p'}},
  ]}});
  pc.createDataChannel('x');
  pc.createOffer().then(offer => pc.setLocalDescription(offer));
}} catch (e) {{}}
document.getElementById('done').textContent = 'ran';
""".encode()


def _hostile_site(server, target: CountingServer) -> None:
    service_worker = f"fetch('{target.base}/service-worker').catch(() => {{}});"
    server.routes.update(
        {
            "/robots.txt": Response(b"User-agent: *\nAllow: /", content_type="text/plain"),
            "/": html('<div id="done"></div><script src="/app.js"></script>'),
            "/app.js": Response(_escape_script(target.base, target.udp_port), content_type="text/javascript"),
            "/sw.js": Response(service_worker.encode(), content_type="text/javascript"),
        }
    )


def test_no_request_of_a_rendered_page_reaches_a_private_address(tmp_path, monkeypatch, target):
    monkeypatch.setenv("HARVEST_ALLOW_PRIVATE_NETWORKS", "0")
    profiles = tmp_path / "profiles"
    profiles.mkdir()
    (profiles / "spa.yaml").write_text("hosts: [127.0.0.2]\nrender: true\n")
    with serve("127.0.0.2") as server:
        _hostile_site(server, target)
        cfg = crawl_config(
            f"{server.base}/",
            tmp_path,
            HARVEST_ALLOWED_NETWORKS="127.0.0.2/32",
            HARVEST_SITE_PROFILES_DIR=str(profiles),
        )
        run_crawl(cfg)
        time.sleep(1.0)  # anything the browser started late has arrived by now
        requested = server.paths()
    assert pages(cfg, server.base)["/"][0] == "done"
    assert "/app.js" in requested  # the scripts were fetched, so they ran
    assert target.hits == [], f"the rendered page reached the private address: {target.hits}"
    assert target.datagrams == 0, f"the rendered page sent {target.datagrams} UDP datagrams"


def test_the_page_scripts_ran_and_popups_were_closed(target):
    """The same page rendered directly: the scripts ran (the browser still works behind its dead proxy)
    and both windows the page opened were closed."""
    from harvest.web.http import HttpClient
    from harvest.web.robots import RobotsCache

    client = HttpClient("harvest-test", allowed_networks=("127.0.0.2/32",))
    renderer = Renderer(client, RobotsCache(client, "harvest-test"))
    with serve("127.0.0.2") as server:
        _hostile_site(server, target)
        try:
            dom = renderer.render(f"{server.base}/", server.routes["/"].body)
        finally:
            renderer.close()
    assert b'<div id="done">ran</div>' in dom
    assert renderer.popups_closed == 2
    assert target.hits == [] and target.datagrams == 0


def test_loopback_goes_to_the_proxy_too(target):
    """Chromium bypasses the proxy for loopback unless told otherwise: with the renderer's switches a
    WebSocket to 127.0.0.1 (which Playwright's routing does not see) reaches the proxy, here a counting
    server standing in for the dead one, and never its target."""
    from playwright.sync_api import sync_playwright

    with CountingProxy() as proxy, sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=chromium_path(), args=launch_args(proxy.port), chromium_sandbox=False
        )
        try:
            page = browser.new_page()
            page.set_content("<p>x</p>")
            page.evaluate(
                "url => new Promise(done => { const ws = new WebSocket(url);"
                " ws.onerror = ws.onclose = () => done(); setTimeout(done, 3000); })",
                target.base.replace("http://", "ws://") + "/websocket",
            )
        finally:
            browser.close()
    assert target.hits == []
    assert any(line.startswith("CONNECT 127.0.0.1:") for line in proxy.hits), proxy.hits


class CountingProxy(CountingServer):
    def __enter__(self) -> CountingProxy:
        self._serve_thread = threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.05})
        self._serve_thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.shutdown()
        self.server_close()
        self.udp.close()
        self._serve_thread.join(timeout=5)

    @property
    def port(self) -> int:
        return self.server_address[1]


def test_the_sandbox_is_the_default_decision():
    """The choice is explicit: off only for root (Chromium refuses its sandbox there) or when
    HARVEST_CHROMIUM_NO_SANDBOX=1 asks for it."""
    assert chromium_sandbox({}, euid=1000) is True
    assert chromium_sandbox({"HARVEST_CHROMIUM_NO_SANDBOX": "1"}, euid=1000) is False
    assert chromium_sandbox({"HARVEST_CHROMIUM_NO_SANDBOX": "0"}, euid=1000) is True
    assert chromium_sandbox({}, euid=0) is False


@pytest.fixture
def nobody_home() -> Iterator[Path]:
    """A home directory for user nobody (pytest's tmp_path is private to root)."""
    home = Path(tempfile.mkdtemp(prefix="harvest-render-"))
    os.chown(home, 65534, 65534)
    try:
        yield home
    finally:
        shutil.rmtree(home, ignore_errors=True)


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("setpriv"), reason="needs root to switch user")
@pytest.mark.parametrize("no_sandbox", ["", "1"])
def test_a_non_root_renderer_runs_chromium_sandboxed(nobody_home, no_sandbox):
    """Rendering as an unprivileged user (nobody): Chromium's renderer processes run under its seccomp
    sandbox, and without it only when HARVEST_CHROMIUM_NO_SANDBOX=1 says so."""
    home = nobody_home
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(home),
        "TMPDIR": str(home),
        "PYTHONPATH": os.environ.get("PYTHONPATH", ""),
        "HARVEST_CHROMIUM_NO_SANDBOX": no_sandbox,
    }
    result = subprocess.run(
        ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", sys.executable, str(PROBE)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=home,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    info = json.loads(result.stdout.strip().splitlines()[-1])
    assert info["dom_ok"] and info["renderers"], info
    sandboxed = [r["seccomp"] == "2" and not r["no_sandbox_flag"] for r in info["renderers"]]
    assert all(sandboxed) if not no_sandbox else not any(sandboxed), info
