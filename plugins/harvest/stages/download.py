"""Stage 3, image download for one shard: fetch, prove the bytes are an image, store them once.

Candidates are claimed a chunk at a time (``FOR UPDATE SKIP LOCKED`` on Postgres) and fetched by a
thread pool; bytes are written to the content-addressed staging store before the rows that point at
them, so a crash in between only leaves a file that the retry reuses.
"""

from __future__ import annotations

import itertools
import logging
import os
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from urllib.parse import urlsplit

from sqlalchemy import Row, bindparam, func, or_, select, update
from sqlalchemy.orm import Session

import harvest
from harvest.dataset.quota import close_met_labels, labels_with_quota_met
from harvest.images.decoding import BUDGET, MB, BudgetExceeded, DecodeBudget
from harvest.images.imagecheck import (
    FORMATS,
    MAX_PIXELS,
    ImageRejected,
    Inspected,
    inspect_image,
    inspection_cost,
    read_answer,
    sniff,
    stage_inspected,
    write_frame,
)
from harvest.images.rows import image_row
from harvest.pages.prefilter import apply_prefilter
from harvest.report import StageReport
from harvest.settings.config import HarvestConfig
from harvest.state.db import session_scope
from harvest.state.models import Candidate, Image, ImageUrl, Status, utcnow
from harvest.storage import LocalStore, Store, open_store
from harvest.web.client import make_client
from harvest.web.http import NOT_MODIFIED as HTTP_NOT_MODIFIED
from harvest.web.http import FetchError, HttpClient
from harvest.web.revalidate import NOT_MODIFIED, Known, known_images

__all__ = ["FORMATS", "MAX_PIXELS", "ImageRejected", "Inspected", "inspect_image", "run_download", "sniff"]

log = logging.getLogger(__name__)

CHUNK = 64
#: Chunks claimed at once: the oldest is recorded when all of its downloads are done, while the
#: pool works on the others, so one slow server holds back its own chunk's rows and nothing else.
MAX_OPEN_CLAIMS = 4


class _Inspector:
    """One inspecting process and the tickets of the requests written to it whose answers are not
    read yet, in the order written (the process answers in that order)."""

    def __init__(self, process: subprocess.Popen):
        self.process = process
        #: guards ``waiting`` and ``dead``
        self.turn = threading.Lock()
        #: (ticket, set when the ticket's answer is next, or the process died)
        self.waiting: deque[tuple[int, threading.Event]] = deque()
        #: serialises writers, so that each request lands whole and in ticket order
        self.writing = threading.Lock()
        #: requests sent or about to be (kept under _Inspectors._room)
        self.load = 0
        self.dead = False


