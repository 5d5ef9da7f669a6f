"""Rendition fallback: when the preferred rendition of an image (the largest srcset entry) is missing,
serves an HTML page as image/jpeg or times out, the download takes the next one the page names, and
the state DB and the published manifests say which rendition was published and which ones failed.

A WordPress post and a MediaWiki article (tests/fixtures/html/) are served on loopback with real
sample photos at each rendition's size, and run through crawl, extract, download and publish on
Postgres."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from helpers import manifest_rows
from loopback_site import Response, SiteServer, serve
from matplotlib import cbook
from PIL import Image
from skimage import data
from sklearn.datasets import load_sample_image
from sqlalchemy import select
from stage_setup import record_answers

from harvest.dataset.layout import manifest_key
from harvest.demo_site import encode_jpeg
from harvest.pipeline import prepare_run
from harvest.settings.config import build_config
from harvest.stages.crawl import run_crawl
from harvest.stages.download import MAX_RENDITIONS, rendition_urls, run_download
from harvest.stages.extract import run_extract
from harvest.stages.publish import run_publish
from harvest.state.db import session_scope
from harvest.state.models import Candidate, ImageUrl
from harvest.state.models import Image as ImageRow

FIXTURES = Path(__file__).parent / "fixtures" / "html"
WP = "/wp-content/uploads/2026/05/"
WIKI = "/commons/thumb/"
POST = "/2026/05/spring-visitors/"
ARTICLE = "/wiki/Great_Wall"
#: what a CDN answers for a rendition it lost: its error page, labelled as the image asked for
ERROR_PAGE = (
    b"<!DOCTYPE html><html><head><title>404 Not Found</title></head>"
    b"<body><h1>Not Found</h1><p>The requested file was not found on this server.</p></body></html>"
)
READ_TIMEOUT = 0.5


def _sized(photo: Image.Image, width: int, height: int) -> Response:
    return Response(encode_jpeg(photo.resize((width, height), Image.LANCZOS)), content_type="image/jpeg")


def _photos() -> dict[str, Image.Image]:
    return {
        "cat": Image.fromarray(data.chelsea()),
        "coffee": Image.fromarray(data.coffee()),
        "flower": Image.fromarray(load_sample_image("flower.jpg")),
        "china": Image.fromarray(load_sample_image("china.jpg")),
        "astronaut": Image.fromarray(data.astronaut()),
        "hopper": Image.open(cbook.get_sample_data("grace_hopper.jpg")).convert("RGB"),
    }


def _site(server: SiteServer) -> None:
    """The two pages, and every rendition they name except the broken ones: the largest cat is
    missing (404), the largest coffee is an error page served as image/jpeg, the largest flower
    never answers in time, the linked full-size portrait is a tiny stand-in (what hotlink
    protection sends), the largest palace roof is missing, and no astronaut rendition works."""
    base = server.base
    photos = _photos()
    post = (FIXTURES / "wordpress_renditions.html").read_text().replace("https://greenthumb.example", base)
    article = (FIXTURES / "mediawiki_renditions.html").read_text()
    article = article.replace("//upload.freepedia.example", base.removeprefix("http:"))
    server.routes[POST] = Response(post.encode())
    server.routes[ARTICLE] = Response(article.encode())
    for name, photo in (("garden-cat", "cat"), ("terrace-coffee", "coffee"), ("first-bloom", "flower")):
        for width, height in ((1024, 683), (768, 512), (300, 200)):
            server.routes[f"{WP}{name}-{width}x{height}.jpg"] = _sized(photos[photo], width, height)
    del server.routes[f"{WP}garden-cat-1024x683.jpg"]
    server.routes[f"{WP}terrace-coffee-1024x683.jpg"] = Response(ERROR_PAGE, content_type="image/jpeg")
    slow = server.routes[f"{WP}first-bloom-1024x683.jpg"]
    server.routes[f"{WP}first-bloom-1024x683.jpg"] = dataclasses.replace(slow, delay=READ_TIMEOUT * 6)
    server.routes[f"{WP}shed-portrait.jpg"] = _sized(photos["hopper"], 48, 32)
    server.routes[f"{WP}shed-portrait-300x200.jpg"] = _sized(photos["hopper"], 300, 200)
    roof = f"{WIKI}6/6b/Summer_Palace_roof.jpg/"
    for width in (330, 220):
        server.routes[f"{roof}{width}px-Summer_Palace_roof.jpg"] = _sized(
            photos["china"], width, width * 2 // 3
        )
    astronaut = f"{WIKI}2/2f/Astronaut_portrait.jpg/"
    server.routes[f"{astronaut}440px-Astronaut_portrait.jpg"] = dataclasses.replace(
        _sized(photos["astronaut"], 440, 440), delay=READ_TIMEOUT * 6
    )
    server.routes[f"{astronaut}330px-Astronaut_portrait.jpg"] = Response(
        ERROR_PAGE, content_type="image/jpeg"
    )
    # 220px: not on the server (404)


def _config(base: str, database_url: str, tmp_path: Path, run_id: str = "manual__renditions"):
    cfg = build_config(
        {
            "seeds": [f"{base}{POST}", f"{base}{ARTICLE}"],
            "labels": ["espresso", "Egyptian cat"],
            "destination": str(tmp_path / "out"),
            "max_depth": 0,
        },
        run_id,
        database_url=database_url,
    )
    return dataclasses.replace(cfg, read_timeout=READ_TIMEOUT)


def _download(cfg) -> None:
    for shard in range(cfg.num_shards):
        run_download(cfg, shard)


def _candidates(cfg, base: str) -> dict[str, Candidate]:
    with session_scope(cfg.database_url) as session:
        rows = session.scalars(select(Candidate).where(Candidate.run_id == cfg.run_id)).all()
        session.expunge_all()
    return {row.url.removeprefix(base): row for row in rows}


def _publish(cfg) -> None:
    """The classifier's answer recorded for every downloaded image, then the real publish stage."""
    with session_scope(cfg.database_url) as session:
        shas = set(session.scalars(select(Candidate.sha256).where(Candidate.sha256.is_not(None))))
    record_answers(cfg, dict.fromkeys(shas, "espresso"))
    run_publish(cfg)


