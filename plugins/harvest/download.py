"""Stage 3, image download for one shard: fetch, prove the bytes are an image, store them once.

Candidates are claimed a chunk at a time (``FOR UPDATE SKIP LOCKED`` on Postgres) and fetched by a
thread pool; bytes are written to the content-addressed staging store before the rows that point at
them, so a crash in between only leaves a file that the retry reuses.
"""

from __future__ import annotations

import hashlib
import io
import logging
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from PIL import Image as PILImage
from sqlalchemy import or_, select, update

from harvest.config import HarvestConfig
from harvest.crawl import make_client
from harvest.http import FetchError, HttpClient
from harvest.prefilter import apply_prefilter
from harvest.quota import close_met_labels, labels_with_quota_met
from harvest.report import StageReport
from harvest.state.db import insert_ignore, session_scope
from harvest.state.models import Candidate, Image, Status, utcnow
from harvest.storage import Store, open_store

log = logging.getLogger(__name__)

CHUNK = 64
MAX_PIXELS = 64_000_000
FORMATS = {
    "JPEG": ("jpg", "image/jpeg"),
    "PNG": ("png", "image/png"),
    "GIF": ("gif", "image/gif"),
    "WEBP": ("webp", "image/webp"),
    "BMP": ("bmp", "image/bmp"),
    "TIFF": ("tif", "image/tiff"),
}


class ImageRejected(Exception):
    """The bytes are not an image we keep; the message is the recorded reason."""


@dataclass
class Inspected:
    sha256: str
    format: str
    width: int
    height: int
    data: bytes

    @property
    def extension(self) -> str:
        return FORMATS[self.format][0]

    @property
    def mime_type(self) -> str:
        return FORMATS[self.format][1]

    @property
    def staging_key(self) -> str:
        return f"images/{self.sha256[:2]}/{self.sha256}.{self.extension}"


def inspect_image(data: bytes, min_width: int, min_height: int) -> Inspected:
    """Decode fully with Pillow (verify() alone misses truncated files) and apply the size floor."""
    if not data:
        raise ImageRejected("empty body")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", PILImage.DecompressionBombWarning)
            with PILImage.open(io.BytesIO(data)) as probe:
                probe.verify()
            with PILImage.open(io.BytesIO(data)) as image:
                fmt = image.format or ""
                width, height = image.size
                if width * height > MAX_PIXELS:
                    raise ImageRejected(f"too many pixels ({width}x{height})")
                image.load()
    except ImageRejected:
        raise
    except (PILImage.DecompressionBombError, PILImage.DecompressionBombWarning) as exc:
        raise ImageRejected(f"decompression bomb: {exc}") from exc
    except Exception as exc:
        raise ImageRejected(f"not a decodable image ({type(exc).__name__}: {exc})") from exc
    if fmt not in FORMATS:
        raise ImageRejected(f"unsupported image format {fmt or 'unknown'}")
    if width < min_width or height < min_height:
        raise ImageRejected(f"too small ({width}x{height} < {min_width}x{min_height})")
    return Inspected(hashlib.sha256(data).hexdigest(), fmt, width, height, data)


def _work(client: HttpClient, cfg: HarvestConfig, url: str) -> Inspected | FetchError | ImageRejected:
    try:
        result = client.get(url, cfg.max_image_bytes, accept="image/*,*/*;q=0.5")
        return inspect_image(result.body, cfg.min_width, cfg.min_height)
    except (FetchError, ImageRejected) as exc:
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
    screened = apply_prefilter(cfg, shard)
    report.skipped += screened.skipped
    report.reasons.update(screened.reasons)
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
                    .limit(min(CHUNK, cfg.download_threads) if cfg.quota else CHUNK)
                    .with_for_update(skip_locked=True)
                )
                full = labels_with_quota_met(cfg)
                if full:
                    query = query.where(
                        or_(Candidate.label_hint.is_(None), Candidate.label_hint.not_in(full))
                    )
                chunk = session.scalars(query).all()
                if not chunk:
                    break
                results = list(pool.map(lambda c: _work(client, cfg, c.url), chunk))
                for candidate, result in zip(chunk, results, strict=True):
                    _record(session, store, candidate, result, report)
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
    if cfg.quota:
        close_met_labels(cfg, shard)
    log.info("%s", report)
    return report


def _record(session, store: Store, candidate: Candidate, result, report: StageReport) -> None:
    candidate.attempts += 1
    candidate.updated_at = utcnow()
    if isinstance(result, Inspected):
        if session.get(Image, result.sha256) is None:
            if not store.exists(result.staging_key):
                store.put(result.staging_key, result.data, result.mime_type)
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
                    }
                ],
                ["sha256"],
            )
            session.flush()
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
