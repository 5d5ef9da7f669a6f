"""Stage 3, image download for one shard: fetch, prove the bytes are an image, store them once.

Candidates are claimed a chunk at a time (``FOR UPDATE SKIP LOCKED`` on Postgres) and fetched by a
thread pool; bytes are written to the content-addressed staging store before the rows that point at
them, so a crash in between only leaves a file that the retry reuses.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from functools import partial
from urllib.parse import urlsplit

from sqlalchemy import Row, bindparam, func, or_, select, update
from sqlalchemy.orm import Session

from harvest.dataset.quota import close_met_labels, labels_with_quota_met
from harvest.images.decoding import BUDGET, MB
from harvest.images.imagecheck import (
    FORMATS,
    MAX_PIXELS,
    ImageRejected,
    Inspected,
    inspect_image,
    sniff,
    stage_inspected,
)
from harvest.images.inspectors import InspectorPool, inspection_processes
from harvest.images.rows import image_row
from harvest.licences import rejection, resolve
from harvest.pages.prefilter import apply_prefilter
from harvest.report import StageReport
from harvest.settings.config import HarvestConfig
from harvest.state.db import session_scope
from harvest.state.models import Candidate, Image, ImageUrl, Status, utcnow
from harvest.state.retry import candidate_failure_may_pass, reopen_failed
from harvest.state.shards import buckets, in_shard, run_shards
from harvest.storage import LocalStore, Store, open_store
from harvest.web.client import make_client, record_paces
from harvest.web.http import NOT_MODIFIED as HTTP_NOT_MODIFIED
from harvest.web.http import FetchError, HttpClient
from harvest.web.optout import OptOut, from_headers
from harvest.web.politeness import HostBusy, patience
from harvest.web.revalidate import NOT_MODIFIED, Known, known_images
from harvest.web.robots import agent_token

__all__ = ["FORMATS", "MAX_PIXELS", "ImageRejected", "Inspected", "inspect_image", "run_download", "sniff"]

log = logging.getLogger(__name__)

CHUNK = 64
#: Candidate.source of the images a URL list names (harvest.stages.sources)
URL_LIST = "url_list"
#: renditions of one candidate tried at most in one download, by default: its preferred URL, then
#: its variants (HARVEST_MAX_RENDITIONS)
MAX_RENDITIONS = 4
#: Chunks claimed at once: the oldest is recorded when all of its downloads are done, while the
#: pool works on the others, so one slow server holds back its own chunk's rows and nothing else.
MAX_OPEN_CLAIMS = 4
#: On the first pass over a shard, a download whose host's next turn is further away than this (a
#: Retry-After, a long Crawl-delay, a throttled host) steps aside: its candidate stays pending and is
#: taken up once the rest of the shard is done, so one slow host holds no thread and no chunk of rows
#: while other hosts have work.
PATIENCE_SECONDS = 2.0


def _inspect(data: bytes, cfg: HarvestConfig, inspectors: InspectorPool | None) -> Inspected:
    if inspectors is None:
        return inspect_image(data, cfg.min_width, cfg.min_height, cfg.max_pixels)
    return inspectors.inspect(data)


@dataclass(frozen=True)
class OptedOut:
    """The image's response declared an opt-out (X-Robots-Tag, tdm-reservation): not kept."""

    optout: OptOut


@dataclass(frozen=True)
class NotModified:
    """An earlier run's download of the URL, confirmed by a 304: its staged bytes stand."""

    sha256: str


