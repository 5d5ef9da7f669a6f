"""Stage 3, image download for one shard: fetch, prove the bytes are an image, store them once.

Candidates are claimed a chunk at a time (``FOR UPDATE SKIP LOCKED`` on Postgres) and fetched by a
thread pool; bytes are written to the content-addressed staging store before the rows that point at
them, so a crash in between only leaves a file that the retry reuses.
"""

from __future__ import annotations

import logging
import multiprocessing
import time
from collections.abc import Iterator
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from sqlalchemy import func, or_, select, update
from sqlalchemy.orm import Session

from harvest.config import HarvestConfig
from harvest.crawl import make_client
from harvest.http import NOT_MODIFIED as HTTP_NOT_MODIFIED
from harvest.http import FetchError, HttpClient
from harvest.imagecheck import FORMATS, MAX_PIXELS, ImageRejected, Inspected, inspect_image, sniff
from harvest.prefilter import apply_prefilter
from harvest.privacy import encrypt_private
from harvest.quota import close_met_labels, labels_with_quota_met
from harvest.report import StageReport
from harvest.revalidate import NOT_MODIFIED, Known, known_images
from harvest.state.db import session_scope
from harvest.state.models import Candidate, Image, ImageUrl, Status, utcnow
from harvest.storage import Store, open_store

__all__ = ["FORMATS", "MAX_PIXELS", "ImageRejected", "Inspected", "inspect_image", "run_download", "sniff"]

log = logging.getLogger(__name__)

CHUNK = 64


def _inspect_elsewhere(data: bytes, min_width: int, min_height: int) -> Inspected:
    """Inspection in a worker process; the bytes are not sent back, the caller has them."""
    inspected = inspect_image(data, min_width, min_height)
    inspected.data = b""
    return inspected


def _inspect(data: bytes, cfg: HarvestConfig, processes: ProcessPoolExecutor | None) -> Inspected:
    if processes is None:
        return inspect_image(data, cfg.min_width, cfg.min_height)
    inspected = processes.submit(_inspect_elsewhere, data, cfg.min_width, cfg.min_height).result()
    inspected.data = data
    return inspected


@dataclass(frozen=True)
class NotModified:
    """An earlier run's download of the URL, confirmed by a 304: its staged bytes stand."""

    sha256: str


def _work(
    client: HttpClient,
    store: Store,
    cfg: HarvestConfig,
    url: str,
    processes: ProcessPoolExecutor | None = None,
    known: Known | None = None,
) -> Inspected | NotModified | FetchError | ImageRejected:
    """Fetch, inspect and stage the bytes, in a worker thread; the row is written afterwards. A URL
    an earlier run downloaded is asked for conditionally, if its staged bytes are still there."""
    conditional = known is not None and known.sha256 is not None and store.exists(known.content_key)
    try:
        result = client.get(
            url,
            cfg.max_image_bytes,
            accept="image/*,*/*;q=0.5",
            headers=known.headers() if conditional else None,
        )
    except FetchError as exc:
        return exc
    if result.status == HTTP_NOT_MODIFIED and conditional:
        return NotModified(known.sha256)
    try:
        inspected = _inspect(result.body, cfg, processes)
    except ImageRejected as exc:
        if str(exc).startswith(("not an image", "SVG")) and result.content_type:
            return ImageRejected(f"{exc} (Content-Type {result.content_type})")
        return exc
    store.put_new(inspected.staging_key, inspected.data, inspected.mime_type)
    if inspected.clean_data is not None:
        store.put_new(inspected.clean_key, inspected.clean_data, inspected.mime_type)
    return inspected


def _timed(work, *args) -> tuple[object, int]:
    """The work's result and how long it took in milliseconds (per-domain statistics report it)."""
    started = time.monotonic()
    result = work(*args)
    return result, round((time.monotonic() - started) * 1000)


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
        total = session.scalar(
            select(func.count())
            .select_from(Candidate)
            .where(
                Candidate.run_id == cfg.run_id,
                Candidate.shard == shard,
                Candidate.status == Status.PENDING,
            )
        )
    log.info("download shard %d: %d candidates pending", shard, total)
    started = time.monotonic()
    with (
        ThreadPoolExecutor(max_workers=cfg.download_threads, thread_name_prefix=f"dl{shard}") as pool,
        _inspection_processes(cfg.inspect_processes) as processes,
        store.deferred_sync(),
    ):
        in_flight: _Claim | None = None
        claim: _Claim | None = None
        try:
            while True:
                if cfg.quota and in_flight is not None:  # quotas count finished downloads: no claiming ahead
                    _finish(in_flight, store, cfg, report)
                    in_flight = None
                    _log_progress(shard, total, started, report)
                claim = _claim(cfg, shard, {c.id for c in in_flight.chunk} if in_flight else set())
                if claim is not None:
                    known = known_images(
                        cfg.database_url, cfg.run_id, store.location, [c.url for c in claim.chunk]
                    )
                    claim.futures = [
                        pool.submit(_timed, _work, client, store, cfg, c.url, processes, known.get(c.url))
                        for c in claim.chunk
                    ]
                # the next chunk downloads while this one is recorded: the pool never waits on the DB
                if in_flight is not None:
                    _finish(in_flight, store, cfg, report)
                    in_flight = None
                    _log_progress(shard, total, started, report)
                if claim is None:
                    break
                in_flight, claim = claim, None
        finally:
            for open_claim in (in_flight, claim):  # after an error: release the rows, record nothing
                if open_claim is not None:
                    open_claim.stack.close()
    if cfg.quota:
        close_met_labels(cfg, shard)
    if report.extra.get(NOT_MODIFIED):
        log.info(
            "download shard %d: %d images not modified since an earlier run",
            shard,
            report.extra[NOT_MODIFIED],
        )
    log.info("%s", report)
    return report


