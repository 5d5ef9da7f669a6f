"""Nightly runs: a second scope re-crawls the same site with conditional GETs and fetches only changes."""

from __future__ import annotations

import functools
import io
import os
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from helpers import manifest_rows
from PIL import Image as PILImage
from sqlalchemy import select

from harvest.dataset.layout import manifest_key
from harvest.demo_site import DEMO_LABELS, build_site
from harvest.pipeline import run_all
from harvest.settings.config import build_config
from harvest.state.db import session_scope
from harvest.state.models import Candidate, Image, ImageUrl, Page, Run

FIRST = "interval__2026-11-22T00:00:00+00:00"
SECOND = "interval__2026-11-23T00:00:00+00:00"
THIRD = "interval__2026-11-24T00:00:00+00:00"
IMAGES = (".jpg", ".png", ".gif")


@contextmanager
def counting_site(root: Path) -> Iterator[tuple[str, list[tuple[str, int, bool]]]]:
    """Serve ``root`` (files honour If-Modified-Since); record (path, status, conditional) per request."""
    seen: list[tuple[str, int, bool]] = []
    lock = threading.Lock()

    class Handler(SimpleHTTPRequestHandler):
        def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
            with lock:
                seen.append((self.path, int(code), "If-Modified-Since" in self.headers))

        def log_message(self, format: str, *args) -> None:  # noqa: A002 - signature from the base class
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=str(root)))
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", seen
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def _run(site: str, run_id: str, database_url: str, tmp_path: Path, classifier) -> tuple[Run, list[dict]]:
    cfg = build_config(
        {
            "seeds": [f"{site}/index.html"],
            "labels": list(DEMO_LABELS),
            "destination": str(tmp_path / "dataset"),
        },
        run_id,
        database_url=database_url,
    )
    run_all(cfg, classifier)
    with session_scope(database_url) as session:
        run = session.get(Run, run_id)
        session.expunge(run)
    rows = manifest_rows((Path(cfg.destination) / manifest_key(cfg.run_id)).read_bytes())
    return run, rows


def _by_status(seen: list[tuple[str, int, bool]], suffix: tuple[str, ...]) -> Counter:
    return Counter(status for path, status, _ in seen if path.endswith(suffix))


def _fetched(seen: list[tuple[str, int, bool]], suffix: tuple[str, ...]) -> set[str]:
    return {path for path, status, _ in seen if status == 200 and path.endswith(suffix)}


def _stored_paths(database_url: str, site: str) -> set[str]:
    with session_scope(database_url) as session:
        return {url.removeprefix(site) for url in session.scalars(select(ImageUrl.url)).all()}


def _staged_path(database_url: str, url: str) -> Path:
    with session_scope(database_url) as session:
        staging, key = session.execute(
            select(Image.staging, Image.storage_key)
            .join(ImageUrl, ImageUrl.sha256 == Image.sha256)
            .where(ImageUrl.url == url)
        ).one()
    return Path(staging) / key


def _touch_later(path: Path) -> None:
    """Move the modification time past any earlier fetch (HTTP dates have whole seconds)."""
    later = time.time() + 5
    os.utime(path, (later, later))


def _revalidated(database_url: str, run_id: str, model) -> dict[str, str | None]:
    with session_scope(database_url) as session:
        return dict(
            session.execute(select(model.url, model.revalidation).where(model.run_id == run_id)).all()
        )


def _summary(rows: list[dict]) -> set[tuple[str, str, str, float]]:
    return {(row["url"], row["sha256"], row["label"], round(row["score"], 4)) for row in rows}