def _work(
    client: HttpClient,
    store: Store,
    cfg: HarvestConfig,
    url: str,
    processes: InspectorPool | None = None,
    known: Known | None = None,
) -> Inspected | NotModified | OptedOut | FetchError | ImageRejected:
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
    if cfg.respect_optouts:
        optout = from_headers(result.headers, agent_token(cfg.user_agent), cfg.optout_directives, "the image")
        if optout is not None:
            return OptedOut(optout)
    try:
        inspected = _inspect(result.body, cfg, processes)
    except ImageRejected as exc:
        if str(exc).startswith(("not an image", "SVG")) and result.content_type:
            return ImageRejected(f"{exc} (Content-Type {result.content_type})")
        return exc
    if inspected.staged:  # by the inspecting process: the stage's next sync covers it
        store.adopt(*dict.fromkeys(key for key in (inspected.staging_key, inspected.clean_key) if key))
    else:
        stage_inspected(store, inspected)
    # staged: the chunk's rows need only the description (and the copy's hash) until they are written
    inspected.data, inspected.clean_data = b"", None
    return inspected


@dataclass(frozen=True)
class Deferred:
    """The host could not be asked soon (HostBusy): nothing was requested, the candidate stays pending."""

    host: str


@dataclass
class Renditions:
    """What one candidate's download came to: ``result`` is the served rendition's (or, when none
    served an image, the first failure to fetch, else the first rejection: a candidate is skipped
    only when every rendition was seen and none is an image), ``url`` the rendition that served the bytes,
    ``failed`` the renditions tried before it (or all of them) with their reasons."""

    result: Inspected | NotModified | OptedOut | FetchError | ImageRejected | Deferred
    url: str | None
    failed: list[dict]


def rendition_urls(url: str, variants: list[dict] | None, limit: int = MAX_RENDITIONS) -> list[str]:
    """The URLs a candidate's image can be downloaded from, in order of preference: the one extract
    chose (the largest srcset entry, the linked full-size file), then its variants in the order the
    page lists them (srcset from largest, ``src``, the thumbnail), at most ``limit``."""
    urls = [url]
    for variant in variants or []:
        other = variant.get("url") if isinstance(variant, dict) else None
        if isinstance(other, str) and other and other not in urls:
            urls.append(other)
    return urls[: max(1, limit)]


def _work_renditions(
    client: HttpClient,
    store: Store,
    cfg: HarvestConfig,
    urls: list[str],
    processes: InspectorPool | None = None,
    known: dict[str, Known] | None = None,
    ask_tdmrep: bool = False,
    wait_at_most: float | None = None,
) -> Renditions:
    """Each rendition in turn, through the same client (guard, robots, politeness), until one
    serves an image: a 4xx, a timeout, a page served as an image or a picture too small moves on.
    ``ask_tdmrep``: the image came from a URL list, not a page, so no extraction asked its
    origin's tdmrep.json; it is asked here, before the image is requested. ``wait_at_most``: the
    longest wait for a host's turn before the candidate is :class:`Deferred` (None: no limit)."""
    try:
        with patience(wait_at_most):
            return _try_renditions(client, store, cfg, urls, processes, known, ask_tdmrep)
    except HostBusy as busy:
        return Renditions(Deferred(busy.host), None, [])


def _try_renditions(
    client: HttpClient,
    store: Store,
    cfg: HarvestConfig,
    urls: list[str],
    processes: InspectorPool | None,
    known: dict[str, Known] | None,
    ask_tdmrep: bool,
) -> Renditions:
    failed: list[dict] = []
    first = None
    reserved = client.tdmrep.verdict(urls[0]) if ask_tdmrep and client.tdmrep is not None else None
    if reserved is not None:
        return Renditions(OptedOut(reserved), None, failed)
    for url in urls:
        result = _work(client, store, cfg, url, processes, (known or {}).get(url))
        if isinstance(result, Inspected | NotModified):
            return Renditions(result, url, failed)
        if isinstance(result, OptedOut):  # the site's word covers every rendition of the image
            return Renditions(result, None, failed)
        if first is None or (isinstance(result, FetchError) and not isinstance(first, FetchError)):
            first = result
        reason = result.reason if isinstance(result, FetchError) else str(result)
        failed.append({"url": url, "reason": reason})
    return Renditions(first, None, failed)


