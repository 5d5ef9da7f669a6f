"""One takedown from request to audit record.

The request's key (what it removes) names its audit row: a second run of the same request finds the
row finished and does nothing (Airflow retries, a cleared task, an operator triggering it twice); a
run that died half way finds it unfinished and does the rest, every step being safe to repeat.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select, update

from harvest.settings.config import S3Options
from harvest.state.db import chunks, insert_ignore, migrate, session_scope
from harvest.state.models import Candidate, Image, ImageUrl, Publication, Takedown, utcnow
from harvest.storage import StorageError, Stores
from harvest.takedown.blocklist import DOMAIN, PAGE, SHA256, URL, add_entries
from harvest.takedown.clean import clean_destination
from harvest.takedown.match import match_images
from harvest.takedown.request import TakedownRequest

log = logging.getLogger(__name__)


@dataclass
class TakedownResult:
    takedown_id: int
    #: True when an earlier run of the same request had done it all: nothing was touched now
    already_done: bool
    images: list[dict] = field(default_factory=list)
    #: destination -> {"before": n, "after": n, "deleted": [...], "manifests": [...], "exports": {...}}
    destinations: dict[str, dict[str, Any]] = field(default_factory=dict)
    blocked: int = 0
    staging_deleted: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "takedown_id": self.takedown_id,
            "already_done": self.already_done,
            "images": len(self.images),
            "blocked": self.blocked,
            "staging_deleted": self.staging_deleted,
            "destinations": {
                dest: {"before": d["before"], "after": d["after"], "deleted": len(d["deleted"])}
                for dest, d in self.destinations.items()
            },
        }


def _open_record(
    database_url: str, request: TakedownRequest, triggered_by: str | None, run_id: str | None
) -> Takedown:
    with session_scope(database_url) as session:
        insert_ignore(
            session,
            Takedown,
            [
                {
                    "request_key": request.key,
                    "request": request.scope(),
                    "reason": request.reason,
                    "requested_by": request.requested_by or None,
                    "triggered_by": triggered_by,
                    "run_id": run_id,
                    "started_at": utcnow(),
                }
            ],
            ["request_key"],
        )
        return session.scalars(select(Takedown).where(Takedown.request_key == request.key)).one()


def _image_facts(database_url: str, shas: list[str]) -> dict[str, dict]:
    """What a takedown needs of each image: its published hash, phash, staged keys, every URL."""
    facts: dict[str, dict] = {}
    with session_scope(database_url) as session:
        for chunk in chunks(shas, 500):
            for row in session.execute(
                select(
                    Image.sha256,
                    Image.clean_sha256,
                    Image.phash,
                    Image.staging,
                    Image.storage_key,
                    Image.clean_key,
                ).where(Image.sha256.in_(chunk))
            ):
                facts[row.sha256] = {**row._asdict(), "urls": set(), "destinations": set()}
            for sha256, url in session.execute(
                select(ImageUrl.sha256, ImageUrl.url).where(ImageUrl.sha256.in_(chunk))
            ):
                facts[sha256]["urls"].add(url)
            for sha256, url, rendition in session.execute(
                select(Candidate.sha256, Candidate.url, Candidate.rendition_url).where(
                    Candidate.sha256.in_(chunk)
                )
            ):
                facts[sha256]["urls"].update(u for u in (url, rendition) if u)
            for sha256, destination in session.execute(
                select(Publication.sha256, Publication.destination)
                .where(Publication.sha256.in_(chunk))
                .distinct()
            ):
                facts[sha256]["destinations"].add(destination)
    return facts


def _block(database_url: str, takedown_id: int, request: TakedownRequest, facts: dict[str, dict]) -> int:
    entries: list[tuple[str, str, str | None]] = []
    entries += [(URL, url, None) for url in request.image_urls]
    entries += [(PAGE, url, None) for url in request.page_urls]
    entries += [(DOMAIN, domain, None) for domain in request.domains]
    entries += [(SHA256, sha, None) for sha in request.sha256s if sha not in facts]
    for sha256, fact in facts.items():
        entries.append((SHA256, sha256, fact["phash"]))
        if fact["clean_sha256"] and fact["clean_sha256"] != sha256:
            entries.append((SHA256, fact["clean_sha256"], fact["phash"]))
        entries += [(URL, url, None) for url in fact["urls"]]
    # an entry named twice (the request's own sha256 and the image's) keeps its phash
    best: dict[tuple[str, str], str | None] = {}
    for kind, value, phash in entries:
        best[(kind, value)] = best.get((kind, value)) or phash
    with session_scope(database_url) as session:
        return add_entries(session, takedown_id, [(k, v, p) for (k, v), p in best.items()])


def _delete_staged(s3: S3Options | None, facts: dict[str, dict]) -> int:
    """Delete the downloaded bytes and the clean copy from staging."""
    stores = Stores(s3)
    deleted = 0
    for fact in facts.values():
        store = stores(fact["staging"])
        for key in {fact["storage_key"], fact["clean_key"]} - {None}:
            try:
                if store.exists(key):
                    store.delete(key)
                    deleted += 1
            except StorageError as exc:  # the staging area may be gone with its machine: noted, not fatal
                log.warning("takedown: cannot delete staged copy %s: %s", exc.location, exc.reason)
    return deleted


def run_takedown(
    database_url: str,
    request: TakedownRequest,
    s3: S3Options | None = None,
    triggered_by: str | None = None,
    run_id: str | None = None,
) -> TakedownResult:
    """Take the request's images down everywhere, block them for later runs, and record it all."""
    migrate(database_url)
    record = _open_record(database_url, request, triggered_by, run_id)
    if record.finished_at is not None:
        log.info(
            "takedown #%d (%s) was done on %s: nothing to do", record.id, request.reason, record.finished_at
        )
        return TakedownResult(record.id, True, list(record.images or []), dict(record.removed or {}))
    why = f"taken down (takedown #{record.id}): {request.reason}"
    matched = match_images(database_url, request)
    facts = _image_facts(database_url, sorted(matched))
    images = [{"sha256": sha, "why": matched[sha]} for sha in sorted(matched)]
    with session_scope(database_url) as session:
        session.execute(update(Takedown).where(Takedown.id == record.id).values(images=images))
    # blocked before anything is removed: a run publishing meanwhile already refuses them
    blocked = _block(database_url, record.id, request, facts)
    with session_scope(database_url) as session:  # the card rebuilt below counts them as taken down
        for chunk in chunks(sorted(facts), 500):
            session.execute(update(Image).where(Image.sha256.in_(chunk)).values(excluded=why))
    destinations = sorted({d for fact in facts.values() for d in fact["destinations"]})
    shas = set(facts)
    published = {f["clean_sha256"] for f in facts.values() if f["clean_sha256"]}
    removed: dict[str, dict] = dict(record.removed or {})
    for destination in destinations:
        cleaned = clean_destination(database_url, destination, s3, shas, published, why)
        earlier = removed.get(destination)
        entry = cleaned.as_dict()
        if earlier:  # a resumed run: the first attempt's count before, both attempts' deletions
            entry["before"] = earlier["before"]
            entry["deleted"] = sorted(set(earlier["deleted"]) | set(entry["deleted"]))
        removed[destination] = entry
        with session_scope(database_url) as session:
            session.execute(update(Takedown).where(Takedown.id == record.id).values(removed=dict(removed)))
    staged = _delete_staged(s3, facts)
    counts = {dest: {"before": r["before"], "after": r["after"]} for dest, r in removed.items()}
    with session_scope(database_url) as session:
        session.execute(
            update(Takedown)
            .where(Takedown.id == record.id)
            .values(removed=removed, counts=counts, finished_at=utcnow())
        )
    result = TakedownResult(record.id, False, images, removed, blocked, staged)
    log.info("takedown #%d done: %s", record.id, result.as_dict())
    return result