class _Inspectors:
    """Processes that decode, hash and describe downloaded bytes beside the download threads, which
    would otherwise take turns with them for the interpreter lock. Each process has its own pipes;
    a download thread writes its bytes to the least busy process and reads its own answer when its
    turn comes, so there is no broker thread and no pickling in between. Requests queue in a
    process's pipe: it starts on the next image as soon as it has answered one, instead of idling
    until a download thread wakes up to send more (a limit of 2 or 4 queued requests per process
    measured slower than none: the threads then wait for room as well). Started with
    ``python -c``: a child imports only Pillow, NumPy and the inspection code, not whatever the
    parent's main module pulls in. Given a local ``staging`` folder, they also write the bytes they
    accept into it.

    Memory: each request reserves its decode cost (read from the image's header) from this
    process's decode budget before it is sent, and holds it until its answer is read, so the
    processes together never decode more than one budget's worth, however many there are; each
    process decodes one image at a time, and refuses one whose pixels exceed what its header
    declared (the reservation could then be too small)."""

    def __init__(
        self,
        count: int,
        min_width: int,
        min_height: int,
        staging: str | None = None,
        max_pixels: int = MAX_PIXELS,
        budget: DecodeBudget = BUDGET,
    ):
        package_root = str(Path(harvest.__file__).resolve().parents[1])
        path = os.environ.get("PYTHONPATH")
        self._env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join([package_root] + ([path] if path else [])),
            # the hash's matrix products are 8x32 by 32x32: a BLAS thread pool never pays for itself
            # there, and OpenBLAS starting one per core costs each process ~70 ms of CPU at import
            **dict.fromkeys(("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"), "1"),
        }
        self._max_pixels = max_pixels
        self._budget = budget
        self._command = [
            sys.executable,
            "-c",
            "from harvest.images.imagecheck import serve_inspections; "
            f"serve_inspections({min_width}, {min_height}, {staging!r}, {max_pixels}, {budget.capacity})",
        ]
        self._tickets = itertools.count()
        #: guards the list of processes and their loads; notified when a dead one's replacement is in
        self._room = threading.Condition()
        self._inspectors: list[_Inspector] = [_Inspector(self._start()) for _ in range(count)]
        #: replacements of dead processes under way
        self._starting = 0
        self._closed = False

    @property
    def _processes(self) -> list[subprocess.Popen]:
        return [inspector.process for inspector in self._inspectors]

    def _start(self) -> subprocess.Popen:
        process = subprocess.Popen(
            self._command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=self._env
        )
        for stream in (process.stdin, process.stdout):
            _widen(stream)
        return process

    def _enter(self) -> _Inspector:
        """The live process with the fewest requests queued (waiting while a dead one is replaced)."""
        with self._room:
            while True:
                if self._closed:
                    raise RuntimeError("inspecting processes used after they were stopped")
                if not self._inspectors and not self._starting:
                    raise RuntimeError("no inspecting process could be started")
                inspector = min(self._inspectors, key=lambda each: each.load, default=None)
                if inspector is not None:
                    inspector.load += 1
                    return inspector
                self._room.wait()  # for the replacement of a dead process

    def _queue(self, inspector: _Inspector) -> tuple[int, threading.Event]:
        """A ticket for the request about to be written (the caller holds ``inspector.writing``, so
        tickets queue in the order of the bytes), and an event set when its answer is the next one
        out (only that thread is woken) or the process died."""
        with inspector.turn:
            ticket, event = next(self._tickets), threading.Event()
            inspector.waiting.append((ticket, event))
            if len(inspector.waiting) == 1 or inspector.dead:
                event.set()
        return ticket, event

    def _leave(self, inspector: _Inspector, ticket: int | None) -> None:
        with self._room:
            inspector.load -= 1
        with inspector.turn:
            for index, (queued, _event) in enumerate(inspector.waiting):
                if queued == ticket:
                    del inspector.waiting[index]
                    break
            if inspector.waiting:
                inspector.waiting[0][1].set()

    def _replace(self, inspector: _Inspector) -> int | None:
        """Put a fresh process in place of one that died (once, whoever notices first); every
        request still waiting on the dead one is woken to go elsewhere. Returns how it ended."""
        with self._room:
            with inspector.turn:
                inspector.dead = True
                for _ticket, event in inspector.waiting:
                    event.set()
            current = inspector in self._inspectors
            if current:
                self._inspectors.remove(inspector)
                self._starting += 1
        if current:
            _stop(inspector.process)
            fresh = None
            try:
                fresh = _Inspector(self._start())
            finally:
                with self._room:
                    self._starting -= 1
                    if fresh is not None and self._closed:
                        _stop(fresh.process)
                    elif fresh is not None:
                        self._inspectors.append(fresh)
                    self._room.notify_all()
        return inspector.process.returncode

    def inspect(self, data: bytes) -> Inspected:
        """Like inspect_image(), with the decode's cost reserved here until the answer is in."""
        try:
            cost = inspection_cost(data, sniff(data), self._max_pixels)
        except ImageRejected:
            cost = 0  # not an image: the inspecting process says so before decoding anything
        try:
            with self._budget.reserve(cost):
                return self._inspect_elsewhere(data)
        except BudgetExceeded as exc:
            raise ImageRejected(str(exc)) from None

    def _inspect_elsewhere(self, data: bytes) -> Inspected:
        """The answer of an inspecting process. Bytes that kill the inspecting process get a second
        process; if that one dies too, the bytes are rejected (a decoder crash must not stop the
        stage). Requests queued behind the one that killed a process are sent again without
        counting an attempt."""
        attempt = 0
        while True:
            inspector, ticket = self._enter(), None
            try:
                with inspector.writing:
                    ticket, turn = self._queue(inspector)
                    write_frame(inspector.process.stdin, data)
                turn.wait()
                culprit = False  # if woken because the process died on a request before this one
                if not inspector.dead:
                    inspected = read_answer(inspector.process.stdout, data)
                    self._leave(inspector, ticket)
                    return inspected
            except ImageRejected:
                self._leave(inspector, ticket)
                raise
            except (EOFError, OSError, ValueError):
                with inspector.turn:  # it died on this request if it was the one in work (and is
                    # not already known dead: then the request behind it only found the pipe closed)
                    head = not inspector.waiting or inspector.waiting[0][0] == ticket
                    culprit = head and not inspector.dead
            code = self._replace(inspector)  # first: the requests queued behind go elsewhere
            self._leave(inspector, ticket)
            if culprit:
                attempt += 1
                if attempt == 2:
                    raise ImageRejected(
                        f"not a decodable image (the inspecting process died twice on it, exit code {code})"
                    ) from None

    def close(self) -> None:
        with self._room:
            self._closed = True
            inspectors, self._inspectors = self._inspectors, []
            self._room.notify_all()
        for inspector in inspectors:
            _stop(inspector.process)


