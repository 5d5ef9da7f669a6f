"""The extract stage on a loopback site: junk recorded as skipped with its reason before any
download, site chrome detected across pages, variants and captions stored with each candidate."""

from __future__ import annotations

from crawl_helpers import candidates, crawl_config
from loopback_site import Response, html, serve

from harvest.stages.crawl import run_crawl
from harvest.stages.extract import run_extract

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


EVERY_PATTERN = """<!doctype html><html><head>
<base href="/gallery/">
<meta property="og:image" content="og.jpg"><meta name="twitter:image" content="/tw.jpg">
<link rel="icon" href="/favicon.ico">
<script type="application/ld+json">{"@type": "Article", "image": {"@type": "ImageObject", "url": "ld.jpg"}}</script>
</head><body><main>
<img src="plain.jpg" alt="Plain" title="T">
<img src="s-300.jpg" srcset="s-300.jpg 300w, s-900.jpg 900w" sizes="(max-width: 600px) 100vw, 600px" alt="Srcset">
<picture><source type="image/avif" srcset="p.avif"><source type="image/webp" srcset="p.webp 1x, p2.webp 2x">
  <img src="p.jpg" alt="Picture"></picture>
<img src="/static/blank.gif" data-src="lazy.jpg" alt="Lazy">
<img src="data:image/gif;base64,R0lGOD" data-srcset="ls-1.jpg 1x, ls-2.jpg 2x" loading="lazy" alt="Lazy srcset">
<img class="lazy" data-original="orig.jpg" alt="Original"><img data-lazy-src="lazysrc.jpg" alt="Lazy src">
<div style="background-image: url('bg.jpg')"></div>
<a href="full.jpg"><img src="thumb.jpg" alt="Thumb"></a>
<p><span>Before the script-only image.</span><img class="js" src="/static/spacer.gif">
<noscript><img src="nojs.jpg" alt="No JS"></noscript></p>
<figure><img src="fig.jpg" alt="Fig"><figcaption>The caption</figcaption></figure>
<img src="tiny.jpg" width="20" height="20"><img src="logo.svg"><img src="icons-sprite.png">
<img src="data:image/png;base64,iVBOR">
</main></body></html>"""


def test_every_extraction_pattern_on_a_served_page(tmp_path):
    with serve() as server:
        server.routes["/gallery/page.html"] = Response(EVERY_PATTERN.encode())
        cfg = crawl_config(f"{server.base}/gallery/page.html", tmp_path)
        run_crawl(cfg)
        report = run_extract(cfg)
    found = candidates(cfg, server.base)
    taken = {path: row.source for path, row in found.items() if row.status == "pending"}
    assert taken == {
        "/gallery/og.jpg": "og:image",
        "/tw.jpg": "twitter:image",
        "/gallery/ld.jpg": "json-ld",
        "/gallery/plain.jpg": "img",
        "/gallery/s-900.jpg": "srcset",
        "/gallery/p2.webp": "picture",
        "/gallery/lazy.jpg": "data-src",
        "/gallery/ls-2.jpg": "data-srcset",
        "/gallery/orig.jpg": "data-original",
        "/gallery/lazysrc.jpg": "data-lazy-src",
        "/gallery/bg.jpg": "style",
        "/gallery/full.jpg": "a[href]",
        "/gallery/nojs.jpg": "img",
        "/gallery/fig.jpg": "img",
    }
    skipped = {path: row.error for path, row in found.items() if row.status == "skipped"}
    assert skipped == {
        "/favicon.ico": "favicon or touch icon (rel=icon)",
        "/static/spacer.gif": "lazy-load placeholder without a real image URL",
        "/gallery/tiny.jpg": "declared size 20x20 below minimum 64x64",
        "/gallery/logo.svg": "SVG images are not harvested",
        "/gallery/icons-sprite.png": "CSS sprite sheet",
    }
    assert found["/gallery/fig.jpg"].caption == "The caption"
    assert found["/gallery/plain.jpg"].title == "T"
    assert found["/gallery/full.jpg"].variants == [
        {"url": f"{server.base}/gallery/thumb.jpg", "descriptor": "thumbnail"}
    ]
    assert [v["url"].rsplit("/", 1)[1] for v in found["/gallery/p2.webp"].variants] == [
        "p.avif",
        "p.webp",
        "p.jpg",
    ]
    assert found["/gallery/nojs.jpg"].nearby_text == "Before the script-only image."
    assert report.extra["data_uri_images_ignored"] == 1