def _timed(work, *args) -> tuple[object, int]:
    """The work's result and how long it took in milliseconds (per-domain statistics report it)."""
    started = time.monotonic()
    result = work(*args)
    return result, round((time.monotonic() - started) * 1000)


def _reopen_retryable(cfg: HarvestConfig, shard: int, shards: int) -> None:
    """On a re-run, failures that may pass (timeouts, 5xx) get another attempt, up to max_attempts."""
    reopen_failed(
        cfg.database_url,
        Candidate,
        cfg.max_attempts,
        candidate_failure_may_pass(),
        Candidate.run_id == cfg.run_id,
        in_shard(Candidate.shard, shard, shards),
    )


def run_download(cfg: HarvestConfig, shard: int, shards: int | None = None) -> StageReport:
    """Download shard ``shard`` of the run's ``shards`` (its recorded count when not given)."""
    shards = shards or run_shards(cfg)
    report = StageReport("download")
    report.extra["shard"] = shard
    if not buckets(shard, shards):  # past the run's count (a loop over the cap): nothing is in it
        return report
    _reopen_retryable(cfg, shard, shards)
    screened = apply_prefilter(cfg, shard, shards)
    report.skipped += screened.skipped
    report.reasons.update(screened.reasons)
    client = make_client(cfg)
    store = open_store(cfg.staging, cfg.s3)
    BUDGET.resize(cfg.decode_budget_mb * MB)  # shared by the download threads and inspecting processes
    with session_scope(cfg.database_url) as session:
        total = session.scalar(
            select(func.count())
            .select_from(Candidate)
            .where(
                Candidate.run_id == cfg.run_id,
                in_shard(Candidate.shard, shard, shards),
                Candidate.status == Status.PENDING,
            )
        )
    log.info("download shard %d: %d candidates pending", shard, total)
    report.total = report.skipped + total  # for a progress display: the prefilter's skips count
    started = time.monotonic()
    with (
        _inspector_pool(inspection_processes(cfg.inspect_processes, total), cfg, store) as processes,
        ThreadPoolExecutor(max_workers=cfg.download_threads, thread_name_prefix=f"dl{shard}") as pool,
        store.deferred_sync(),
    ):
        window: deque[_Claim] = deque()  # claimed chunks, oldest first, each in its open transaction
        progress = _Progress()
        exhausted = False
        # candidates whose host was busy on the first pass: left pending, taken up on the second
        deferred: set[int] = set()
        wait_at_most: float | None = PATIENCE_SECONDS
        try:
            while True:
                # quotas count finished downloads: with a quota, each chunk is recorded before the next
                while window and (cfg.quota or window[0].pending == 0):
                    deferred.update(_finish(window.popleft(), store, cfg, report))
                    _log_progress(shard, total, started, report)
                if not exhausted and len(window) < MAX_OPEN_CLAIMS and progress.downloads_unfinished <= CHUNK:
                    claim = _claim(
                        cfg, shard, shards, {c.id for open_ in window for c in open_.chunk} | deferred
                    )
                    if claim is None and not window and deferred:
                        log.info(
                            "download shard %d: %d candidates whose host was busy, now waiting for its turn",
                            shard,
                            len(deferred),
                        )
                        deferred, wait_at_most = set(), None
                        continue
                    if claim is None and not window:
                        exhausted = True
                    elif claim is None:
                        pass  # the chunks in flight may yet defer some: look again when one is recorded
                    else:
                        urls = [rendition_urls(c.url, c.variants, cfg.max_renditions) for c in claim.chunk]
                        known = known_images(
                            cfg.database_url, cfg.run_id, store.location, [u for each in urls for u in each]
                        )
                        claim.futures = [
                            pool.submit(
                                _timed,
                                _work_renditions,
                                client,
                                store,
                                cfg,
                                each,
                                processes,
                                known,
                                candidate.source == URL_LIST,
                                wait_at_most,
                            )
                            for candidate, each in zip(claim.chunk, urls, strict=True)
                        ]
                        progress.track(claim)
                        window.append(claim)
                        continue
                if not window:
                    break
                # the pool works on later chunks while the oldest is waited for and recorded, so
                # neither the DB nor one slow server leaves it idle; the loop sleeps until the oldest
                # chunk is done or the pool is down to its last chunk of work (see _Progress)
                progress.changed.wait()
                progress.changed.clear()
        finally:
            for open_claim in window:  # after an error: release the rows, record nothing
                open_claim.stack.close()
    record_paces(cfg, client)
    if cfg.quota:
        close_met_labels(cfg, shard, shards)
    if report.extra.get(NOT_MODIFIED):
        log.info(
            "download shard %d: %d images not modified since an earlier run",
            shard,
            report.extra[NOT_MODIFIED],
        )
    log.info("%s", report)
    return report