#: a pipe this large takes a whole typical image in one write, without waiting for the reader
PIPE_BYTES = 1024 * 1024


def _widen(stream) -> None:
    """Grow a pipe's buffer where the platform allows it (Linux); the default 64 KiB would make the
    writer of a larger image wait for the reader part of the way."""
    try:
        import fcntl

        fcntl.fcntl(stream.fileno(), fcntl.F_SETPIPE_SZ, PIPE_BYTES)
    except (ImportError, AttributeError, OSError):
        pass


def _stop(process: subprocess.Popen) -> None:
    """Close the process's input (it exits at the end of it) and reap it; kill it if it hangs."""
    for stream in (process.stdin, process.stdout):
        try:
            stream.close()
        except OSError:
            pass
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def _inspect(data: bytes, cfg: HarvestConfig, inspectors: _Inspectors | None) -> Inspected:
    if inspectors is None:
        return inspect_image(data, cfg.min_width, cfg.min_height, cfg.max_pixels)
    return inspectors.inspect(data)


@dataclass(frozen=True)
class NotModified:
    """An earlier run's download of the URL, confirmed by a 304: its staged bytes stand."""

    sha256: str


def _work(
    client: HttpClient,
    store: Store,
    cfg: HarvestConfig,
    url: str,
    processes: _Inspectors | None = None,
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
    if inspected.staged:  # by the inspecting process: the stage's next sync covers it
        store.adopt(*dict.fromkeys(key for key in (inspected.staging_key, inspected.clean_key) if key))
    else:
        stage_inspected(store, inspected)
    # staged: the chunk's rows need only the description (and the copy's hash) until they are written
    inspected.data, inspected.clean_data = b"", None
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
                    Candidate.error.like("%deferred to a later run%"),  # Crawl-delay over the cap
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
    BUDGET.resize(cfg.decode_budget_mb * MB)  # shared by the download threads and inspecting processes
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
        _inspection_processes(inspection_processes(cfg.inspect_processes, total), cfg, store) as processes,
        ThreadPoolExecutor(max_workers=cfg.download_threads, thread_name_prefix=f"dl{shard}") as pool,
        store.deferred_sync(),
    ):
        window: deque[_Claim] = deque()  # claimed chunks, oldest first, each in its open transaction
        progress = _Progress()
        exhausted = False
        try:
            while True:
                # quotas count finished downloads: with a quota, each chunk is recorded before the next
                while window and (cfg.quota or window[0].pending == 0):
                    _finish(window.popleft(), store, cfg, report)
                    _log_progress(shard, total, started, report)
                if not exhausted and len(window) < MAX_OPEN_CLAIMS and progress.unsettled <= CHUNK:
                    claim = _claim(cfg, shard, {c.id for open_ in window for c in open_.chunk})
                    if claim is None:
                        exhausted = True
                    else:
                        known = known_images(
                            cfg.database_url, cfg.run_id, store.location, [c.url for c in claim.chunk]
                        )
                        claim.futures = [
                            pool.submit(_timed, _work, client, store, cfg, c.url, processes, known.get(c.url))
                            for c in claim.chunk
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


#: With HARVEST_INSPECT_PROCESSES unset ("auto"), a shard with at least this many candidates is
#: inspected in processes; for fewer, starting them costs more than they save.
PROCESSES_FROM = 256


def inspection_processes(setting: int | None, pending: int) -> int:
    """How many inspecting processes a shard gets: the setting when it names a number, else one per
    core the process may run on, up to 4, when there are two cores or more and work enough."""
    if setting is not None:
        return setting
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    return min(cores, 4) if cores >= 2 and pending >= PROCESSES_FROM else 0


@contextmanager
def _inspection_processes(count: int, cfg: HarvestConfig, store: Store) -> Iterator[_Inspectors | None]:
    """Decoding and hashing hold the interpreter lock for part of their time; with ``count`` > 0 they
    run in that many processes instead, beside the download threads (and with a local staging
    store, the processes write the bytes too)."""
    if count <= 0:
        yield None
        return
    staging = store.location if isinstance(store, LocalStore) else None
    inspectors = _Inspectors(count, cfg.min_width, cfg.min_height, staging, cfg.max_pixels)
    try:
        yield inspectors
    finally:
        inspectors.close()


@dataclass
class _Claim:
    stack: ExitStack
    session: Session
    #: (id, url, attempts, priority) rows: plain tuples are several times cheaper than ORM objects
    chunk: list[Row]
    futures: list[Future] = field(default_factory=list)
    #: of the futures, those not done yet (kept by _Progress)
    pending: int = 0


def _claim(cfg: HarvestConfig, shard: int, in_flight: set[int]) -> _Claim | None:
    """The next chunk of pending candidates, promoted ones first, locked (SKIP LOCKED) in a transaction
    left open; ``in_flight`` are the ids of the chunk still being downloaded (SQLite has no row locks)."""
    stack = ExitStack()
    session = stack.enter_context(session_scope(cfg.database_url))
    try:
        query = (
            select(Candidate.id, Candidate.url, Candidate.attempts, Candidate.priority)
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
        self.unsettled = 0
        self.changed = threading.Event()

    def track(self, claim: _Claim) -> None:
        with self._lock:
            claim.pending = len(claim.futures)
            self.unsettled += claim.pending
        for future in claim.futures:
            future.add_done_callback(partial(self._done, claim))

    def _done(self, claim: _Claim, _future: Future) -> None:
        with self._lock:
            claim.pending -= 1
            self.unsettled -= 1
            wake = claim.pending == 0 or self.unsettled == CHUNK
        if wake:
            self.changed.set()


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
    session, store: Store, cfg: HarvestConfig, chunk: list[Row], results: list, report: StageReport
) -> None:
    """Rows for a whole chunk in a few statements: images and their URLs first, then the candidates
    that point at them (one statement per row would cost more than the download itself)."""
    timings = results
    results = [result for result, _ in timings]
    inspected: dict[str, tuple[Row, Inspected]] = {}
    for candidate, result in zip(chunk, results, strict=True):
        if isinstance(result, Inspected):
            inspected.setdefault(result.sha256, (candidate, result))  # first URL in claim order
    now = utcnow()
    if inspected:
        known = set(session.scalars(select(Image.sha256).where(Image.sha256.in_(list(inspected)))).all())
        rows = [image_row(store, cfg, c.url, r) for sha, (c, r) in inspected.items() if sha not in known]
        _insert_many(session, Image, rows, ["sha256"])
        host = lambda url: (urlsplit(url).hostname or "").lower()  # noqa: E731
        urls = [
            {"sha256": r.sha256, "url": c.url, "host": host(c.url), "run_id": cfg.run_id, "created_at": now}
            for c, r in zip(chunk, results, strict=True)
            if isinstance(r, Inspected)
        ]
        _insert_many(session, ImageUrl, urls, ["sha256", "url"])
    updates = [
        {
            **_outcome(result, report),
            "_id": candidate.id,
            "attempts": candidate.attempts + 1,
            "elapsed_ms": ms,
            "updated_at": now,
        }
        for candidate, (result, ms) in zip(chunk, timings, strict=True)
    ]
    session.connection().execute(_CANDIDATE_UPDATE, updates)


#: one UPDATE for every candidate of a chunk, sent as a single executemany
_CANDIDATE_UPDATE = (
    update(Candidate.__table__)
    .where(Candidate.__table__.c.id == bindparam("_id"))
    .values(
        {
            **{
                name: bindparam(name)
                for name in ("status", "error", "revalidation", "attempts", "elapsed_ms", "updated_at")
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


def _outcome(result, report: StageReport) -> dict:
    """The candidate's new status, image and error for one result; counted in the report."""
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