def _manifest(cfg, base: str) -> dict[str, dict]:
    body = (Path(cfg.destination) / manifest_key(cfg.run_id)).read_bytes()
    return {row["url"].removeprefix(base): row for row in manifest_rows(body)}


def test_the_next_rendition_is_published_when_the_preferred_one_fails(postgres_url, tmp_path):
    with serve() as server:
        _site(server)
        base = server.base
        cfg = _config(base, postgres_url, tmp_path)
        prepare_run(cfg)
        run_crawl(cfg)
        run_extract(cfg)
        _download(cfg)
        _publish(cfg)
        requested = server.paths()
    found = _candidates(cfg, base)
    cat, coffee, bloom = (
        found[f"{WP}{name}-1024x683.jpg"] for name in ("garden-cat", "terrace-coffee", "first-bloom")
    )
    portrait = found[f"{WP}shed-portrait.jpg"]
    roof = found[f"{WIKI}6/6b/Summer_Palace_roof.jpg/440px-Summer_Palace_roof.jpg"]
    astronaut = found[f"{WIKI}2/2f/Astronaut_portrait.jpg/440px-Astronaut_portrait.jpg"]

    # the preferred rendition failed, the next one the page names was downloaded
    for row, served in (
        (cat, f"{WP}garden-cat-768x512.jpg"),
        (coffee, f"{WP}terrace-coffee-768x512.jpg"),
        (bloom, f"{WP}first-bloom-768x512.jpg"),
        (portrait, f"{WP}shed-portrait-300x200.jpg"),
        (roof, f"{WIKI}6/6b/Summer_Palace_roof.jpg/330px-Summer_Palace_roof.jpg"),
    ):
        assert (row.status, row.error, row.rendition_url) == ("done", None, base + served)
        assert [failed["url"] for failed in row.renditions_failed] == [row.url]
    assert cat.renditions_failed[0]["reason"] == "HTTP 404"
    assert coffee.renditions_failed[0]["reason"] == (
        "not an image: an HTML page served in its place (Content-Type image/jpeg)"
    )
    assert "timed out" in bloom.renditions_failed[0]["reason"]
    assert portrait.renditions_failed[0]["reason"] == "too small (48x32 < 64x64)"
    assert roof.renditions_failed[0]["reason"] == "HTTP 404"
    # the first rendition that worked stops the search: the other 300x200 copies were never asked for
    assert [path for path in requested if path.endswith("-300x200.jpg")] == [f"{WP}shed-portrait-300x200.jpg"]

    # every rendition of the astronaut failed: the candidate failed, with each reason listed in order
    thumb = f"{base}{WIKI}2/2f/Astronaut_portrait.jpg/"
    assert astronaut.status == "failed" and astronaut.rendition_url is None
    assert [failed["url"] for failed in astronaut.renditions_failed] == [
        f"{thumb}440px-Astronaut_portrait.jpg",
        f"{thumb}330px-Astronaut_portrait.jpg",
        f"{thumb}220px-Astronaut_portrait.jpg",
    ]
    reasons = [failed["reason"] for failed in astronaut.renditions_failed]
    assert (
        "timed out" in reasons[0]
        and reasons[1].startswith("not an image: an HTML page")
        and reasons[2] == "HTTP 404"
    )
    assert astronaut.error.startswith("all 3 renditions failed: ")
    for failed in astronaut.renditions_failed:
        assert f"{failed['url']}: {failed['reason']}" in astronaut.error

    # the stored image is the rendition's: its size, and the URL that served it
    with session_scope(cfg.database_url) as session:
        image = session.get(ImageRow, cat.sha256)
        assert (image.width, image.height, image.first_url) == (768, 512, cat.rendition_url)
        served_by = set(session.scalars(select(ImageUrl.url).where(ImageUrl.sha256 == cat.sha256)))
    assert served_by == {cat.rendition_url}

    # the manifests name the published rendition and the failed ones; the other columns as before
    manifest = _manifest(cfg, base)
    assert set(manifest) == {
        f"{WP}{n}-1024x683.jpg" for n in ("garden-cat", "terrace-coffee", "first-bloom")
    } | {f"{WP}shed-portrait.jpg", f"{WIKI}6/6b/Summer_Palace_roof.jpg/440px-Summer_Palace_roof.jpg"}
    for row, width in ((cat, 768), (coffee, 768), (bloom, 768), (portrait, 300), (roof, 330)):
        entry = manifest[row.url.removeprefix(base)]
        assert entry["url"] == row.url and entry["page_url"] == row.page_url
        assert entry["rendition_url"] == row.rendition_url
        assert entry["renditions_failed"] == row.renditions_failed
        assert entry["width"] == width
    table = pq.read_table(Path(cfg.destination) / "manifests/dataset.parquet").to_pylist()
    parquet = {row["url"]: row for row in table}
    assert parquet[cat.url]["rendition_url"] == cat.rendition_url
    assert parquet[cat.url]["renditions_failed"] == [{"url": cat.url, "reason": "HTTP 404"}]
    assert parquet[roof.url]["renditions_failed"] == roof.renditions_failed


