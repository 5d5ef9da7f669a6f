"""Background images set in stylesheets: a Bootstrap "Agency" theme site on loopback, its masthead
photo named only in css/styles.css, run through the crawl, extract and download stages on Postgres."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from crawl_helpers import candidates
from loopback_site import Response, html, serve
from sqlalchemy import select

from harvest.demo_site import _sample_photos, encode_jpeg, encode_png
from harvest.pages.images import extract_page
from harvest.pages.stylesheets import StagedSheet, stylesheet_key
from harvest.pipeline import prepare_run
from harvest.settings.config import build_config
from harvest.stages.crawl import run_crawl
from harvest.stages.download import run_download
from harvest.stages.extract import run_extract
from harvest.state.db import session_scope
from harvest.state.models import Candidate, Image
from harvest.storage.local import LocalStore

AGENCY = Path(__file__).parent / "fixtures" / "html" / "agency"
CSS = "text/css"


def _config(database_url: str, seed: str, tmp_path: Path, run_id: str):
    cfg = build_config(
        {"seeds": [seed], "labels": ["palace"], "destination": str(tmp_path / "out"), "max_depth": 2},
        run_id,
        env={**os.environ, "HARVEST_STAGING": str(tmp_path / "staging")},
        database_url=database_url,
    )
    prepare_run(cfg)
    return cfg


@pytest.fixture(scope="module")
def photos() -> dict[str, bytes]:
    sample = _sample_photos()
    return {
        "/assets/img/header-bg.jpg": encode_jpeg(sample["china"]),
        "/assets/img/map-image.png": encode_png(sample["flower"]),
        "/assets/img/bg-callout.jpg": encode_jpeg(sample["coffee"]),
        "/assets/img/error-bg.jpg": encode_jpeg(sample["hopper"]),
        "/assets/img/about/studio-640.jpg": encode_jpeg(sample["astronaut"].resize((320, 320))),
        "/assets/img/about/studio-1280.jpg": encode_jpeg(sample["astronaut"]),
        "/assets/img/team/1.jpg": encode_jpeg(sample["cat"]),
    }


def _agency_site(server, photos: dict[str, bytes]) -> None:
    for name in ("index.html", "about.html", "team.html"):
        server.routes[f"/{name}"] = Response((AGENCY / name).read_bytes())
    server.routes["/"] = server.routes["/index.html"]
    for name in ("styles.css", "sections.css"):
        server.routes[f"/css/{name}"] = Response((AGENCY / "css" / name).read_bytes(), content_type=CSS)
    for path, body in photos.items():
        server.routes[path] = Response(
            body, content_type="image/png" if path.endswith(".png") else "image/jpeg"
        )


def test_theme_backgrounds_from_stylesheets_are_candidates_and_downloaded(postgres_url, tmp_path, photos):
    with serve() as server:
        _agency_site(server, photos)
        cfg = _config(postgres_url, f"{server.base}/", tmp_path, "manual__agency")
        crawl = run_crawl(cfg)
        run_extract(cfg)
        for shard in range(cfg.num_shards):
            run_download(cfg, shard)
        requested = server.paths()
    assert crawl.done == 4  # /, index.html, about.html, team.html
    found = candidates(cfg, server.base)
    # the shared stylesheet and the sheet it @imports were fetched once for all the pages
    assert requested.count("/css/styles.css") == 1
    assert requested.count("/css/sections.css") == 1
    assert crawl.extra["stylesheets"] == {"fetched": 2, "failed": {}}
    hero = found["/assets/img/header-bg.jpg"]
    assert hero.source == "stylesheet" and hero.status == "done"
    with session_scope(cfg.database_url) as session:
        stored = {
            row.first_url.removeprefix(server.base): row.storage_key for row in session.scalars(select(Image))
        }
    assert (
        LocalStore(cfg.staging).get(stored["/assets/img/header-bg.jpg"])
        == photos["/assets/img/header-bg.jpg"]
    )
    # the @imported sheet's rule, behind a gradient, matched the about page's section
    assert found["/assets/img/bg-callout.jpg"].source == "stylesheet"
    assert found["/assets/img/bg-callout.jpg"].status == "done"
    assert found["/assets/img/map-image.png"].source == "stylesheet"
    # a <style> block's image-set(): the 2x file, the 1x one its variant
    studio = found["/assets/img/about/studio-1280.jpg"]
    assert studio.source == "style-block" and studio.status == "done"
    assert studio.variants == [
        {"url": f"{server.base}/assets/img/about/studio-640.jpg", "descriptor": "image-set"}
    ]
    # the 404 page's hero is styled, but no crawled page has that element: no candidate, no fetch
    assert "/assets/img/error-bg.jpg" not in found
    assert "/assets/img/error-bg.jpg" not in requested
    # the web-font sheets on another site were not fetched (they would have failed the crawl's log only)
    with session_scope(cfg.database_url) as session:
        sources = set(session.scalars(select(Candidate.source).where(Candidate.run_id == cfg.run_id)))
    assert {"stylesheet", "style-block", "img"} <= sources


def test_a_huge_stylesheet_is_capped_with_its_reason(postgres_url, tmp_path, photos):
    huge = b"/* padding */\n" + b".x{color:red}\n" * (5 * 1024 * 1024 // 14)
    huge += b'header.masthead{background-image:url("../assets/img/header-bg.jpg")}'
    page = (AGENCY / "index.html").read_bytes().replace(b"css/styles.css", b"css/huge.css")
    with serve() as server:
        server.routes["/"] = Response(page)
        server.routes["/css/huge.css"] = Response(huge, content_type=CSS)
        server.routes.update({p: Response(b, content_type="image/jpeg") for p, b in photos.items()})
        cfg = _config(postgres_url, f"{server.base}/", tmp_path, "manual__hugecss")
        crawl = run_crawl(cfg)
        extract = run_extract(cfg)
    reason = f"body of {len(huge)} bytes exceeds cap of {cfg.max_stylesheet_bytes}"
    assert len(huge) > 5 * 1024 * 1024 > cfg.max_stylesheet_bytes
    assert crawl.extra["stylesheets"] == {"fetched": 0, "failed": {reason: 1}}
    staged = StagedSheet.from_bytes(
        LocalStore(cfg.staging).get(stylesheet_key(cfg.run_id, f"{server.base}/css/huge.css"))
    )
    assert staged.css is None and staged.error == reason
    # the page itself is extracted as usual; the capped sheet names nothing
    assert extract.done == 1 and extract.failed == 0
    assert "/assets/img/header-bg.jpg" not in candidates(cfg, server.base)


def test_style_blocks_without_a_crawl_only_their_matching_rules():
    """A WordPress custom background (the form wp_custom_background_cb() prints) in a <style> block:
    kept, resolved against the page; a rule for an element the page lacks is dropped."""
    page = html(
        '<p class="site-description">Just another WordPress site</p>',
        head="""<style type="text/css" id="custom-background-css">
