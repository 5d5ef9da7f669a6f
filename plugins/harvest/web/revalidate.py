"""What earlier runs fetched, so a nightly run asks servers only for what changed (conditional GET).

Every run is its own scope in the state DB; without this, each nightly run would fetch every page and
image again. The most recent successful fetch of a URL in another scope gives the validators to send
(If-None-Match, If-Modified-Since); a 304 means the earlier content, already in the staging store, is
reused without a body.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from email.utils import format_datetime

from sqlalchemy import select

from harvest.state.db import session_scope
from harvest.state.models import Image, ImageUrl, Page, Status

NOT_MODIFIED = "not_modified"  # the server answered 304 to a conditional GET
UNCHANGED = "unchanged"  # the server sent the body again, with the content hash of the earlier fetch


@dataclass(frozen=True)
class Known:
    """An earlier run's successful fetch of one URL."""

    content_key: str  # staging key of the page HTML or image bytes
    etag: str | None = None
    last_modified: str | None = None
    sha256: str | None = None  # images only

    def headers(self) -> dict[str, str]:
        headers: dict[str, str] = {}
        if self.etag:
            headers["If-None-Match"] = self.etag
        if self.last_modified:
            headers["If-Modified-Since"] = self.last_modified
        return headers


def http_date(moment: datetime) -> str:
    if moment.tzinfo is None:  # SQLite hands back naive datetimes; they were stored in UTC
        moment = moment.replace(tzinfo=timezone.utc)
    return format_datetime(moment.astimezone(timezone.utc), usegmt=True)


def known_pages(database_url: str, run_id: str, urls: list[str]) -> dict[str, Known]:
    """The most recent successful fetch of each URL by another run (validators, content hash)."""
    if not urls:
        return {}
    with session_scope(database_url) as session:
        rows = session.execute(
            select(Page.url, Page.content_key, Page.etag, Page.last_modified)
            .where(
                Page.url.in_(urls),
                Page.run_id != run_id,
                Page.status == Status.DONE,
                Page.content_key.is_not(None),
            )
            .order_by(Page.fetched_at, Page.id)
        ).all()
    return {url: Known(key, etag, modified) for url, key, etag, modified in rows}  # latest wins


def known_images(database_url: str, run_id: str, staging: str, urls: list[str]) -> dict[str, Known]:
    """The latest download of each URL by another run whose bytes are in this staging store; its
    download time serves as If-Modified-Since."""
    if not urls:
        return {}
    with session_scope(database_url) as session:
        rows = session.execute(
            select(ImageUrl.url, ImageUrl.created_at, Image.sha256, Image.storage_key)
            .join(Image, Image.sha256 == ImageUrl.sha256)
            .where(ImageUrl.url.in_(urls), ImageUrl.run_id != run_id, Image.staging == staging)
            .order_by(ImageUrl.created_at, ImageUrl.id)
        ).all()
    return {
        url: Known(key, last_modified=http_date(created), sha256=sha)
        for url, created, sha, key in rows  # latest wins
    }
