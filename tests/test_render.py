"""JavaScript rendering for a site whose profile asks for it, on loopback sites with the SSRF guard
on: the page's scripts run, their requests go through the crawler's client (robots, guard), and the
images they add are found. Skipped when no Chromium is installed."""

from __future__ import annotations

import pytest
from crawl_helpers import candidates, crawl_config, pages
from loopback_site import Response, html, serve

from harvest.settings.config import chromium_path
from harvest.stages.crawl import run_crawl
from harvest.stages.extract import run_extract

pytestmark = pytest.mark.skipif(chromium_path() is None, reason="no Chromium installed")

SCRIPT = b"""
document.getElementById('static-js').innerHTML = '<img src="/photos/from-script.jpg" alt="script">';
fetch('/api/gallery.json').then(r => r.json()).then(items => {
  for (const item of items) {
    const img = document.createElement('img'); img.src = item.src; img.alt = item.alt;
    document.getElementById('gallery').appendChild(img);
  }
});
fetch('/api/private.json').then(r => r.json()).then(items => {
  document.body.insertAdjacentHTML('beforeend', '<img src="' + items[0] + '">');
}).catch(() => {});
fetch('INTERNAL/secret').catch(() => {});
"""

PAGE = """<div id="static-js"></div><div id="gallery"></div>
<noscript>This gallery needs JavaScript.</noscript><script src="/app.js"></script>"""


@pytest.fixture
def internal():
    with serve("127.0.0.1") as site:
        site.fallback = Response(b'["/photos/internal.jpg"]', content_type="application/json")
        yield site


def _site(server, internal) -> None:
    server.routes.update(
        {
            "/robots.txt": Response(b"User-agent: *\nDisallow: /api/private", content_type="text/plain"),
            "/": html(PAGE),
            "/app.js": Response(
                SCRIPT.replace(b"INTERNAL", internal.base.encode()), content_type="text/javascript"
            ),
            "/api/gallery.json": Response(
                b'[{"src": "/photos/a.jpg", "alt": "A"}, {"src": "/photos/b.jpg", "alt": "B"}]',
                content_type="application/json",
            ),
            "/api/private.json": Response(b'["/photos/private.jpg"]', content_type="application/json"),
        }
    )


def test_a_profile_with_render_runs_the_page_scripts_through_the_guarded_client(
    tmp_path, monkeypatch, internal
):
    monkeypatch.setenv("HARVEST_ALLOW_PRIVATE_NETWORKS", "0")
    profiles = tmp_path / "profiles"
    profiles.mkdir()
    with serve("127.0.0.2") as server:
        _site(server, internal)
        (profiles / "spa.yaml").write_text("hosts: [127.0.0.2]\nrender: true\n")
        cfg = crawl_config(
            f"{server.base}/",
            tmp_path,
            HARVEST_ALLOWED_NETWORKS="127.0.0.2/32",
            HARVEST_SITE_PROFILES_DIR=str(profiles),
        )
        run_crawl(cfg)
        run_extract(cfg)
        requested = server.paths()
    assert pages(cfg, server.base)["/"][0] == "done"
    found = candidates(cfg, server.base)
    assert sorted(found) == ["/photos/a.jpg", "/photos/b.jpg", "/photos/from-script.jpg"]
    assert found["/photos/a.jpg"].alt == "A"
    assert "/api/private.json" not in requested  # robots.txt applies to the scripts' requests
    assert internal.paths() == []  # the SSRF guard applies to them too
    assert requested.count("/") == 1  # the browser reused the page the crawler fetched


def test_without_render_the_page_is_read_as_sent(tmp_path, internal):
    with serve() as server:
        _site(server, internal)
        cfg = crawl_config(f"{server.base}/", tmp_path)
        run_crawl(cfg)
        run_extract(cfg)
        requested = server.paths()
    assert candidates(cfg, server.base) == {}
    assert "/app.js" not in requested
