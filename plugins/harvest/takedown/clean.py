"""Removing images from one destination: the published originals, their variants and thumbnails, the
rows of every run manifest, and the dataset-wide exports (Parquet, WebDataset shards, card) rebuilt
from the publications that remain.

The order is publish's own, reversed: the publications are marked withdrawn first (so a concurrent
export no longer lists them), the manifests and exports are written next (so none names an object
about to vanish), and the objects are deleted last. Every step may run again: a key already deleted
is deleted again without complaint, a manifest without the rows is left as it is.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field, fields
from typing import Any

from sqlalchemy import desc, select, update

from harvest.dataset.exports import write_exports
from harvest.dataset.layout import CARD_KEY, PARQUET_KEY, TRAINING_PREFIX, WEBDATASET_PREFIX
from harvest.settings.config import HarvestConfig, S3Options
from harvest.state.db import chunks, session_scope
from harvest.state.models import Publication, Run, utcnow
from harvest.storage import Store, Stores, open_store

log = logging.getLogger(__name__)

#: the folders of resized copies and training JPEGs (harvest.images.variants), whose file names are
#: ``<sha256>.<ext>``: ``<folder>/<size>/<label>/...`` or ``training/<label>/...``
VARIANT_FOLDERS = ("variants/", "thumbnails/", TRAINING_PREFIX)
MANIFESTS = "manifests/"
#: the staging area an S3 destination keeps in its own prefix: not part of the published dataset
STAGING_PREFIX = "_staging/"


@dataclass
class Cleaned:
    """What one destination lost: object counts before and after, and the keys."""

    destination: str
    before: int = 0
    after: int = 0
    deleted: list[str] = field(default_factory=list)
    manifests: list[str] = field(default_factory=list)
    exports: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "before": self.before,
            "after": self.after,
            "deleted": self.deleted,
            "manifests": self.manifests,
            "exports": self.exports,
        }


def count_objects(store: Store) -> int:
    """Objects of the published dataset (the staging area an S3 destination holds is not one)."""
    return sum(1 for key in store.keys("") if not key.startswith(STAGING_PREFIX))


def _withdraw(database_url: str, destination: str, shas: set[str], why: str) -> list[str]:
    """Mark the destination's publications of these images withdrawn; returns every key they had
    (withdrawn before or now: an object a crash left behind is deleted too)."""
    keys: list[str] = []
    with session_scope(database_url) as session:
        for chunk in chunks(sorted(shas), 500):
            keys += session.scalars(
                select(Publication.key).where(
                    Publication.destination == destination, Publication.sha256.in_(chunk)
                )
            ).all()
            session.execute(
                update(Publication)
                .where(
                    Publication.destination == destination,
                    Publication.sha256.in_(chunk),
                    Publication.withdrawn_at.is_(None),
                )
                .values(withdrawn_at=utcnow(), withdrawn_reason=why)
            )
    return sorted(set(keys))


def _rewrite_manifests(store: Store, shas: set[str]) -> list[str]:
    """Drop the rows naming these images (by published or downloaded hash) from every run manifest."""
    rewritten = []
    for key in [k for k in store.keys(MANIFESTS) if k.endswith(".jsonl")]:
        lines = store.get(key).decode("utf-8").splitlines()
        kept = []
        for line in lines:
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                kept.append(line)  # not ours to judge; kept as it was
                continue
            if row.get("sha256") in shas or row.get("source_sha256") in shas:
                continue
            kept.append(line)
        if len(kept) != len([line for line in lines if line.strip()]):
            store.put(key, "".join(f"{line}\n" for line in kept).encode("utf-8"), "application/x-ndjson")
            rewritten.append(key)
    return rewritten


def _variant_keys(store: Store, shas: set[str]) -> list[str]:
    found = []
    for folder in VARIANT_FOLDERS:
        for key in store.keys(folder):
            stem = key.rsplit("/", 1)[-1].split(".", 1)[0]
            if stem in shas:
                found.append(key)
    return found


def _exports_present(store: Store) -> tuple[str, ...]:
    """The exports this destination has, rebuilt as they are: none is added that was not there."""
    present = []
    if store.exists(PARQUET_KEY):
        present.append("parquet")
    if next(iter(store.keys(WEBDATASET_PREFIX)), None) is not None:
        present.append("webdataset")
    if store.exists(CARD_KEY):
        present.append("card")
    return tuple(present)


def export_config(
    database_url: str, destination: str, s3: S3Options | None, exports: tuple[str, ...]
) -> HarvestConfig:
    """The settings the exports are rebuilt with: those of the last run that published here (the card
    states the model, threshold and filters; the shards keep their size), with this destination."""
    with session_scope(database_url) as session:
        params = session.scalar(
            select(Run.params)
            .join(Publication, Publication.run_id == Run.run_id)
            .where(Publication.destination == destination)
            .order_by(desc(Run.started_at))
            .limit(1)
        )
    params = dict(params or {})
    names = {f.name for f in fields(HarvestConfig)} - {
        "run_id",
        "database_url",
        "destination",
        "s3",
        "exports",
    }
    known = {k: tuple(v) if isinstance(v, list) else v for k, v in params.items() if k in names}
    known.setdefault("seeds", ())
    known.setdefault("labels", ())
    known.setdefault("staging", "")
    known.pop("models_dir", None)
    return HarvestConfig(
        run_id="takedown",
        database_url=database_url,
        destination=destination,
        s3=s3,
        exports=exports,
        **known,
    )


def clean_destination(
    database_url: str, destination: str, s3: S3Options | None, shas: set[str], published: set[str], why: str
) -> Cleaned:
    """Remove the images ``shas`` (downloaded hashes) and ``published`` (the hashes of the copies that
    were published) from ``destination``."""
    store = open_store(destination, s3)
    cleaned = Cleaned(destination, before=count_objects(store))
    keys = _withdraw(database_url, destination, shas, why)
    every = shas | published
    cleaned.manifests = _rewrite_manifests(store, every)
    exports = _exports_present(store)
    if exports:
        cfg = export_config(database_url, destination, s3, exports)
        written = write_exports(cfg, store, Stores(s3))
        cleaned.exports = {k: v for k, v in written.items() if k in ("rows", "webdataset_shards")}
    doomed = sorted(set(keys) | set(_variant_keys(store, every)))
    for key in doomed:
        if store.exists(key):
            store.delete(key)
            cleaned.deleted.append(key)
    cleaned.after = count_objects(store)
    log.info(
        "takedown: %s: %d objects deleted, %d manifests rewritten, exports %s; %d -> %d objects",
        destination,
        len(cleaned.deleted),
        len(cleaned.manifests),
        cleaned.exports or "none",
        cleaned.before,
        cleaned.after,
    )
    return cleaned
