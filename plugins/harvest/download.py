"""Stage 3, image download for one shard: fetch, prove the bytes are an image, store them once.

Candidates are claimed a chunk at a time (``FOR UPDATE SKIP LOCKED`` on Postgres) and fetched by a
thread pool; bytes are written to the content-addressed staging store before the rows that point at
them, so a crash in between only leaves a file that the retry reuses.
"""

from __future__ import annotations

import logging
import time
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlsplit

from sqlalchemy import or_, select, update

from harvest.config import HarvestConfig
from harvest.crawl import make_client
from harvest.http import FetchError, HttpClient
from harvest.imagecheck import FORMATS, MAX_PIXELS, ImageRejected, Inspected, inspect_image, sniff
from harvest.privacy import encrypt_private
from harvest.report import StageReport
from harvest.state.db import insert_ignore, session_scope
from harvest.state.models import Candidate, Image, ImageUrl, Status, utcnow
from harvest.storage import Store, open_store

__all__ = ["FORMATS", "MAX_PIXELS", "ImageRejected", "Inspected", "inspect_image", "run_download", "sniff"]

log = logging.getLogger(__name__)

CHUNK = 64


def _work(client: HttpClient, cfg: HarvestConfig, url: str) -> Inspected | FetchError | ImageRejected:
    try:
        result = client.get(url, cfg.max_image_bytes, accept="image/*,*/*;q=0.5")
    except FetchError as exc:
        return exc
    try:
        return inspect_image(result.body, cfg.min_width, cfg.min_height)
    except ImageRejected as exc:
        if str(exc).startswith(("not an image", "SVG")) and result.content_type:
            return ImageRejected(f"{exc} (Content-Type {result.content_type})")
        return exc


def _reopen_retryable(cfg: HarvestConfig, shard: int) -> None:
    """On a re-run, failures that may pass (timeouts, 5xx) get another attempt, up to max_attempts."""
    with session_scope(cfg.database_url) as session:
        session.execute(
            update(Candidate)
            .where(
                Candidate.run_id == cfg.run_id,
                Candidate.shard == shard,
                Candidate.status == Status.FAILED,
                Candidate.attempts < cfg.max_attempts,
                or_(
                    Candidate.error.like("%timed out%"),
                    Candidate.error.like("%connection failed%"),
                    Candidate.error.like("%HTTP 5__%"),
                    Candidate.error.like("%HTTP 429%"),
                ),
            )
            .values(status=Status.PENDING)
        )


def run_download(cfg: HarvestConfig, shard: int) -> StageReport:
    report = StageReport("download")
    report.extra["shard"] = shard
    _reopen_retryable(cfg, shard)
    client = make_client(cfg)
    store = open_store(cfg.staging, cfg.s3)
    with session_scope(cfg.database_url) as session:
        total = len(
            session.scalars(
                select(Candidate.id).where(
                    Candidate.run_id == cfg.run_id,
                    Candidate.shard == shard,
                    Candidate.status == Status.PENDING,
                )
            ).all()
        )
    log.info("download shard %d: %d candidates pending", shard, total)
    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=cfg.download_threads, thread_name_prefix=f"dl{shard}") as pool:
        while True:
            with session_scope(cfg.database_url) as session:
                query = (
                    select(Candidate)
                    .where(
                        Candidate.run_id == cfg.run_id,
                        Candidate.shard == shard,
                        Candidate.status == Status.PENDING,
                    )
                    .order_by(Candidate.id)
                    .limit(CHUNK)
                    .with_for_update(skip_locked=True)
                )
                chunk = session.scalars(query).all()
                if not chunk:
                    break
                results = list(pool.map(lambda c: _work(client, cfg, c.url), chunk))
                for candidate, result in zip(chunk, results, strict=True):
                    _record(session, store, cfg, candidate, result, report)
            processed = report.done + report.failed + report.skipped
            rate = processed / max(time.monotonic() - started, 1e-6)
            log.info(
                "download shard %d: %d/%d processed (%d stored, %d failed, %d skipped), %.1f images/s",
                shard,
                processed,
                total,
                report.done,
                report.failed,
                report.skipped,
                rate,
            )
    log.info("%s", report)
    return report


def _record(
    session, store: Store, cfg: HarvestConfig, candidate: Candidate, result, report: StageReport
) -> None:
    candidate.attempts += 1
    candidate.updated_at = utcnow()
    if isinstance(result, Inspected):
        if session.get(Image, result.sha256) is None:
            _store_image(session, store, cfg, candidate, result)
        insert_ignore(
            session,
            ImageUrl,
            [
                {
                    "sha256": result.sha256,
                    "url": candidate.url,
                    "host": (urlsplit(candidate.url).hostname or "").lower(),
                    "run_id": cfg.run_id,
                    "created_at": utcnow(),
                }
            ],
            ["sha256", "url"],
        )
        candidate.status = Status.DONE
        candidate.sha256 = result.sha256
        candidate.error = None
        report.count("done")
    elif isinstance(result, ImageRejected):
        candidate.status = Status.SKIPPED
        candidate.error = str(result)
        report.count("skipped", str(result).split(" (")[0])
    else:
        candidate.status = Status.FAILED
        candidate.error = str(result)
        report.count("failed", result.reason)
        log.warning("download: %s", result)


def _store_image(session, store: Store, cfg: HarvestConfig, candidate: Candidate, result: Inspected) -> None:
    """Bytes first (the original, and the copy without private metadata), then the row."""
    if not store.exists(result.staging_key):
        store.put(result.staging_key, result.data, result.mime_type)
    if result.clean_data is not None and not store.exists(result.clean_key):
        store.put(result.clean_key, result.clean_data, result.mime_type)
    insert_ignore(
        session,
        Image,
        [
            {
                "sha256": result.sha256,
                "staging": store.location,
                "storage_key": result.staging_key,
                "format": result.format,
                "mime_type": result.mime_type,
                "width": result.width,
                "height": result.height,
                "size_bytes": len(result.data),
                "first_url": candidate.url,
                "created_at": utcnow(),
                "mode": result.mode,
                "has_alpha": result.has_alpha,
                "phash": result.phash,
                "entropy": result.entropy,
                "orientation": result.orientation,
                "exif": result.exif or None,
                "private_fields": sorted(result.sensitive) or None,
                "exif_private": encrypt_private(result.sensitive, cfg.metadata_key),
                "clean_sha256": result.clean_sha256,
                "clean_key": result.clean_key,
                "excluded": result.clean_error,
            }
        ],
        ["sha256"],
    )
    session.flush()
