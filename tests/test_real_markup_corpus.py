"""A corpus of real-world page shapes on loopback, harvested by the DAG end to end (``dag.test()``
through scripts/run_harvest.py, state on Postgres, the real classifier), in the automatic render mode.

One site serves every shape, each with real sample photos:

- stylesheets: a Bootstrap "Agency" theme (masthead and section photos set in css/styles.css and a
  sheet it @imports, an ``image-set()`` in a ``<style>`` block);
- renditions: a WordPress post and a MediaWiki article whose preferred renditions are missing, error
  pages served as images, too small, or slow;
- script-fed: a photo-stream app whose page is empty until its script fetches a JSON list and draws
  each photo from a ``blob:`` URL;
- junk roles: a WordPress post with emoji and an author avatar, a Mastodon-style profile timeline,
  a table-layout personal page with a logo, header graphic and <noscript> counters;
- dark backgrounds: a Shopify-style product page with the product on black and on white, a wordmark
  and a flat badge.

The test checks, per pattern, what the harvest extracts (the candidates and how each was found) and
what it publishes, and prints the table (``-s``) the issue's closing note quotes.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import manifest_rows
from loopback_site import Response, serve
from sqlalchemy import select
from test_dag import REPO, _airflow_env
from test_markup_roles import CONTENT as ROLE_CONTENT
from test_markup_roles import SKIPPED as ROLE_SKIPPED
from test_markup_roles import _site as roles_site
from test_renditions import ARTICLE, POST, WIKI, WP
from test_renditions import _site as renditions_site
from test_script_fed import gallery_app
from test_stylesheet_images import _agency_site

from harvest.demo_site import DEMO_LABELS, _sample_photos, encode_jpeg, encode_png
from harvest.settings.config import chromium_path
from harvest.state.db import session_scope
from harvest.state.models import Candidate, Image, Run

FIXTURES = Path(__file__).parent / "fixtures" / "html"
THEME = "/theme"
SHOP = "/products/night-espresso-cup"
CUPS = "/cdn/shop/products/"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(chromium_path() is None, reason="no Chromium installed"),
]


def _theme(server) -> None:
    """The Agency theme under /theme/ (its pages use relative URLs)."""
    sample = _sample_photos()
    photos = {
        "/assets/img/header-bg.jpg": encode_jpeg(sample["china"].crop((0, 0, 520, 427))),
        "/assets/img/map-image.png": encode_png(sample["flower"].crop((100, 50, 540, 427))),
        "/assets/img/bg-callout.jpg": encode_jpeg(sample["coffee"].crop((120, 0, 600, 400))),
        "/assets/img/error-bg.jpg": encode_jpeg(sample["hopper"]),
        "/assets/img/about/studio-640.jpg": encode_jpeg(sample["astronaut"].resize((320, 320))),
        "/assets/img/about/studio-1280.jpg": encode_jpeg(sample["astronaut"]),
        "/assets/img/team/1.jpg": encode_jpeg(sample["cat"].crop((40, 0, 400, 300))),
    }
    inner = type("Inner", (), {"routes": {}})()
    _agency_site(inner, photos)
    for path, response in inner.routes.items():
        server.routes[THEME + path] = response


def _shop(server) -> None:
    from test_low_information import BLACK, PHOTOS, WHITE, _logo

    server.routes[SHOP] = Response((FIXTURES / "shop_product.html").read_bytes())
    server.routes[f"{CUPS}night-cup-black.jpg"] = Response(
        PHOTOS["coffee cup on black"](), content_type="image/jpeg"
    )
    server.routes[f"{CUPS}night-cup-white.jpg"] = Response(
        PHOTOS["coffee cup on white"](), content_type="image/jpeg"
    )
    server.routes["/cdn/shop/files/roastery-wordmark.png"] = Response(
        _logo(WHITE, BLACK), content_type="image/png"
    )
    server.routes["/cdn/shop/files/badge-fair-trade.png"] = Response(
        _logo(WHITE, (20, 120, 60), accent=(20, 120, 60), text="FAIR TRADE"), content_type="image/png"
    )


def _stream(server) -> None:
    sample = _sample_photos()
    index = server.routes.get("/")
    gallery_app(
        server,
        {
            "/api/v1/media/101": encode_jpeg(sample["cat"].crop((100, 0, 451, 300))),
            "/api/v1/media/102": encode_jpeg(sample["coffee"].crop((0, 0, 400, 400))),
            "/api/v1/media/103": encode_jpeg(sample["flower"].crop((200, 0, 640, 427))),
            "/api/v1/media/900": encode_jpeg(sample["china"].crop((200, 0, 640, 427))),
        },
    )
    server.routes["/stream/"] = server.routes.pop("/")
    if index is not None:  # the app is served under /stream/; / stays the other site's
        server.routes["/"] = index


#: pattern -> (the seeds that show it, the content photos of its pages: what the harvest must extract)
PATTERNS = {
    "stylesheets": (
        [f"{THEME}/index.html"],
        {
            f"{THEME}/assets/img/header-bg.jpg",
            f"{THEME}/assets/img/map-image.png",
            f"{THEME}/assets/img/bg-callout.jpg",
            f"{THEME}/assets/img/about/studio-1280.jpg",
            f"{THEME}/assets/img/team/1.jpg",  # an <img> of the team page
        },
    ),
    "renditions": (
        [POST, ARTICLE],
        {
            f"{WP}garden-cat-1024x683.jpg",
            f"{WP}terrace-coffee-1024x683.jpg",
            f"{WP}first-bloom-1024x683.jpg",
            f"{WP}shed-portrait.jpg",
            f"{WIKI}6/6b/Summer_Palace_roof.jpg/440px-Summer_Palace_roof.jpg",
            f"{WIKI}2/2f/Astronaut_portrait.jpg/440px-Astronaut_portrait.jpg",
        },
    ),
    "script-fed": (
        ["/stream/"],
        {"/api/v1/media/101", "/api/v1/media/102", "/api/v1/media/103", "/api/v1/media/900"},
    ),
    "junk roles": (["/"], set(ROLE_CONTENT)),
    "dark backgrounds": (
        [SHOP],
        {
            f"{CUPS}night-cup-black.jpg?v=1717000001&width=1946",
            f"{CUPS}night-cup-white.jpg?v=1717000002&width=1946",
        },
    ),
}
#: images each pattern must publish (recognised as one of the demo labels by the real classifier)
MUST_PUBLISH = {
    "stylesheets": {f"{THEME}/assets/img/header-bg.jpg"},
    "renditions": {f"{WIKI}6/6b/Summer_Palace_roof.jpg/440px-Summer_Palace_roof.jpg"},
    "script-fed": {"/api/v1/media/101", "/api/v1/media/102"},
    "junk roles": {"/wp-content/uploads/2026/03/cup.jpg"},
    "dark backgrounds": {f"{CUPS}night-cup-black.jpg?v=1717000001&width=1946"},
}


def _run_dag(server, postgres_url: str, tmp_path: Path) -> dict:
    env = _airflow_env(
        tmp_path,
        AIRFLOW_CONN_HARVEST_DB=postgres_url.replace("postgresql+psycopg2://", "postgresql://"),
        HARVEST_LOCAL_ROOTS=str(tmp_path),
        HARVEST_RENDER="auto",
        HARVEST_HOST_DELAY="0.01",
        HARVEST_SHARDS="2",
    )
    seeds = [server.base + seed for seeds, _ in PATTERNS.values() for seed in seeds]
    summary_path = tmp_path / "summary.json"
    result = subprocess.run(
        [
            sys.executable,
            str(REPO / "scripts" / "run_harvest.py"),
            "--seeds",
            ",".join(seeds),
            "--labels",
            ",".join(DEMO_LABELS),
            "--destination",
            str(tmp_path / "dataset"),
            "--max-depth",
            "1",
            "--summary-json",
            str(summary_path),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    return json.loads(summary_path.read_text())


def test_real_page_shapes_through_the_dag(postgres_url, tmp_path):
    with serve() as server:
        roles_site(server)
        renditions_site(server)
        _theme(server)
        _stream(server)
        _shop(server)
        summary = _run_dag(server, postgres_url, tmp_path)
        base = server.base
    assert summary["state"] == "success"
    with session_scope(postgres_url) as session:
        run = session.scalars(select(Run)).one()  # a fresh database: this run only
        rows = session.scalars(select(Candidate).where(Candidate.run_id == run.run_id)).all()
        duplicate_of = dict(session.execute(select(Image.sha256, Image.duplicate_of)).all())
        session.expunge_all()
    found = {row.url.removeprefix(base): row for row in rows}
    manifest = manifest_rows(Path(summary["manifest"]).read_bytes())
    published_shas = {row["sha256"] for row in manifest} | {row.get("source_sha256") for row in manifest}
    published = {path for path, row in found.items() if row.sha256 and row.sha256 in published_shas}
    published |= {row["url"].removeprefix(base) for row in manifest if row.get("url")}
    # the same photo shown by two page shapes is published once: the other copy is held back as its
    # near duplicate, and counts as kept for its pattern
    duplicates = {
        path
        for path, row in found.items()
        if path not in published and duplicate_of.get(row.sha256) in published_shas
    }

    table = {}
    for pattern, (_, content) in PATTERNS.items():
        extracted = {path for path in content if path in found and found[path].status != "skipped"}
        table[pattern] = {
            "content photos": len(content),
            "extracted": len(extracted),
            "downloaded": sum(1 for path in content if path in found and found[path].status == "done"),
            "published": len(content & published),
            "held back as a near duplicate of a published copy": len(content & duplicates),
        }
    # nothing but content photos was published (a page naming one photo twice, og:image and <img>,
    # publishes its bytes once)
    content_shas = {found[path].sha256 for _, content in PATTERNS.values() for path in content}
    not_content = sorted(
        path for path in published if found.get(path) and found[path].sha256 not in content_shas
    )
    assert not_content == []
    role_words = ("avatar", "emoji", "logo", "tracking", "header graphic", "repeated small", "site chrome")
    junk = {
        "skipped by role": sum(
            1 for row in found.values() if row.error and any(w in row.error for w in role_words)
        ),
        "other non-content downloaded": sorted(
            path for path, row in found.items() if row.status == "done" and row.sha256 not in content_shas
        ),
    }
    rendered = sorted(url.removeprefix(base) for url in run.counters["crawl"]["render"]["examples"])
    print("\ncorpus:", json.dumps(table, indent=1), "\nrendered:", rendered, "\njunk:", junk)
    for pattern, (_, content) in PATTERNS.items():
        assert table[pattern]["extracted"] == len(content), (pattern, sorted(found))
        assert MUST_PUBLISH[pattern] <= published | duplicates, (pattern, sorted(content & published))

    # only the script-fed page was rendered: the theme's pages load scripts too, but their
    # stylesheets name their photos
    assert rendered == ["/stream/"]
    # stylesheets: named by the theme's sheets and <style> block, never by the markup
    assert found[f"{THEME}/assets/img/header-bg.jpg"].source == "stylesheet"
    assert found[f"{THEME}/assets/img/about/studio-1280.jpg"].source == "style-block"
    # renditions: the preferred one failed, the page's own smaller one was published in its place
    cat = found[f"{WP}garden-cat-1024x683.jpg"]
    assert cat.status == "done" and cat.rendition_url != cat.url and cat.renditions_failed
    # script-fed: drawn from blob: URLs traced to the bytes the page fetched
    for media in ("101", "102", "103", "900"):
        row = found[f"/api/v1/media/{media}"]
        assert row.source == "script-blob" and row.found_by["response"] == f"{base}/api/v1/media/{media}"
    assert run.counters["crawl"]["render"]["blobs_traced"] == 4
    # junk roles: every avatar, emoji, logo and counter skipped with its reason, never downloaded
    for path, reason in ROLE_SKIPPED.items():
        assert found[path].status == "skipped" and found[path].error == reason, path
    assert "avatar" in found["/media/avatars/u7-72.jpg"].error  # the stream's byline avatars too
    assert (
        found["/cdn/shop/files/roastery-wordmark.png?v=1699&width=600"].error == "site logo (by class or id)"
    )
    # dark backgrounds: the cup on black is published; the flat badge is not
    badge = "/cdn/shop/files/badge-fair-trade.png?v=1699&width=600"
    assert badge not in published