@contextmanager
def _inspector_pool(count: int, cfg: HarvestConfig, store: Store) -> Iterator[InspectorPool | None]:
    """Decoding and hashing hold the interpreter lock for part of their time; with ``count`` > 0 they
    run in that many processes instead, beside the download threads (and with a local staging
    store, the processes write the bytes too)."""
    if count <= 0:
        yield None
        return
    staging = store.location if isinstance(store, LocalStore) else None
    inspectors = InspectorPool(count, cfg.min_width, cfg.min_height, staging, cfg.max_pixels)
    try:
        yield inspectors
    finally:
        inspectors.close()


@dataclass
class _Claim:
    stack: ExitStack
    session: Session
    #: (id, url, attempts, priority, variants, license_evidence, source) rows: plain tuples are several
    #: times cheaper than ORM objects
    chunk: list[Row]
    futures: list[Future] = field(default_factory=list)
    #: of the futures, those not done yet (kept by _Progress)
    pending: int = 0


def _claim(cfg: HarvestConfig, shard: int, shards: int, in_flight: set[int]) -> _Claim | None:
    """The next chunk of pending candidates, promoted ones first, locked (SKIP LOCKED) in a transaction
    left open; ``in_flight`` are the ids of the chunk still being downloaded (SQLite has no row locks)."""
    stack = ExitStack()
    session = stack.enter_context(session_scope(cfg.database_url))
    try:
        query = (
            select(
                Candidate.id,
                Candidate.url,
                Candidate.attempts,
                Candidate.priority,
                Candidate.variants,
                Candidate.license_evidence,
                Candidate.source,
            )
            .where(
                Candidate.run_id == cfg.run_id,
                in_shard(Candidate.shard, shard, shards),
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
        chunk = session.execute(query).all()
    except BaseException:
        stack.close()
        raise
    if not chunk:
        stack.close()
        return None
    return _Claim(stack, session, list(chunk))


class _Progress:
    """Counts the downloads claimed but not finished, from the futures' callbacks, and wakes the
    stage's loop when a claim's downloads are all done or the count falls to a chunk (time to claim
    the next one): the loop sleeps in between instead of looking at every future 20 times a second."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        #: when this falls to a chunk, the next chunk is claimed
        self.downloads_unfinished = 0
        self.changed = threading.Event()

    def track(self, claim: _Claim) -> None:
        with self._lock:
            claim.pending = len(claim.futures)
            self.downloads_unfinished += claim.pending
        for future in claim.futures:
            future.add_done_callback(partial(self._done, claim))

    def _done(self, claim: _Claim, _future: Future) -> None:
        with self._lock:
            claim.pending -= 1
            self.downloads_unfinished -= 1
            wake = claim.pending == 0 or self.downloads_unfinished == CHUNK
        if wake:
            self.changed.set()


def _finish(claim: _Claim, store: Store, cfg: HarvestConfig, report: StageReport) -> set[int]:
    """Wait for the chunk's work, make its bytes durable, then write its rows and commit; returns the
    ids of the candidates deferred (left pending, unchanged)."""
    with claim.stack:
        results = [future.result() for future in claim.futures]
        deferred = {
            c.id for c, (r, _) in zip(claim.chunk, results, strict=True) if isinstance(r.result, Deferred)
        }
        store.sync()  # the chunk's bytes are on disk before any row names them
        kept = [i for i, c in enumerate(claim.chunk) if c.id not in deferred]
        chunk, results = [claim.chunk[i] for i in kept], [results[i] for i in kept]
        _record_chunk(claim.session, store, cfg, chunk, results, report)
    return deferred


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
    session, store: Store, cfg: HarvestConfig, chunk: list[Row], results: list, report: StageReport
) -> None:
    """Rows for a whole chunk in a few statements: images and their URLs first, then the candidates
    that point at them (one statement per row would cost more than the download itself)."""
    timings = results
    tried: list[Renditions] = [each for each, _ in timings]
    inspected: dict[str, tuple[str, Inspected]] = {}
    for each in tried:
        if isinstance(each.result, Inspected):
            inspected.setdefault(each.result.sha256, (each.url, each.result))  # first URL in claim order
    now = utcnow()
    if inspected:
        known = set(session.scalars(select(Image.sha256).where(Image.sha256.in_(list(inspected)))).all())
        rows = [image_row(store, cfg, url, r) for sha, (url, r) in inspected.items() if sha not in known]
        _insert_many(session, Image, rows, ["sha256"])
        host = lambda url: (urlsplit(url).hostname or "").lower()  # noqa: E731
        urls = [  # the URL that served the bytes: the rendition, not necessarily the preferred one
            {
                "sha256": each.result.sha256,
                "url": each.url,
                "host": host(each.url),
                "run_id": cfg.run_id,
                "created_at": now,
            }
            for each in tried
            if isinstance(each.result, Inspected)
        ]
        _insert_many(session, ImageUrl, urls, ["sha256", "url"])
    rights = _known_rights(session, tried)
    updates = [
        {
            **_outcome(each, report, cfg, candidate.license_evidence, rights),
            "_id": candidate.id,
            "attempts": candidate.attempts + 1,
            "elapsed_ms": ms,
            "updated_at": now,
        }
        for candidate, (each, ms) in zip(chunk, timings, strict=True)
    ]
    if updates:  # a chunk whose every candidate was deferred changes nothing
        session.connection().execute(_CANDIDATE_UPDATE, updates)


#: one UPDATE for every candidate of a chunk, sent as a single executemany
_CANDIDATE_UPDATE = (
    update(Candidate.__table__)
    .where(Candidate.__table__.c.id == bindparam("_id"))
    .values(
        {
            **{
                name: bindparam(name)
                for name in (
                    "status",
                    "error",
                    "revalidation",
                    "attempts",
                    "elapsed_ms",
                    "updated_at",
                    "rendition_url",
                    "renditions_failed",
                )
            },
            # what extraction found stays unless the download has more to say
            **{
                name: func.coalesce(
                    bindparam(name, type_=Candidate.__table__.c[name].type), Candidate.__table__.c[name]
                )
                for name in ("optout", "license", "license_evidence", "author")
            },
            # a failure leaves the image an earlier attempt recorded, as it always did
            "sha256": func.coalesce(bindparam("sha256"), Candidate.__table__.c.sha256),
        }
    )
)


def _insert_many(session, model, rows: list[dict], index_elements: list[str]) -> None:
    """INSERT ... ON CONFLICT DO NOTHING as one executemany on the table (the statement compiles
    once; the ORM's bulk path would look at every row's attributes first)."""
    if not rows:
        return
    if session.get_bind().dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    statement = insert(model.__table__).on_conflict_do_nothing(index_elements=index_elements)
    session.connection().execute(statement, rows)


def _known_rights(session, tried: list[Renditions]) -> dict[str, dict | None]:
    """The file rights of images confirmed unchanged by a 304 (their bytes were not read again)."""
    shas = [each.result.sha256 for each in tried if isinstance(each.result, NotModified)]
    if not shas:
        return {}
    return dict(session.execute(select(Image.sha256, Image.rights).where(Image.sha256.in_(shas))).all())


def _licence(
    result,
    cfg: HarvestConfig,
    page_evidence: dict | None,
    rights: dict[str, dict | None],
    source_url: str | None = None,
) -> tuple[dict, str | None]:
    """(the candidate's licence columns, why the ``licenses`` Param rejects it or None)."""
    if isinstance(result, Inspected):
        creators = [
            name
            for field_name in ("xmp_creator", "iptc_by_line", "artist")
            for name in _names(result.sensitive.get(field_name))
        ]
        resolved = resolve(page_evidence, result.rights, creators)
    elif isinstance(result, NotModified):
        resolved = resolve(page_evidence, rights.get(result.sha256))
    else:
        return {"optout": None, "license": None, "license_evidence": None, "author": None}, None
    evidence = resolved["evidence"]
    if evidence and evidence.get("scope") == "file" and not evidence.get("url"):
        evidence["url"] = source_url  # the file itself is the evidence (an IPTC notice names no page)
    columns = {
        "optout": None,
        "license": resolved["license"],
        "license_evidence": resolved["evidence"],
        "author": resolved["author"],
    }
    return columns, rejection(resolved["license"], cfg.licenses)


def _names(value) -> list[str]:
    if isinstance(value, str):
        return [value]
    return [v for v in value if isinstance(v, str)] if isinstance(value, list) else []


def _outcome(
    tried: Renditions,
    report: StageReport,
    cfg: HarvestConfig | None = None,
    page_evidence: dict | None = None,
    rights: dict[str, dict | None] | None = None,
) -> dict:
    """The candidate's new status, image, error, renditions and licence; counted in the report. An
    image whose licence the ``licenses`` Param does not keep is skipped with the reason (its bytes
    stay staged: another page may name the same image under another licence)."""
    renditions = {"rendition_url": tried.url, "renditions_failed": tried.failed or None}
    licence, rejected = (
        _licence(tried.result, cfg, page_evidence, rights or {}, tried.url) if cfg is not None else ({}, None)
    )
    if rejected:
        report.count("skipped", rejected)
        return {
            "status": Status.SKIPPED,
            "sha256": None,
            "error": rejected,
            "revalidation": None,
            **renditions,
            **licence,
        }
    if isinstance(tried.result, OptedOut):
        licence["optout"] = tried.result.optout.as_dict()
    outcome = {**_result_outcome(tried.result, report), **licence}
    if len(tried.failed) > 1 and tried.url is None:  # every rendition failed: each reason is listed
        reasons = "; ".join(f"{failed['url']}: {failed['reason']}" for failed in tried.failed)
        outcome["error"] = f"all {len(tried.failed)} renditions failed: {reasons}"
    return {**outcome, **renditions}


def _result_outcome(result, report: StageReport) -> dict:
    """The candidate's new status, image and error for one result; counted in the report."""
    if isinstance(result, OptedOut):
        report.count("skipped", result.optout.reason.split(" (")[0])
        return {"status": Status.SKIPPED, "sha256": None, "error": result.optout.reason, "revalidation": None}
    if isinstance(result, NotModified):
        report.count("done")
        report.extra[NOT_MODIFIED] = report.extra.get(NOT_MODIFIED, 0) + 1
        return {"status": Status.DONE, "sha256": result.sha256, "error": None, "revalidation": NOT_MODIFIED}
    if isinstance(result, Inspected):
        report.count("done")
        return {"status": Status.DONE, "sha256": result.sha256, "error": None, "revalidation": None}
    if isinstance(result, ImageRejected):
        report.count("skipped", str(result).split(" (")[0])
        return {"status": Status.SKIPPED, "sha256": None, "error": str(result), "revalidation": None}
    report.count("failed", result.reason)
    log.warning("download: %s", result)
    return {"status": Status.FAILED, "sha256": None, "error": str(result), "revalidation": None}
