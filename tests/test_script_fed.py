"""Script-fed pages in the automatic render mode: a photo-stream app on loopback (its list from a JSON
API, each photo drawn from a blob: URL) is rendered only because its HTML names no content image, its
blob images are traced to the bytes it fetched, and every candidate says how it was found. Skipped
when no Chromium is installed."""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path

import pytest
from crawl_helpers import candidates, crawl_config, pages
from loopback_site import Response, html, jpeg, serve

from harvest.demo_site import _sample_photos, encode_jpeg
from harvest.pages.script_fed import has_scripts, json_images, render_reason
from harvest.settings.config import chromium_path
from harvest.settings.site_profiles import parse_profile, render_mode
from harvest.stages.crawl import run_crawl
from harvest.stages.extract import run_extract
from harvest.web.script_capture import MAX_BLOB_BYTES, ScriptResponse, trace_blobs

APP = Path(__file__).parent / "fixtures" / "html" / "gallery_app"
needs_chromium = pytest.mark.skipif(chromium_path() is None, reason="no Chromium installed")

STREAM = {
    "photos": [
        {
            "id": 101,
            "title": "Chelsea on the windowsill",
            "media_url": "/api/v1/media/101",
            "author": {"name": "Ana", "avatar_url": "/media/avatars/u7-72.jpg"},
        },
        {
            "id": 102,
            "title": "Morning espresso",
            "media_url": "/api/v1/media/102",
            "author": {"name": "Ben", "avatar_url": "/media/avatars/u9-72.jpg"},
        },
        {
            "id": 103,
            "title": "Daisies by the path",
            "media_url": "/api/v1/media/103",
            "author": {"name": "Ana", "avatar_url": "/media/avatars/u7-72.jpg"},
        },
    ],
    "cover": {"media_url": "/api/v1/media/900"},
}


@pytest.fixture(scope="module")
def photos() -> dict[str, bytes]:
    sample = _sample_photos()
    return {
        "/api/v1/media/101": encode_jpeg(sample["cat"]),
        "/api/v1/media/102": encode_jpeg(sample["coffee"]),
        "/api/v1/media/103": encode_jpeg(sample["flower"]),
        "/api/v1/media/900": encode_jpeg(sample["china"]),
    }


def b64(body: bytes) -> str:
    return base64.b64encode(body).decode()


def gallery_app(server, photos: dict[str, bytes]) -> None:
    """The photo-stream app's routes: its page, its script, its API and the bytes of its photos."""
    server.routes.update(
        {
            "/": Response((APP / "index.html").read_bytes()),
            "/assets/app.3f9c2a.js": Response((APP / "app.js").read_bytes(), content_type="text/javascript"),
            "/api/v1/stream": Response(json.dumps(STREAM).encode(), content_type="application/json"),
            "/assets/brand-mark.png": Response(jpeg(32, 32), content_type="image/png"),
            "/media/avatars/u7-72.jpg": Response(jpeg(72, 72), content_type="image/jpeg"),
            "/media/avatars/u9-72.jpg": Response(jpeg(72, 72, (20, 90, 200)), content_type="image/jpeg"),
        }
    )
    for path, body in photos.items():
        server.routes[path] = Response(body, content_type="image/jpeg")


def test_the_render_decision_reads_the_html_as_sent():
    app = (APP / "index.html").read_bytes()
    assert has_scripts(app, "https://notes.example/")
    assert render_reason(app, "https://notes.example/", content_images=0)
    assert render_reason(app, "https://notes.example/", content_images=2) is None
    # data scripts (JSON-LD) are not code: a page with only those is read as sent
    data_only = b'<script type="application/ld+json">{"@type": "WebSite"}</script><p>text</p>'
    assert not has_scripts(data_only, "https://notes.example/")
    # the site's profile decides when it says; else the run's setting
    auto = parse_profile("hosts: [notes.example]\nrender: auto", "notes.yaml")
    never = parse_profile("hosts: [notes.example]\nrender: false", "notes.yaml")
    silent = parse_profile("hosts: [notes.example]", "notes.yaml")
    assert render_mode(auto, "profiles") == "auto"
    assert render_mode(never, "auto") == "never"
    assert render_mode(silent, "auto") == "auto" and render_mode(None, "profiles") == "never"


def test_image_urls_of_a_json_answer_with_their_path_text_and_role():
    answer = json.dumps(
        {
            "items": [
                {
                    "title": "Harbour at dusk",
                    "thumb": "/img/harbour-320.jpg",
                    "full": "https://cdn.example/img/harbour-1600.jpg",
                    "author": {"name": "Kim", "avatar": "/u/kim.png"},
                    "permalink": "/posts/harbour",
                },
                {"title": "No picture here", "url": "/posts/other"},
            ],
            "gallery": ["/img/a.webp", "not an image", "/posts/c"],
        }
    )
    found = {
        e["url"]: e for e in json_images(answer, "https://site.example/api/feed", "https://site.example/")
    }
    assert set(found) == {
        "https://cdn.example/img/harbour-1600.jpg",
        "https://site.example/u/kim.png",
        "https://site.example/img/a.webp",
    }
    harbour = found["https://cdn.example/img/harbour-1600.jpg"]
    assert harbour["alt"] == "Harbour at dusk" and harbour["role"] is None
    assert harbour["variants"] == [{"url": "https://site.example/img/harbour-320.jpg", "descriptor": "thumb"}]
    assert harbour["found_by"] == {
        "how": "script-json",
        "response": "https://site.example/api/feed",
        "path": "$.items[0].full",
    }
    assert found["https://site.example/u/kim.png"]["role"].startswith("avatar or profile picture")
    assert found["https://site.example/img/a.webp"]["found_by"]["path"] == "$.gallery[0]"