body.custom-background { background-image: url("/wp-content/uploads/2026/05/paper.jpg"); background-position: left top; background-size: auto; background-repeat: repeat; background-attachment: scroll; }
.wp-block-cover.has-parallax { background-image: url("/wp-content/uploads/2026/05/cover.jpg"); }
</style>""",
    ).body.replace(b"<body>", b'<body class="home blog wp-embed-responsive custom-background">')
    items = {i.url: i for i in extract_page(page, "https://blog.example/2026/05/hello/").items}
    assert set(items) == {"https://blog.example/wp-content/uploads/2026/05/paper.jpg"}
    assert items["https://blog.example/wp-content/uploads/2026/05/paper.jpg"].source == "style-block"


def test_staged_sheet_round_trip_keeps_its_final_url():
    sheet = StagedSheet("https://cdn.example/theme/css/styles.css", "a{}")
    assert StagedSheet.from_bytes(sheet.to_bytes()) == sheet
    assert json.loads(StagedSheet("u", error="why").to_bytes())["error"] == "why"


def test_a_stylesheet_robots_txt_disallows_is_not_fetched(postgres_url, tmp_path, photos):
    with serve() as server:
        _agency_site(server, photos)
        server.routes["/robots.txt"] = Response(
            b"User-agent: *\nDisallow: /css/\n", content_type="text/plain"
        )
        cfg = _config(postgres_url, f"{server.base}/index.html", tmp_path, "manual__robotscss")
        crawl = run_crawl(cfg)
        run_extract(cfg)
        requested = server.paths()
    assert not [path for path in requested if path.startswith("/css/")]
    assert crawl.extra["stylesheets"]["fetched"] == 0
    assert [reason for reason in crawl.extra["stylesheets"]["failed"] if reason.startswith("robots.txt")]
    assert "/assets/img/header-bg.jpg" not in candidates(cfg, server.base)