def test_nightly_runs_fetch_only_what_changed(database_url, tmp_path, classifier):
    root = build_site(tmp_path / "site")
    with counting_site(root) as (site, seen):
        first, first_rows = _run(site, FIRST, database_url, tmp_path, classifier)
        assert first_rows
        first_requests = list(seen)
        assert not any(conditional for _, _, conditional in first_requests)
        seen.clear()

        second, second_rows = _run(site, SECOND, database_url, tmp_path, classifier)
        pages = _by_status(seen, (".html",))
        images = _by_status(seen, IMAGES)
        assert pages[304] == _by_status(first_requests, (".html",))[200] and pages[200] == 0
        assert images[304] > 0
        # no image bytes downloaded again, except those the first run rejected (nothing to revalidate)
        fetched_again = {path for path, status, _ in seen if status == 200 and path.endswith(IMAGES)}
        assert fetched_again == _fetched(first_requests, IMAGES) - _stored_paths(database_url, site)
        assert second.counters["crawl"]["not_modified"] == pages[304]
        assert (
            sum(
                report.get("not_modified", 0)
                for name, report in second.counters.items()
                if name.startswith("download")
            )
            == images[304]
        )
        assert _summary(second_rows) == _summary(first_rows)  # same images, labels and scores
        assert set(_revalidated(database_url, SECOND, Page).values()) == {"not_modified"}

        changed_page = root / "blog/coffee.html"
        changed_page.write_bytes(changed_page.read_bytes().replace(b"</body>", b"<p>Updated.</p></body>"))
        _touch_later(changed_page)
        _touch_later(root / "index.html")  # same bytes, newer date: fetched in full, found unchanged
        changed_image = root / "photos/flower.jpg"
        buffer = io.BytesIO()
        # mirrored: a new picture, not a near duplicate of the earlier one
        PILImage.open(changed_image).transpose(PILImage.Transpose.FLIP_LEFT_RIGHT).save(
            buffer, "JPEG", quality=90
        )
        changed_image.write_bytes(buffer.getvalue())
        _touch_later(changed_image)
        lost = _staged_path(database_url, f"{site}/photos/coffee-large.jpg")
        lost.unlink()  # staged bytes gone: nothing to stand in for a 304, so fetched in full
        seen.clear()

        _, third_rows = _run(site, THIRD, database_url, tmp_path, classifier)
    full = {path for path, status, _ in seen if status == 200 and not path.endswith("robots.txt")}
    assert full - fetched_again == {
        "/blog/coffee.html",
        "/index.html",
        "/photos/flower.jpg",
        "/photos/coffee-large.jpg",
    }
    assert lost.is_file()
    pages = _revalidated(database_url, THIRD, Page)
    assert pages[f"{site}/blog/coffee.html"] is None
    assert pages[f"{site}/index.html"] == "unchanged"
    assert all(
        v == "not_modified" for url, v in pages.items() if not url.endswith(("coffee.html", "index.html"))
    )
    candidates = _revalidated(database_url, THIRD, Candidate)
    assert candidates[f"{site}/photos/flower.jpg"] is None
    assert candidates[f"{site}/photos/coffee-large.jpg"] is None
    assert candidates[f"{site}/photos/chelsea.jpg"] == "not_modified"

    before = {row["url"]: row for row in first_rows}
    after = {row["url"]: row for row in third_rows}
    assert set(after) == set(before)
    flower = f"{site}/photos/flower.jpg"
    assert after[flower]["sha256"] != before[flower]["sha256"]  # the new bytes are a new image
    assert after[flower]["label"] == before[flower]["label"]
    for url in set(before) - {flower}:
        assert after[url]["sha256"] == before[url]["sha256"]


def test_earlier_downloads_of_a_url_are_found_by_index(postgres_url):
    """The download stage asks, per chunk of candidates, which URLs other runs fetched; with a
    history of 50,000 image URLs Postgres must answer from the index, not by scanning them."""
    from sqlalchemy import create_engine, text

    from harvest.state.db import migrate

    migrate(postgres_url)
    engine = create_engine(postgres_url)
    with engine.begin() as conn:
        conn.execute(
            text("INSERT INTO runs (run_id, params, started_at, counters) VALUES ('r', '{}', now(), '{}')")
        )
        conn.execute(
            text(
                "INSERT INTO images (sha256, staging, storage_key, format, mime_type, width, height, size_bytes,"
                " first_url, created_at) SELECT md5(i::text) || md5(i::text), 's', 'k', 'JPEG', 'image/jpeg',"
                " 1, 1, 1, 'u', now() FROM generate_series(1, 50000) i"
            )
        )
        conn.execute(
            text(
                "INSERT INTO image_urls (sha256, url, host, run_id, created_at) SELECT md5(i::text) || md5(i::text),"
                " 'http://h/' || i || '.jpg', 'h', 'r', now() FROM generate_series(1, 50000) i"
            )
        )
        conn.execute(text("ANALYZE image_urls"))
        plan = "\n".join(
            row[0]
            for row in conn.execute(
                text("EXPLAIN SELECT url FROM image_urls WHERE url IN ('http://h/5.jpg', 'http://h/77.jpg')")
            )
        )
    engine.dispose()
    assert "ix_image_urls_url" in plan, plan
