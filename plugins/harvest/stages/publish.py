"""Stage 5, publish: keep the images whose scores name a target label, upload them, write the manifest.

Object keys are content-addressed (``images/{label}/{sha256}.{ext}``) and every upload is recorded,
so a re-run uploads only what is missing and never replaces an object with different bytes. Before
uploading, the curation verdict removes placeholders, near-blank images and near duplicates, and
every image is published from its clean copy (its own bytes up to its own end, metadata by
allow-list: :mod:`harvest.images.sanitize`), never from the downloaded bytes. The manifest is rebuilt from
the state DB (into a temporary file, a page of keepers at a time) and written last, in one atomic
write, so it never names an object that is not there; objects withdrawn by a later verdict are
deleted only after it.

Four steps, so the work spreads over workers (docs/scaling.md): :func:`select_keepers` (per shard:
the keep decision, written to the ``keepers`` table), :func:`curate_keepers` (once: the verdict, in
the state DB), :func:`upload_keepers` (per shard) and :func:`finish_publish` (once: withdrawals,
exports, manifest). :func:`run_publish` runs them in order in one process.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from sqlalchemy import Select, delete, func, select, tuple_, update
from sqlalchemy.orm import aliased

from harvest.dataset.curate import curate, describe_missing, reasons_of, verdict_reason
from harvest.dataset.layout import manifest_key, training_key
from harvest.dataset.manifest import RunManifest
from harvest.dataset.schema import SOURCE_COLUMNS
from harvest.images.sanitize import POLICY
from harvest.model.labels import ImageNetClass, Target, resolve_labels
from harvest.model.registry import resolve_model
from harvest.model.scores import decide, ranked_and_probabilities, target_class_indexes
from harvest.report import StageReport
from harvest.settings.config import HarvestConfig
from harvest.state.db import chunks, insert_ignore, session_scope
from harvest.state.models import Candidate, Image, Keeper, Prediction, Publication, Status, utcnow
from harvest.state.shards import buckets, in_shard, run_shards
from harvest.storage import StorageError, Store, Stores, open_store
from harvest.takedown.blocklist import refusals_at_publish

log = logging.getLogger(__name__)

EXTENSIONS = {"JPEG": "jpg", "PNG": "png", "GIF": "gif", "WEBP": "webp", "BMP": "bmp", "TIFF": "tif"}
#: rows read from the state DB at a time where publish walks every image of a run or destination;
#: a row with its score vector and top entries is ~8 KB once loaded, so a window is ~2 MB
STREAM_ROWS = 250


@dataclass
class Kept:
    url: str
    page_url: str
    sha256: str
    width: int
    height: int
    format: str
    label: str
    score: float
    alt: str | None
    key: str
    model: str
    staging: str
    staging_key: str
    mime_type: str
    #: sha256 of the bytes published (the clean copy; the download's own when nothing was removed)
    content_sha256: str | None = None
    #: the rendition whose bytes were downloaded (``url`` itself unless it failed), and the ones
    #: that failed before it: [{"url": ..., "reason": ...}, ...]
    rendition_url: str | None = None
    renditions_failed: list[dict] = field(default_factory=list)
    #: SPDX id or "unknown", the URL of its evidence, and the author to credit (harvest.licences)
    license: str = "unknown"
    license_url: str | None = None
    author: str | None = None

    @property
    def published_sha256(self) -> str:
        return self.content_sha256 or self.sha256


#: A keeper as the stage holds it from selection to manifest: (label folder, sha256, candidate id,
#: score), ~250 bytes. The rest of its row is read again a chunk at a time when it is published, so
#: the stage's memory does not grow with the run by the kilobytes a full row takes.
Pick = tuple[str, str, int, float]


def pick_keepers(
    cfg: HarvestConfig, targets: list[Target], key: str, classes: tuple[ImageNetClass, ...] | None = None
) -> tuple[list[Pick], int]:
    """Every image of this run the model recognises as a target, once each (from the first candidate
    that found it), ordered by label and sha256, and how many images were scored at all.

    Reads only stored scores: deciding again with other labels, top_k or threshold never needs the
    network. ``classes`` (the model's output order) lets the whole stored vector be used. The rows
    are streamed, and of each keeper only its :data:`Pick` is held: for previews of a decision
    (:func:`select_kept`); the stage itself writes its decision to the ``keepers`` table
    (:func:`select_keepers`) and holds none of it."""
    wanted = target_class_indexes(targets, classes)
    picks: list[Pick] = []
    scored: set[str] = set()
    query = (
        select(Candidate.id, Candidate.sha256, Prediction.top, Prediction.scores)
        .join(Prediction, (Prediction.sha256 == Candidate.sha256) & (Prediction.model == key))
        .where(Candidate.run_id == cfg.run_id, Candidate.status == Status.DONE)
        .order_by(Candidate.id)
        .execution_options(yield_per=STREAM_ROWS)
    )
    with session_scope(cfg.database_url) as session:
        for row in session.execute(query):
            if row.sha256 in scored or row.top is None:
                continue
            scored.add(row.sha256)
            top, probabilities = ranked_and_probabilities(row.top, row.scores, classes, wanted, cfg.top_k)
            decision = decide(top, targets, cfg.top_k, cfg.threshold, probabilities)
            if decision is not None:
                picks.append((decision[0].folder, row.sha256, row.id, round(decision[1], 6)))
    picks.sort(key=lambda pick: (pick[0], pick[1]))
    return picks, len(scored)


def expand(cfg: HarvestConfig, picks: list[Pick], key: str) -> list[Kept]:
    """The full rows of some picks, in their order."""
    with session_scope(cfg.database_url) as session:
        rows = {
            row.id: row
            for row in session.execute(
                select(
                    Candidate.id,
                    *SOURCE_COLUMNS,
                    Image.width,
                    Image.height,
                    Image.format,
                    Image.staging,
                    Image.storage_key,
                    Image.mime_type,
                )
                .join(Image, Image.sha256 == Candidate.sha256)
                .where(Candidate.id.in_([pick[2] for pick in picks]))
            )
        }
    kept = []
    for label, sha256, candidate_id, score in picks:
        row = rows[candidate_id]
        kept.append(
            Kept(
                url=row.url,
                page_url=row.page_url,
                sha256=sha256,
                width=row.width,
                height=row.height,
                format=row.format,
                label=label,
                score=score,
                alt=row.alt,
                key=f"images/{label}/{sha256}.{EXTENSIONS.get(row.format, 'bin')}",
                model=key,
                staging=row.staging,
                staging_key=row.storage_key,
                mime_type=row.mime_type,
                rendition_url=row.rendition_url or row.url,
                renditions_failed=list(row.renditions_failed or []),
                license=row.license or "unknown",
                license_url=(row.license_evidence or {}).get("url"),
                author=row.author,
            )
        )
    return kept


def select_kept(
    cfg: HarvestConfig, targets: list[Target], key: str, classes: tuple[ImageNetClass, ...] | None = None
) -> tuple[list[Kept], int]:
    """:func:`pick_keepers` with every keeper's full row: for callers that want them all at once
    (the gallery's preview); the stage itself reads its keepers back a page at a time."""
    picks, scored = pick_keepers(cfg, targets, key, classes)
    return [item for chunk in chunks(picks, STREAM_ROWS) for item in expand(cfg, chunk, key)], scored


def _report_category(reason: str) -> str:
    """Report categories: "placeholder", "near duplicate", "low information", ..."""
    return reason.split(":")[0].split(" (")[0].split(" of ")[0]


def _clean_copies(
    cfg: HarvestConfig, kept: list[Kept], report: StageReport, log_missing: bool = True
) -> list[Kept]:
    """Point every image at its clean copy, under the copy's own content address. An image without
    one made under the current metadata policy is not published: the downloaded bytes never are.
    ``kept`` is one chunk of keepers (at most STREAM_ROWS), so one IN list serves."""
    with session_scope(cfg.database_url) as session:
        rows = {
            sha256: (clean_sha256, clean_key)
            for sha256, clean_sha256, clean_key in session.execute(
                select(Image.sha256, Image.clean_sha256, Image.clean_key).where(
                    Image.sha256.in_([k.sha256 for k in kept]),
                    Image.clean_key.is_not(None),
                    Image.clean_sha256.is_not(None),
                    Image.metadata_policy == POLICY,
                )
            ).all()
        }
    published = []
    for item in kept:
        if item.sha256 not in rows:
            report.count("skipped", "no clean copy")
            if log_missing:
                log.warning("publish: not publishing %s: no copy with metadata by allow-list", item.url)
            continue
        clean_sha256, clean_key = rows[item.sha256]
        ext = item.key.rsplit(".", 1)[-1]
        item.content_sha256 = clean_sha256
        item.staging_key = clean_key
        item.key = f"images/{item.label}/{clean_sha256}.{ext}"
        published.append(item)
    return published


def _publication_state(cfg: HarvestConfig, items: list[Kept]) -> tuple[set[str], set[str]]:
    """Of these items' keys: those published at the destination now, and those withdrawn earlier."""
    with session_scope(cfg.database_url) as session:
        rows = session.execute(
            select(Publication.key, Publication.withdrawn_at).where(
                Publication.destination == cfg.destination, Publication.key.in_([i.key for i in items])
            )
        ).all()
    published = {key for key, withdrawn in rows if withdrawn is None}
    withdrawn_before = {key for key, withdrawn in rows if withdrawn is not None}
    return published, withdrawn_before


def _first_candidates(cfg: HarvestConfig, key: str, shard: int | None, shards: int) -> Select:
    """The scored images of the shard, each by the run's first candidate that found it (its URL,
    page and alt text are the ones published), with their stored scores: the shard an image belongs
    to is that candidate's, so the shards split the run's images without overlap."""
    first = aliased(Candidate)
    earliest = (
        select(func.min(first.id))
        .where(first.run_id == cfg.run_id, first.sha256 == Candidate.sha256, first.status == Status.DONE)
        .scalar_subquery()
    )
    return (
        select(Candidate.id, Candidate.sha256, Candidate.shard, Prediction.top, Prediction.scores)
        .join(Prediction, (Prediction.sha256 == Candidate.sha256) & (Prediction.model == key))
        .where(
            Candidate.run_id == cfg.run_id,
            Candidate.status == Status.DONE,
            in_shard(Candidate.shard, shard, shards),
            Candidate.id == earliest,
        )
        .order_by(Candidate.id)
        .execution_options(yield_per=STREAM_ROWS)
    )


def select_keepers(cfg: HarvestConfig, shard: int | None = None, shards: int | None = None) -> StageReport:
    """The keep decision for the images of shard ``shard`` of ``shards`` (all of them when ``shard``
    is None), written to the ``keepers`` table in place of the shard's earlier decision; then the
    shard's keepers, and its share of the destination's publications, described again where their
    rows predate the current rules (:func:`harvest.dataset.curate.describe_missing`).

    Reads only stored scores: deciding again with other labels, top_k or threshold never needs the
    network. Rows are streamed and written a window at a time, so memory does not grow with the run."""
    report = StageReport("select")
    shards = shards or (run_shards(cfg) if shard is not None else 1)
    if shard is not None:
        report.extra["shard"] = shard
        if not buckets(shard, shards):
            return report
    spec = resolve_model(cfg.model, cfg.models_dir)
    targets = resolve_labels(cfg.labels, cfg.models_dir, spec.classes)
    wanted = target_class_indexes(targets, spec.classes)
    with session_scope(cfg.database_url) as session:
        session.execute(
            delete(Keeper).where(Keeper.run_id == cfg.run_id, in_shard(Keeper.bucket, shard, shards))
        )
    scored, window = 0, []
    with session_scope(cfg.database_url) as session:
        for row in session.execute(_first_candidates(cfg, spec.key, shard, shards)):
            if row.top is None:  # the image could not be decoded for the model
                continue
            scored += 1
            top, probabilities = ranked_and_probabilities(
                row.top, row.scores, spec.classes, wanted, cfg.top_k
            )
            decision = decide(top, targets, cfg.top_k, cfg.threshold, probabilities)
            if decision is not None:
                window.append(
                    {
                        "run_id": cfg.run_id,
                        "sha256": row.sha256,
                        "candidate_id": row.id,
                        "bucket": row.shard,
                        "label": decision[0].folder,
                        "score": round(decision[1], 6),
                    }
                )
            if len(window) >= STREAM_ROWS:
                report.done += _write_keepers(cfg, window)
                window = []
    report.done += _write_keepers(cfg, window)
    report.extra["scored"] = scored
    for sha256s in _described_pages(cfg, shard, shards):
        describe_missing(cfg, sha256s)
    log.info(
        "publish: %d of %d scored images recognised as %s", report.done, scored, [t.folder for t in targets]
    )
    return report


def _write_keepers(cfg: HarvestConfig, rows: list[dict]) -> int:
    with session_scope(cfg.database_url) as session:
        return insert_ignore(session, Keeper, rows, ["run_id", "sha256"])


def _described_pages(cfg: HarvestConfig, shard: int | None, shards: int) -> Iterator[list[str]]:
    """The sha256s curation judges that fall to this shard, a page at a time: its keepers, and the
    destination's publications whose id falls to it."""
    after = ""
    while True:
        with session_scope(cfg.database_url) as session:
            page = session.scalars(
                select(Keeper.sha256)
                .where(
                    Keeper.run_id == cfg.run_id, in_shard(Keeper.bucket, shard, shards), Keeper.sha256 > after
                )
                .order_by(Keeper.sha256)
                .limit(STREAM_ROWS)
            ).all()
        if page:
            yield list(page)
        if len(page) < STREAM_ROWS:
            break
        after = page[-1]
    after_id = 0
    while True:
        with session_scope(cfg.database_url) as session:
            query = select(Publication.id, Publication.sha256).where(
                Publication.destination == cfg.destination,
                Publication.withdrawn_at.is_(None),
                Publication.id > after_id,
            )
            if shard is not None:
                query = query.where(Publication.id % shards == shard)
            rows = session.execute(query.order_by(Publication.id).limit(STREAM_ROWS)).all()
        if rows:
            yield [sha256 for _, sha256 in rows]
        if len(rows) < STREAM_ROWS:
            break
        after_id = rows[-1].id


def curate_keepers(cfg: HarvestConfig) -> StageReport:
    """The curation verdict over the run's keepers and the destination (one task: the near-duplicate
    grouping visits every image in one order), written to the images' rows for the uploads."""
    report = StageReport("curate")
    report.extra.update(curate(cfg))
    # taken-down images and near copies of them: never published, withdrawn if they were
    refused = _refuse_taken_down(cfg)
    if refused:
        report.extra["taken_down"] = refused
    return report


def _refuse_taken_down(cfg: HarvestConfig) -> int:
    """Mark the run's keepers and the destination's images that a takedown blocks (by sha256 or as a
    near copy) as excluded, so the uploads leave them out and the last step withdraws them."""
    with session_scope(cfg.database_url) as session:
        keepers = session.scalars(select(Keeper.sha256).where(Keeper.run_id == cfg.run_id)).all()
    refusals = refusals_at_publish(cfg.database_url, cfg.destination, keepers)
    with session_scope(cfg.database_url) as session:
        for sha256, reason in refusals.items():
            session.execute(update(Image).where(Image.sha256 == sha256).values(excluded=reason))
    return len(refusals)


def _keeper_pages(cfg: HarvestConfig, shard: int | None, shards: int) -> Iterator[list[Pick]]:
    """The run's keepers of the shard ordered by label and sha256, a page at a time (keyset paging)."""
    after = ("", "")
    while True:
        with session_scope(cfg.database_url) as session:
            page = [
                (row.label, row.sha256, row.candidate_id, row.score)
                for row in session.execute(
                    select(Keeper.label, Keeper.sha256, Keeper.candidate_id, Keeper.score)
                    .where(
                        Keeper.run_id == cfg.run_id,
                        in_shard(Keeper.bucket, shard, shards),
                        tuple_(Keeper.label, Keeper.sha256) > after,
                    )
                    .order_by(Keeper.label, Keeper.sha256)
                    .limit(STREAM_ROWS)
                )
            ]
        if page:
            yield page
        if len(page) < STREAM_ROWS:
            return
        after = (page[-1][0], page[-1][1])


def upload_keepers(cfg: HarvestConfig, shard: int | None = None, shards: int | None = None) -> StageReport:
    """Upload and record the shard's keepers that the curation lets through, from their clean
    copies, with their variants; what is at the destination already is left as it is."""
    report = StageReport("upload")
    shards = shards or (run_shards(cfg) if shard is not None else 1)
    if shard is not None:
        report.extra["shard"] = shard
        if not buckets(shard, shards):
            return report
    key = resolve_model(cfg.model, cfg.models_dir).key
    destination = open_store(cfg.destination, cfg.s3)
    stores = Stores(cfg.s3)
    variants = 0
    started, handled = time.monotonic(), 0
    for picks in _keeper_pages(cfg, shard, shards):
        items = expand(cfg, picks, key)
        kept = _clean_copies(
            cfg, _curated(items, reasons_of(cfg.database_url, [i.sha256 for i in items]), report), report
        )
        _publish_chunk(cfg, destination, stores, kept, report)
        if cfg.variant_widths or cfg.thumbnail_size or cfg.publish_format == "jpeg":
            from harvest.images.variants import publish_variants

            variants += publish_variants(cfg, destination, stores, kept)
        handled += len(picks)
        log.info(
            "publish: %d keepers handled, %d objects uploaded (%.1f/s)",
            handled,
            report.done,
            handled / max(time.monotonic() - started, 1e-6),
        )
    if cfg.variant_widths or cfg.thumbnail_size:
        report.extra["variants"] = variants
    return report


def finish_publish(cfg: HarvestConfig, uploads: Iterable[StageReport | dict] = ()) -> StageReport:
    """The run's single last step: withdraw what the verdict now rejects, write the exports and the
    manifest (rebuilt from the state DB a page at a time, written in one atomic put), then delete the
    withdrawn objects. ``uploads`` are the shards' reports, summed into this one."""
    report = StageReport("publish")
    variants = 0
    for upload in uploads:
        upload = upload if isinstance(upload, dict) else upload.as_dict()
        report.done += upload["done"]
        report.failed += upload["failed"]
        report.skipped += upload["skipped"]
        report.reasons.update(upload.get("reasons") or {})
        variants += upload.get("variants", 0)
    key = resolve_model(cfg.model, cfg.models_dir).key
    destination = open_store(cfg.destination, cfg.s3)
    stores = Stores(cfg.s3)
    labels: Counter[str] = Counter()
    quiet = StageReport("manifest")  # the uploads counted and logged what stays out
    with RunManifest(cfg, destination) as manifest:
        for picks in _keeper_pages(cfg, None, 1):
            items = expand(cfg, picks, key)
            reasons = reasons_of(cfg.database_url, [i.sha256 for i in items])
            kept = _clean_copies(cfg, [i for i in items if i.sha256 not in reasons], quiet, log_missing=False)
            manifest.add(kept)
            labels.update(item.label for item in kept)
        withdrawn = _withdraw(cfg)
        if cfg.variant_widths or cfg.thumbnail_size:
            report.extra["variants"] = variants
            log.info("variants: %d written", variants)
        if cfg.exports:
            from harvest.dataset.exports import write_exports

            report.extra["exports"] = write_exports(cfg, destination, stores)
        manifest.put()
    for key_, reason in withdrawn:
        destination.delete(key_)
        destination.delete(training_key(key_))  # its training copy, if one was made
        log.info("publish: withdrew %s: %s", destination.url(key_), reason)
    report.extra.update(
        kept=labels.total(),
        scored=_scored(cfg, key),
        withdrawn=len(withdrawn),
        manifest=destination.url(manifest_key(cfg.manifest_id or cfg.run_id)),
        labels=dict(sorted(labels.items())),
    )
    log.info("%s; manifest at %s", report, report.extra["manifest"])
    return report


def _scored(cfg: HarvestConfig, key: str) -> int:
    """How many of the run's images the model scored (undecodable ones not counted)."""
    with session_scope(cfg.database_url) as session:
        return session.scalar(
            select(func.count(func.distinct(Candidate.sha256)))
            .join(Prediction, (Prediction.sha256 == Candidate.sha256) & (Prediction.model == key))
            .where(
                Candidate.run_id == cfg.run_id, Candidate.status == Status.DONE, Prediction.error.is_(None)
            )
        )


def run_publish(cfg: HarvestConfig) -> StageReport:
    """Every step of publishing in this process, over the whole run as one shard: the DAG runs the
    same steps as tasks, the per-shard ones mapped (select_keepers, upload_keepers) and curation and
    the manifest once."""
    select_keepers(cfg)
    curate_keepers(cfg)
    return finish_publish(cfg, [upload_keepers(cfg)])


def _curated(items: list[Kept], reasons: dict[str, str], report: StageReport) -> list[Kept]:
    """The items the verdict lets through; the others are counted and logged with their reason."""
    kept = []
    for item in items:
        reason = reasons.get(item.sha256)
        if reason:
            report.count("skipped", _report_category(reason))
            log.info("publish: not publishing %s: %s", item.url, reason)
        else:
            kept.append(item)
    return kept


def _publish_chunk(cfg: HarvestConfig, destination: Store, stores: Stores, kept: list[Kept], report) -> None:
    """Upload and record what is not at the destination yet."""
    if not kept:
        return
    published, withdrawn_before = _publication_state(cfg, kept)
    for item in kept:
        if item.key in published:
            report.count("skipped", "already published")
            continue
        _upload(destination, stores(item.staging), item)
        _record_publication(cfg, item, republished=item.key in withdrawn_before)
        report.count("done")


def _record_publication(cfg: HarvestConfig, item: Kept, republished: bool) -> None:
    with session_scope(cfg.database_url) as session:
        if republished:
            session.execute(
                update(Publication)
                .where(Publication.destination == cfg.destination, Publication.key == item.key)
                .values(withdrawn_at=None, withdrawn_reason=None, run_id=cfg.run_id)
            )
            return
        insert_ignore(
            session,
            Publication,
            [
                {
                    "destination": cfg.destination,
                    "key": item.key,
                    "sha256": item.sha256,
                    "run_id": cfg.run_id,
                    "created_at": utcnow(),
                    "label": item.label,
                    "score": item.score,
                    "content_sha256": item.content_sha256,
                }
            ],
            ["destination", "key"],
        )


def _withdraw(cfg: HarvestConfig) -> list[tuple[str, str]]:
    """Mark published objects the verdict now rejects; they are deleted after the new manifest.

    The destination's publications are read a page at a time: it holds what every run published."""
    withdrawn: list[tuple[str, str]] = []
    after = 0
    with session_scope(cfg.database_url) as session:
        while True:
            active = session.execute(
                select(Publication.id, Publication.key, Publication.sha256, Publication.content_sha256)
                .where(
                    Publication.destination == cfg.destination,
                    Publication.withdrawn_at.is_(None),
                    Publication.id > after,
                )
                .order_by(Publication.id)
                .limit(STREAM_ROWS)
            ).all()
            if not active:
                break
            after = active[-1].id
            images = {
                row.sha256: row
                for row in session.execute(
                    select(
                        Image.sha256,
                        Image.clean_sha256,
                        Image.excluded,
                        Image.duplicate_of,
                        Image.duplicate_distance,
                    ).where(Image.sha256.in_({p.sha256 for p in active}))
                ).all()
            }
            for publication in active:
                image = images.get(publication.sha256)
                reason = image and verdict_reason(
                    image.excluded, image.duplicate_of, image.duplicate_distance
                )
                clean = image.clean_sha256 if image else None
                # anything but the current clean copy (the downloaded bytes, a copy made by older
                # rules) may carry metadata outside the allow-list or data after the image's end
                leaked = (publication.content_sha256 or publication.sha256) != clean
                if reason is None and leaked:
                    reason = "published with metadata outside the allow-list; replaced by the clean copy"
                if reason:
                    session.execute(
                        update(Publication)
                        .where(Publication.id == publication.id)
                        .values(withdrawn_at=utcnow(), withdrawn_reason=reason)
                    )
                    withdrawn.append((publication.key, reason))
    return withdrawn


def _upload(destination: Store, staging: Store, item: Kept) -> None:
    """Upload unless an interrupted earlier attempt or another run already did; never overwrite:
    an object holding different bytes is an error."""
    existing = destination.sha256_of(item.key)
    if existing is None and destination.put_new(item.key, staging.get(item.staging_key), item.mime_type):
        return
    existing = existing or destination.sha256_of(item.key)  # another run wrote it meanwhile
    if existing != item.published_sha256:
        raise StorageError(
            destination.url(item.key), f"holds different bytes (sha256 {existing}); refusing to overwrite"
        )