@needs_chromium
def test_auto_mode_renders_the_script_fed_page_and_traces_its_blob_images(tmp_path, photos):
    with serve() as server:
        gallery_app(server, photos)
        server.routes["/about"] = html('<h1>About</h1><img src="/media/team.jpg" alt="Our team">')
        server.routes["/media/team.jpg"] = Response(jpeg(400, 300), content_type="image/jpeg")
        cfg = crawl_config(f"{server.base}/", tmp_path, {"render": "auto"})
        crawl = run_crawl(cfg)
        run_extract(cfg)
        requested = server.paths()
    assert pages(cfg, server.base)["/"][0] == "done"
    # only the script-fed page was rendered; /about names its photo in its HTML
    assert crawl.extra["render"]["pages"] == 1
    assert crawl.extra["render"]["blobs_traced"] == 4 and crawl.extra["render"]["blobs_untraced"] == {}
    found = candidates(cfg, server.base)
    for media in ("101", "102", "103"):
        item = found[f"/api/v1/media/{media}"]
        assert item.source == "script-blob" and item.status == "pending", media
        assert item.found_by["how"] == "script-blob"
        assert item.found_by["response"] == f"{server.base}/api/v1/media/{media}"
    assert found["/api/v1/media/101"].alt == "Chelsea on the windowsill"
    cover = found["/api/v1/media/900"]
    assert cover.source == "script-blob" and cover.status == "pending"
    # the authors' avatars: in the JSON and in the DOM, skipped with the reason
    for avatar in ("/media/avatars/u7-72.jpg", "/media/avatars/u9-72.jpg"):
        assert found[avatar].status == "skipped" and "avatar" in found[avatar].error, avatar
    assert found["/media/team.jpg"].found_by is None  # named by the HTML as sent
    # the browser's requests went through the crawler's client: each photo once, the page once
    assert requested.count("/") == 1 and requested.count("/api/v1/media/101") == 1


@needs_chromium
def test_without_auto_the_script_fed_page_is_read_as_sent(tmp_path, photos):
    with serve() as server:
        gallery_app(server, photos)
        cfg = crawl_config(f"{server.base}/", tmp_path)
        crawl = run_crawl(cfg)
        run_extract(cfg)
        requested = server.paths()
    assert "render" not in crawl.extra
    assert not [url for url in candidates(cfg, server.base) if url.startswith("/api/")]
    assert "/assets/app.3f9c2a.js" not in requested


def test_blob_tracing_matches_bytes_and_says_why_it_could_not():
    photo = jpeg(120, 90)
    responses = [
        ScriptResponse("https://notes.example/api/media/7", "image/jpeg", hashlib.sha256(photo).hexdigest())
    ]
    found = [
        {
            "url": "blob:https://notes.example/1",
            "kind": "img",
            "tag": "img",
            "size": len(photo),
            "data": b64(photo),
        },
        {
            "url": "blob:https://notes.example/2",
            "kind": "img",
            "tag": "img",
            "size": 5,
            "data": b64(b"drawn"),
        },
        {"url": "blob:https://notes.example/3", "kind": "background", "tag": "div", "size": None},
        {"url": "blob:https://notes.example/4", "kind": "img", "tag": "img", "size": 10, "overTotal": True},
        {"url": "blob:https://notes.example/5", "kind": "img", "tag": "img", "size": MAX_BLOB_BYTES + 1},
    ]
    traced = trace_blobs(found, responses)
    assert traced[0].response_url == "https://notes.example/api/media/7" and traced[0].reason is None
    assert traced[1].response_url is None and "made or changed by a script" in traced[1].reason
    assert "not made by URL.createObjectURL" in traced[2].reason
    assert "per page" in traced[3].reason
    assert f"over the {MAX_BLOB_BYTES} bytes" in traced[4].reason


@needs_chromium
def test_the_scripts_requests_wait_for_the_crawl_delay_and_the_page_waits_for_them(tmp_path, photos):
    """Each request the app's script makes waits its turn at the host's gate (robots.txt asks for a
    second between requests); the render waits for the whole chain, longer than a fixed settle time."""
    with serve() as server:
        gallery_app(server, photos)
        server.routes["/robots.txt"] = Response(b"User-agent: *\nCrawl-delay: 1\n", content_type="text/plain")
        cfg = crawl_config(f"{server.base}/", tmp_path, {"render": "auto", "max_depth": 0})
        crawl = run_crawl(cfg)
        run_extract(cfg)
        hits = [hit for hit in server.hits if hit.path != "/robots.txt"]
    assert crawl.extra["render"]["blobs_traced"] == 4, crawl.extra["render"]
    media = sorted(url for url in candidates(cfg, server.base) if url.startswith("/api/v1/media/"))
    assert media == ["/api/v1/media/101", "/api/v1/media/102", "/api/v1/media/103", "/api/v1/media/900"]
    # the page, its script, the stream and the four photos: each a second after the one before
    assert len(hits) >= 7
    # measured where the server starts each answer, which a loaded machine may delay a little
    gaps = [later.started - earlier.started for earlier, later in zip(hits, hits[1:], strict=False)]
    assert min(gaps) >= 0.5 and hits[-1].started - hits[0].started >= 0.95 * len(gaps), gaps