@contextmanager
def _inspection_processes(count: int) -> Iterator[ProcessPoolExecutor | None]:
    """Decoding and hashing hold the interpreter lock for part of their time; with ``count`` > 0 they
    run in that many processes (started by a fork server: this process has threads) instead."""
    if count <= 0:
        yield None
        return
    with ProcessPoolExecutor(count, mp_context=multiprocessing.get_context("forkserver")) as processes:
        yield processes


@dataclass
class _Claim:
    stack: ExitStack
    session: Session
    chunk: list[Candidate]
    futures: list[Future] = field(default_factory=list)


def _claim(cfg: HarvestConfig, shard: int, in_flight: set[int]) -> _Claim | None:
    """The next chunk of pending candidates, promoted ones first, locked (SKIP LOCKED) in a transaction
    left open; ``in_flight`` are the ids of the chunk still being downloaded (SQLite has no row locks)."""
    stack = ExitStack()
    session = stack.enter_context(session_scope(cfg.database_url))
    try:
        query = (
            select(Candidate)
            .where(
                Candidate.run_id == cfg.run_id,
                Candidate.shard == shard,
                Candidate.status == Status.PENDING,
                Candidate.id.not_in(in_flight),
            )
            .order_by(Candidate.priority.desc(), Candidate.id)
            .limit(min(CHUNK, cfg.download_threads) if cfg.quota else CHUNK)
            .with_for_update(skip_locked=True)
        )
        full = labels_with_quota_met(cfg)
        if full:  # labels that reached their quota get no more downloads
            query = query.where(or_(Candidate.label_hint.is_(None), Candidate.label_hint.not_in(full)))
        chunk = session.scalars(query).all()
    except BaseException:
        stack.close()
        raise
    if not chunk:
        stack.close()
        return None
    return _Claim(stack, session, list(chunk))


def _finish(claim: _Claim, store: Store, cfg: HarvestConfig, report: StageReport) -> None:
    """Wait for the chunk's work, make its bytes durable, then write its rows and commit."""
    with claim.stack:
        results = [future.result() for future in claim.futures]
        store.sync()  # the chunk's bytes are on disk before any row names them
        _record_chunk(claim.session, store, cfg, claim.chunk, results, report)


def _log_progress(shard: int, total: int, started: float, report: StageReport) -> None:
    processed = report.done + report.failed + report.skipped
    rate = processed / max(time.monotonic() - started, 1e-6)
    reasons = "; ".join(f"{reason}: {count}" for reason, count in report.reasons.most_common(3))
    log.info(
        "download shard %d: %d/%d processed (%d stored, %d failed, %d skipped), %.1f images/s%s",
        shard,
        processed,
        total,
        report.done,
        report.failed,
        report.skipped,
        rate,
        f" [{reasons}]" if reasons else "",
    )


def _record_chunk(
    session, store: Store, cfg: HarvestConfig, chunk: list[Candidate], results: list, report: StageReport
) -> None:
    """Rows for a whole chunk in a few statements: images and their URLs first, then the candidates
    that point at them (one INSERT per row would cost more than the download itself)."""
    timings = results
    results = [result for result, _ in timings]
    inspected: dict[str, tuple[Candidate, Inspected]] = {}
    for candidate, result in zip(chunk, results, strict=True):
        if isinstance(result, Inspected):
            inspected.setdefault(result.sha256, (candidate, result))  # first URL in claim order
    if inspected:
        known = set(session.scalars(select(Image.sha256).where(Image.sha256.in_(list(inspected)))).all())
        rows = [image_row(store, cfg, c.url, r) for sha, (c, r) in inspected.items() if sha not in known]
        _insert_many(session, Image, rows, ["sha256"])
        host = lambda url: (urlsplit(url).hostname or "").lower()  # noqa: E731
        urls = [
            {
                "sha256": r.sha256,
                "url": c.url,
                "host": host(c.url),
                "run_id": cfg.run_id,
                "created_at": utcnow(),
            }
            for c, r in zip(chunk, results, strict=True)
            if isinstance(r, Inspected)
        ]
        _insert_many(session, ImageUrl, urls, ["sha256", "url"])
    for candidate, (result, elapsed_ms) in zip(chunk, timings, strict=True):
        candidate.elapsed_ms = elapsed_ms
        _record(candidate, result, report)


def _insert_many(session, model, rows: list[dict], index_elements: list[str]) -> None:
    """INSERT ... ON CONFLICT DO NOTHING as one executemany (the statement compiles once)."""
    if not rows:
        return
    if session.get_bind().dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    session.execute(insert(model).on_conflict_do_nothing(index_elements=index_elements), rows)


def _record(candidate: Candidate, result, report: StageReport) -> None:
    candidate.attempts += 1
    candidate.updated_at = utcnow()
    candidate.revalidation = None
    if isinstance(result, NotModified):
        candidate.status = Status.DONE
        candidate.sha256 = result.sha256
        candidate.error = None
        candidate.revalidation = NOT_MODIFIED
        report.count("done")
        report.extra[NOT_MODIFIED] = report.extra.get(NOT_MODIFIED, 0) + 1
    elif isinstance(result, Inspected):
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


def image_row(store: Store, cfg: HarvestConfig, first_url: str, result: Inspected) -> dict:
    """The images row for inspected bytes staged in ``store``."""
    return {
        "sha256": result.sha256,
        "staging": store.location,
        "storage_key": result.staging_key,
        "format": result.format,
        "mime_type": result.mime_type,
        "width": result.width,
        "height": result.height,
        "size_bytes": len(result.data),
        "first_url": first_url,
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
