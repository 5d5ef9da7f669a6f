"""Stage 4, batch classification: a network scores every downloaded image, streaming, in batches.

Scores are stored for every image (kept or not) keyed by model name and version, whole vector
included, so the keep/reject decision is made later, cheaply, by the publish stage and can be
re-made with other labels without running the network again. Batches are decoded and scored in
a few threads at once, so one batch's decoding overlaps another's inference and every core stays
busy, and only a bounded window of images is in memory.
TensorFlow is imported only when a classifier is built, never when the DAG file is parsed.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass

import numpy as np
from sqlalchemy import ColumnElement, exists, select

from harvest.model import scores
from harvest.model.native_log import native_stderr_as_log
from harvest.model.registry import resolve_model
from harvest.model.runtime import STORED_TOP, Classifier, decode_for_model, load_classifier, worker_cores
from harvest.report import StageReport
from harvest.settings.config import HarvestConfig
from harvest.state.db import insert_ignore, session_scope
from harvest.state.models import Candidate, Image, Prediction, Status, utcnow
from harvest.state.shards import buckets, in_shard, run_shards
from harvest.storage import StorageError, Stores

log = logging.getLogger(__name__)

#: threads reading image files from staging ahead of decoding (I/O: a local disk or S3 GETs)
READERS = 4


@dataclass
class _ClaimedPage:
    """A page of images this worker took: on Postgres their rows stay locked until scored."""

    stack: ExitStack
    waiting: set[str]


def _pending(
    database_url: str,
    run_id: str,
    key: str,
    page: int,
    claims: list[_ClaimedPage],
    shard: ColumnElement[bool],
) -> Iterator[tuple[str, str, str]]:
    """This run's downloaded images without a prediction by this model, paged by sha256 (no OFFSET);
    of the images a candidate of the ``shard`` (a condition on the candidate's bucket) found.

    A page of sha256s is read from the run's candidates (the (run_id, sha256) index walks them in
    order, the shard's bucket list filters), then their image rows are claimed (``FOR NO KEY UPDATE
    SKIP LOCKED``, which still lets predictions reference the rows) in a transaction left open in
    ``claims`` until their predictions are written. A second worker on the same or an overlapping
    shard (an image found by candidates of two shards, a retried task beside a live one) skips the
    rows claimed and takes the next page, so each image is scored once."""
    after = ""
    while True:
        with session_scope(database_url) as session:
            wanted = session.scalars(
                select(Candidate.sha256)
                .where(
                    Candidate.run_id == run_id,
                    Candidate.sha256 > after,
                    Candidate.status == Status.DONE,
                    shard,
                    ~exists().where(Prediction.sha256 == Candidate.sha256, Prediction.model == key),
                )
                .group_by(Candidate.sha256)
                .order_by(Candidate.sha256)
                .limit(page)
            ).all()
        if not wanted:
            return
        stack = ExitStack()
        session = stack.enter_context(session_scope(database_url))
        try:
            rows = session.execute(
                select(Image.sha256, Image.staging, Image.storage_key)
                .where(Image.sha256.in_(wanted))
                .order_by(Image.sha256)
                .with_for_update(skip_locked=True, key_share=True)
            ).all()
            # scored by another worker between the page's read and this lock: read again
            scored = set(
                session.scalars(
                    select(Prediction.sha256).where(
                        Prediction.model == key, Prediction.sha256.in_([row[0] for row in rows])
                    )
                ).all()
            )
        except BaseException:
            stack.close()
            raise
        mine = [(row[0], row[1], row[2]) for row in rows if row[0] not in scored]
        if mine:
            claims.append(_ClaimedPage(stack, {sha for sha, _, _ in mine}))
        else:
            stack.close()
        yield from mine
        if len(wanted) < page:
            return
        after = wanted[-1]


def _any_pending(database_url: str, run_id: str, key: str, shard: ColumnElement[bool]) -> bool:
    """Whether any downloaded image of the run (found by a candidate of the ``shard``) has no
    prediction by this model yet (one cheap query)."""
    with session_scope(database_url) as session:
        return (
            session.execute(
                select(Image.sha256)
                .where(
                    exists().where(
                        Candidate.sha256 == Image.sha256,
                        Candidate.run_id == run_id,
                        Candidate.status == Status.DONE,
                        shard,
                    ),
                    ~exists().where(Prediction.sha256 == Image.sha256, Prediction.model == key),
                )
                .limit(1)
            ).first()
            is not None
        )


def _release(claims: list[_ClaimedPage], scored: set[str]) -> None:
    """Commit the claims whose images all have their predictions written."""
    for claim in list(claims):
        claim.waiting -= scored
        if not claim.waiting:
            claims.remove(claim)
            claim.stack.close()


def ahead(items: Iterable, work: Callable, pool: ThreadPoolExecutor, window: int) -> Iterator:
    """``map(work, items)`` in order, with up to ``window`` items being worked on in the pool ahead.
    After an error, the work queued behind is cancelled (with the store down it would only fail too)."""
    queue: deque[Future] = deque()
    try:
        for item in items:
            queue.append(pool.submit(work, item))
            if len(queue) >= window:
                yield queue.popleft().result()
        while queue:
            yield queue.popleft().result()
    finally:
        for future in queue:
            future.cancel()


def batched(items: Iterable, size: int) -> Iterator[list]:
    batch: list = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def run_classify(
    cfg: HarvestConfig,
    classifier: Classifier | None = None,
    shard: int | None = None,
    shards: int | None = None,
) -> StageReport:
    """Score the run's images not scored yet by this model: those of shard ``shard`` of ``shards`` (the
    run's recorded count when not given), or all of them when ``shard`` is None. Any number of these
    may run at once, on any workers, over the same or overlapping shards: each image is claimed
    before it is scored (see :func:`_pending`), so it is scored once."""
    report = StageReport("classify")
    if shard is not None:
        shards = shards or run_shards(cfg)
        report.extra["shard"] = shard
        if not buckets(shard, shards):
            return report
    where = in_shard(Candidate.shard, shard, shards or 1)
    if classifier is None:
        spec = resolve_model(cfg.model, cfg.models_dir)
        if not _any_pending(cfg.database_url, cfg.run_id, spec.key, where):
            # loading TensorFlow and the network costs seconds and hundreds of MB: not for nothing
            report.extra.update(model=spec.key, images_per_second=0.0, loaded=False)
            log.info("classify: no image of %s waits for %s; the model is not loaded", cfg.run_id, spec.key)
            return report
        with native_stderr_as_log():  # TensorFlow's start-up lines: information, not errors
            classifier = load_classifier(spec, cfg.models_dir)
    report.extra["model"] = classifier.key
    report.extra["runtime"] = f"{classifier.runtime}/{classifier.device}"
    stores = Stores(cfg.s3)
    preprocess = classifier.spec.preprocess
    keep = max(STORED_TOP, min(cfg.top_k, len(classifier.classes)))

    def fetch(item: tuple[str, str, str]) -> tuple[str, bytes | Exception]:
        sha, location, key = item
        try:
            return sha, stores(location).get(key)
        except Exception as exc:  # noqa: BLE001 - a missing file is recorded, the rest go on
            if isinstance(exc, StorageError) and exc.transient:
                raise  # the store failed, not the image: the stage fails and a re-run reads it again
            return sha, exc

    def decode(sha: str, data: bytes | Exception) -> tuple[str, np.ndarray | Exception]:
        if isinstance(data, Exception):
            return sha, data
        try:
            return sha, decode_for_model(data, preprocess)
        except Exception as exc:  # noqa: BLE001 - any undecodable file is recorded, the rest go on
            return sha, exc

    def score(chunk: list[tuple[str, bytes | Exception]]) -> tuple[list[dict], list[str]]:
        """Decode and score one batch in a lane: its rows, and the failure reasons."""
        rows: list[dict] = []
        failures: list[str] = []
        decoded = [decode(sha, data) for sha, data in chunk]
        good = [(sha, array) for sha, array in decoded if isinstance(array, np.ndarray)]
        for sha, error in decoded:
            if isinstance(error, Exception):
                rows.append(_row(sha, classifier.key, None, None, f"cannot decode for the model: {error}"))
                failures.append(f"cannot decode: {type(error).__name__}")
        if good:
            probabilities = classifier.predict(np.stack([array for _, array in good]))
            for (sha, _), probs in zip(good, probabilities, strict=True):
                rows.append(
                    _row(sha, classifier.key, classifier.top(probs, keep), scores.encode(probs), None)
                )
        return rows, failures

    started = time.monotonic()
    # reads run ahead in I/O threads (a store may answer slowly); each lane then decodes a batch and
    # scores it: while one lane's network call runs, another decodes, so every core is busy (see
    # Classifier.lanes). The windows bound the files and images in memory.
    lanes = max(1, min(classifier.lanes, worker_cores()))
    size = classifier.batch_size or cfg.batch_size
    claims: list[_ClaimedPage] = []
    with (
        ThreadPoolExecutor(max_workers=READERS, thread_name_prefix="classify-read") as readers,
        ThreadPoolExecutor(max_workers=lanes, thread_name_prefix="classify") as pool,
        _releasing(claims),
    ):
        pending = _pending(cfg.database_url, cfg.run_id, classifier.key, size * 8, claims, where)
        files = ahead(pending, fetch, readers, size * 2)
        for rows, failures in ahead(batched(files, size), score, pool, lanes + 1):
            for reason in failures:
                report.count("failed", reason)
            for _ in range(len(rows) - len(failures)):
                report.count("done")
            with session_scope(cfg.database_url) as session:
                insert_ignore(session, Prediction, rows, ["sha256", "model"])
            _release(claims, {row["sha256"] for row in rows})
            if (report.done + report.failed) % (size * 8) < len(rows):
                elapsed = max(time.monotonic() - started, 1e-6)
                log.info(
                    "classify: %d images scored, %d failed, %.1f images/s",
                    report.done,
                    report.failed,
                    report.done / elapsed,
                )
    report.extra["images_per_second"] = round(report.done / max(time.monotonic() - started, 1e-6), 2)
    log.info("%s", report)
    return report


@contextmanager
def _releasing(claims: list[_ClaimedPage]) -> Iterator[None]:
    """After an error the claims still open are ended, unscored: their images go to the next attempt."""
    try:
        yield
    finally:
        while claims:
            claims.pop().stack.close()


def _row(sha: str, key: str, top: list[dict] | None, blob: bytes | None, error: str | None) -> dict:
    return {"sha256": sha, "model": key, "top": top, "scores": blob, "error": error, "created_at": utcnow()}
