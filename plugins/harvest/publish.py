"""Stage 5, publish: keep the images whose scores name a target label, upload them, write the manifest.

Object keys are content-addressed (``images/{label}/{sha256}.{ext}``) and every upload is recorded,
so a re-run uploads only what is missing and never replaces an object with different bytes. The
manifest is rebuilt from the state DB and written last, in one atomic write, so it never names an
object that is not there.
"""

from __future__ import annotations

import json
import logging
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import asdict, dataclass

from sqlalchemy import select

from harvest import scores
from harvest.config import HarvestConfig
from harvest.labels import ImageNetClass, Target, resolve_labels
from harvest.model_registry import resolve_model
from harvest.report import StageReport
from harvest.state.db import insert_ignore, session_scope
from harvest.state.models import Candidate, Image, Prediction, Publication, Status, utcnow
from harvest.storage import StorageError, Store, Stores, open_store

log = logging.getLogger(__name__)

EXTENSIONS = {"JPEG": "jpg", "PNG": "png", "GIF": "gif", "WEBP": "webp", "BMP": "bmp", "TIFF": "tif"}


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

    def manifest_row(self) -> dict:
        row = asdict(self)
        row.pop("staging")
        row.pop("staging_key")
        row.pop("mime_type")
        return row


def decide(
    top: list[dict],
    targets: list[Target],
    top_k: int,
    threshold: float,
    probabilities: Mapping[str, float] | None = None,
) -> tuple[Target, float] | None:
    """The best target that has a class among the top_k predictions and a score reaching the threshold.

    A target's score is the sum of its classes' probabilities: a group ("dog") gathers the mass a
    photo spreads over close breeds, a single class is just its own probability. ``probabilities``
    holds every class's (from the stored vector); without it the stored top entries are summed.
    """
    ranked = [entry["wnid"] for entry in top[:top_k]]
    best: tuple[Target, float] | None = None
    for target in targets:
        if not any(wnid in target.wnids for wnid in ranked):
            continue
        if probabilities is not None:
            score = sum(probabilities.get(wnid, 0.0) for wnid in target.wnids)
        else:
            score = sum(float(e["score"]) for e in top if e["wnid"] in target.wnids)
        if score >= threshold and (best is None or score > best[1]):
            best = (target, score)
    return best


def _ranked_and_scores(
    prediction: Prediction,
    classes: tuple[ImageNetClass, ...] | None,
    wanted: list[tuple[str, int]],
    top_k: int,
) -> tuple[list[dict], dict[str, float] | None]:
    """The top entries to rank by and the target classes' probabilities, from the stored vector if any."""
    if prediction.scores is None or classes is None:
        return prediction.top, None
    vector = scores.decode(prediction.scores, len(classes))
    probabilities = {wnid: float(vector[index]) for wnid, index in wanted}
    if top_k <= len(prediction.top):
        return prediction.top, probabilities
    top = scores.top_entries(vector, [c.wnid for c in classes], [c.name for c in classes], top_k)
    return top, probabilities


def select_kept(
    cfg: HarvestConfig, targets: list[Target], key: str, classes: tuple[ImageNetClass, ...] | None = None
) -> tuple[list[Kept], int]:
    """Every image of this run the model recognises as a target, once each, in a stable order.

    Reads only stored scores: deciding again with other labels, top_k or threshold never needs the
    network. ``classes`` (the model's output order) lets the whole stored vector be used.
    """
    with session_scope(cfg.database_url) as session:
        rows = session.execute(
            select(Candidate, Image, Prediction)
            .join(Image, Image.sha256 == Candidate.sha256)
            .join(Prediction, (Prediction.sha256 == Image.sha256) & (Prediction.model == key))
            .where(Candidate.run_id == cfg.run_id, Candidate.status == Status.DONE)
            .order_by(Candidate.id)
        ).all()
    members = set().union(*(t.wnids for t in targets)) if targets else set()
    wanted = [(c.wnid, c.index) for c in classes or () if c.wnid in members]
    kept: dict[str, Kept] = {}
    scored: set[str] = set()
    for candidate, image, prediction in rows:
        if image.sha256 in kept or prediction.top is None:
            continue
        scored.add(image.sha256)
        top, probabilities = _ranked_and_scores(prediction, classes, wanted, cfg.top_k)
        decision = decide(top, targets, cfg.top_k, cfg.threshold, probabilities)
        if decision is None:
            continue
        target, score = decision
        ext = EXTENSIONS.get(image.format, "bin")
        kept[image.sha256] = Kept(
            url=candidate.url,
            page_url=candidate.page_url,
            sha256=image.sha256,
            width=image.width,
            height=image.height,
            format=image.format,
            label=target.folder,
            score=round(score, 6),
            alt=candidate.alt,
            key=f"images/{target.folder}/{image.sha256}.{ext}",
            model=key,
            staging=image.staging,
            staging_key=image.storage_key,
            mime_type=image.mime_type,
        )
    ordered = sorted(kept.values(), key=lambda k: (k.label, k.sha256))
    return ordered, len(scored)


def manifest_key(run_id: str) -> str:
    return f"manifests/{run_id}.jsonl"


def run_publish(cfg: HarvestConfig) -> StageReport:
    report = StageReport("publish")
    spec = resolve_model(cfg.model, cfg.models_dir)
    targets = resolve_labels(cfg.labels, cfg.models_dir, spec.classes)
    key = spec.key
    kept, scored = select_kept(cfg, targets, key, spec.classes)
    log.info("publish: %d of %d scored images kept for %s", len(kept), scored, [t.folder for t in targets])
    destination = open_store(cfg.destination, cfg.s3)
    stores = Stores(cfg.s3)
    with session_scope(cfg.database_url) as session:
        published = set(
            session.scalars(select(Publication.key).where(Publication.destination == cfg.destination)).all()
        )
    started = time.monotonic()
    for index, item in enumerate(kept, 1):
        if item.key in published:
            report.count("skipped", "already published")
            continue
        _upload(destination, stores(item.staging), item)
        with session_scope(cfg.database_url) as session:
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
                    }
                ],
                ["destination", "key"],
            )
        report.count("done")
        if index % 25 == 0:
            log.info(
                "publish: %d/%d objects (%.1f/s)", index, len(kept), index / (time.monotonic() - started)
            )
    body = "".join(json.dumps(item.manifest_row(), sort_keys=True) + "\n" for item in kept)
    destination.put(manifest_key(cfg.manifest_id or cfg.run_id), body.encode("utf-8"), "application/x-ndjson")
    report.extra.update(
        kept=len(kept),
        scored=scored,
        manifest=destination.url(manifest_key(cfg.manifest_id or cfg.run_id)),
        labels=dict(sorted(Counter(item.label for item in kept).items())),
    )
    log.info("%s; manifest at %s", report, report.extra["manifest"])
    return report


def _upload(destination: Store, staging: Store, item: Kept) -> None:
    """Upload unless an interrupted earlier attempt already did; refuse to overwrite different bytes."""
    existing = destination.sha256_of(item.key)
    if existing == item.sha256:
        return
    if existing is not None:
        raise StorageError(
            destination.url(item.key), f"holds different bytes (sha256 {existing}); refusing to overwrite"
        )
    destination.put(item.key, staging.get(item.staging_key), item.mime_type)
