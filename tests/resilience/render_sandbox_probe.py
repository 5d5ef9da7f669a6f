"""Render one page with harvest.web.render.Renderer and report how Chromium's renderer processes run while
the page is rendered (when it asks for its script): their seccomp mode (2 = the sandbox's filter) and
whether ``--no-sandbox`` was passed. Prints one JSON line. Run by test_hostile_render.py as an
unprivileged user."""

from __future__ import annotations

import json
import os
from pathlib import Path

from harvest.web.http import HttpClient
from harvest.web.render import Renderer
from harvest.web.robots import RobotsCache


def descendants(root: int) -> list[int]:
    """Every process below ``root``, from /proc."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = [], [root]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def renderer_processes() -> list[dict]:
    processes = []
    for pid in descendants(os.getpid()):
        try:  # a sandboxed Chromium rewrites its argv into one space-separated string
            args = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").split()
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            continue
        if b"--type=renderer" in args:
            seccomp = next(line.split()[1] for line in status.splitlines() if line.startswith("Seccomp:"))
            processes.append({"pid": pid, "seccomp": seccomp, "no_sandbox_flag": b"--no-sandbox" in args})
    return processes


class ProbingRenderer(Renderer):
    """The real renderer; the page's script request is answered here, after a look at the processes."""

    processes: list[dict] = []

    def _route(self, route, page_url: str, html: bytes, content_type: str, responses=None) -> None:
        if route.request.url.endswith("/probe.js"):
            self.processes = renderer_processes()
            route.fulfill(status=200, body=b"x.textContent = 'ran';", content_type="text/javascript")
            return
        super()._route(route, page_url, html, content_type, responses)


def main() -> None:
    client = HttpClient("harvest-test", allowed_networks=("127.0.0.2/32",))
    renderer = ProbingRenderer(client, RobotsCache(client, "harvest-test"))
    try:
        dom = renderer.render("http://127.0.0.2:9/", b'<div id=x></div><script src="/probe.js"></script>')
    finally:
        renderer.close()
    print(json.dumps({"dom_ok": b'<div id="x">ran</div>' in dom, "renderers": renderer.processes}))


if __name__ == "__main__":
    main()