def test_a_rerun_retries_only_the_failed_candidate_and_its_renditions(postgres_url, tmp_path):
    with serve() as server:
        _site(server)
        base = server.base
        cfg = _config(base, postgres_url, tmp_path)
        prepare_run(cfg)
        run_crawl(cfg)
        run_extract(cfg)
        _download(cfg)
        before = _candidates(cfg, base)
        first_requests = len(server.paths())
        # the astronaut's largest rendition answers in time now
        thumb = f"{WIKI}2/2f/Astronaut_portrait.jpg/"
        largest = f"{thumb}440px-Astronaut_portrait.jpg"
        server.routes[largest] = dataclasses.replace(server.routes[largest], delay=0)
        _download(cfg)
        again = server.paths()[first_requests:]
        _publish(cfg)
    after = _candidates(cfg, base)
    # done candidates are not claimed again: none of their renditions is fetched a second time
    assert [path for path in again if path.startswith(("/wp-content/", WIKI))] == [largest]
    for path, row in before.items():
        if row.status == "done":
            assert (after[path].status, after[path].sha256, after[path].attempts) == ("done", row.sha256, 1)
            assert after[path].rendition_url == row.rendition_url
    astronaut = after[largest]
    assert before[largest].status == "failed"
    assert (astronaut.status, astronaut.error, astronaut.attempts) == ("done", None, 2)
    assert astronaut.rendition_url == base + largest and astronaut.renditions_failed is None
    entry = _manifest(cfg, base)[largest]
    assert entry["rendition_url"] == base + largest and entry["renditions_failed"] == []


@pytest.mark.parametrize("limit", [1, 2, MAX_RENDITIONS])
def test_rendition_order_follows_the_page_and_is_capped(limit):
    variants = [
        {"url": "http://h/a-768.jpg", "descriptor": "768w"},
        {"url": "http://h/a-1024.jpg", "descriptor": "1024w"},  # the preferred URL again
        {"url": "http://h/a-300.jpg", "descriptor": "300w"},
        {"url": "http://h/a-150.jpg", "descriptor": "150w"},
        {"url": "http://h/a-100.jpg", "descriptor": "src"},
    ]
    expected = ["http://h/a-1024.jpg", "http://h/a-768.jpg", "http://h/a-300.jpg", "http://h/a-150.jpg"]
    assert rendition_urls("http://h/a-1024.jpg", variants, limit) == expected[:limit]
    assert rendition_urls("http://h/a-1024.jpg", None, limit) == ["http://h/a-1024.jpg"]


def test_one_rendition_allowed_records_the_preferred_failure_as_before(postgres_url, tmp_path, monkeypatch):
    monkeypatch.setenv("HARVEST_MAX_RENDITIONS", "1")
    with serve() as server:
        _site(server)
        base = server.base
        cfg = _config(base, postgres_url, tmp_path)
        assert cfg.max_renditions == 1
        prepare_run(cfg)
        run_crawl(cfg)
        run_extract(cfg)
        _download(cfg)
        requested = server.paths()
    cat = _candidates(cfg, base)[f"{WP}garden-cat-1024x683.jpg"]
    assert (cat.status, cat.error, cat.rendition_url) == ("failed", f"{cat.url}: HTTP 404", None)
    assert cat.renditions_failed == [{"url": cat.url, "reason": "HTTP 404"}]
    assert not [
        path for path in requested if path.endswith(("-768x512.jpg", "-300x200.jpg")) or "/330px-" in path
    ]
