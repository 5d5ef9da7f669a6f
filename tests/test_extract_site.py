"""The extract stage on a loopback site: junk recorded as skipped with its reason before any
download, site chrome detected across pages, variants and captions stored with each candidate."""

from __future__ import annotations

from crawl_helpers import candidates, crawl_config
from loopback_site import html, serve

from harvest.crawl import run_crawl
from harvest.extract import run_extract

HEAD = '<link rel="icon" href="/favicon.png"><link rel="apple-touch-icon" href="/touch.png">'
CHROME = """<header><img src="/static/logo.png" alt="Site"></header>
<nav><a href="/1.html">1</a> <a href="/2.html">2</a> <a href="/3.html">3</a></nav>"""
FOOTER = '<footer><img src="/static/social.png" alt="share"><img src="/t/pixel.gif"></footer>'


def _page(n: int) -> str:
    return (
        f"{CHROME}<main><figure><img src='/photos/{n}-small.jpg' srcset='/photos/{n}-small.jpg 400w, "
        f"/photos/{n}.jpg 1600w' alt='Photo {n}'><figcaption>Caption {n}</figcaption></figure>"
        f"<img src='data:image/gif;base64,R0lGODlhAQABAAAAACw=' alt='inline'>"
        f"<img src='/icons/sprite.png'><img src='/img/{n}.svg'></main>{FOOTER}"
    )


def test_junk_is_recorded_with_its_reason_and_content_keeps_its_context(tmp_path):
    with serve() as server:
        for n in range(4):
            server.routes["/" if n == 0 else f"/{n}.html"] = html(_page(n), head=HEAD)
        server.routes["/"] = html(_page(0) + '<a href="/only-here.html">once</a>', head=HEAD)
        server.routes["/only-here.html"] = html("<header><img src='/static/once.jpg'></header>")
        cfg = crawl_config(f"{server.base}/", tmp_path)
        run_crawl(cfg)
        report = run_extract(cfg)
        requested = server.paths()
    found = candidates(cfg, server.base)
    reasons = {path: row.error for path, row in found.items() if row.status == "skipped"}
    assert reasons == {
        "/favicon.png": "favicon or touch icon (rel=icon)",
        "/touch.png": "favicon or touch icon (rel=apple-touch-icon)",
        "/static/logo.png": "site chrome: in header/nav/footer on 4 of 5 pages",
        "/static/social.png": "site chrome: in header/nav/footer on 4 of 5 pages",
        "/t/pixel.gif": "tracking pixel or spacer (by file name)",
        "/icons/sprite.png": "CSS sprite sheet",
        **{f"/img/{n}.svg": "SVG images are not harvested" for n in range(4)},
    }
    pending = sorted(path for path, row in found.items() if row.status == "pending")
    # a header image on one page only is not chrome
    assert pending == [f"/photos/{n}.jpg" for n in range(4)] + ["/static/once.jpg"]
    photo = found["/photos/2.jpg"]
    assert photo.caption == "Caption 2" and photo.alt == "Photo 2" and photo.source == "srcset"
    assert photo.variants == [{"url": f"{server.base}/photos/2-small.jpg", "descriptor": "400w"}]
    assert report.extra["data_uri_images_ignored"] == 4
    # nothing was downloaded to decide any of this
    assert not [p for p in requested if p.startswith(("/photos/", "/static/", "/icons/", "/img/", "/t/"))]
