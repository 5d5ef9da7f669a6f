"""WebDataset tar shards, written incrementally: each publish puts the objects no shard holds yet into
new shards named after its run (``webdataset/<run slug>-<n>.tar``), shuffled across labels with a
seed taken from the run id, and leaves every older shard as it is unless one of its objects was
withdrawn (that shard alone is written again without it). ``webdataset/shards.json`` lists them.

A sample is ``<sha256>.<ext>`` (the image), ``.cls`` (the label's ``classes.json`` index as decimal
text: what the ``webdataset`` library's decoder reads with ``int()``), ``.txt`` (the alt text) and
``.json`` (the row in the dataset's one schema: ``key`` is the object key, as in the Parquet).
"""

from __future__ import annotations

import io
import json
import random
import tarfile
import tempfile
from collections.abc import Callable, Iterable

from sqlalchemy import func, select, update

from harvest.dataset.layout import SHARDS_KEY, WEBDATASET_PREFIX, slug
from harvest.dataset.schema import public
from harvest.state.db import chunks, session_scope
from harvest.state.models import Publication
from harvest.storage import Store, Stores

#: rows of a shard read from the state DB at a time
READ_ROWS = 500

#: (publication keys) -> their rows, in the order asked for
RowReader = Callable[[list[str]], list[dict]]


def update_shards(
    database_url: str,
    destination_name: str,
    destination: Store,
    stores: Stores,
    rows_for: RowReader,
    run_id: str,
    shard_size: int,
) -> dict[str, int]:
    """Rewrite the shards holding withdrawn objects, then shard what is new; returns counts."""
    rewritten = _drop_withdrawn(database_url, destination_name, destination, stores, rows_for)
    pending = _unsharded(database_url, destination_name)
    random.Random(run_id).shuffle(pending)  # the same run shuffles the same objects the same way
    prefix = f"{WEBDATASET_PREFIX}{slug(run_id)}-"
    first = _shards_named(database_url, destination_name, prefix)
    written = 0
    for number, keys in enumerate(chunks(pending, shard_size), start=first):
        name = f"{prefix}{number:05d}.tar"
        _write_shard(destination, stores, name, rows_for, keys)
        _record(database_url, destination_name, name, keys)
        written += 1
    shards = _listing(database_url, destination_name)
    for stale in [k for k in destination.keys(WEBDATASET_PREFIX) if k.endswith(".tar") and k not in shards]:
        destination.delete(stale)  # left by an interrupted publish, or a layout before this one
    listing = {"shards": [{"url": name, "samples": n} for name, n in sorted(shards.items())]}
    destination.put(SHARDS_KEY, json.dumps(listing, indent=1).encode("utf-8"), "application/json")
    return {"shards": len(shards), "new": written, "rewritten": rewritten, "samples": sum(shards.values())}


def _unsharded(database_url: str, destination: str) -> list[str]:
    """The keys of published objects no shard holds, in key order (then shuffled by the caller)."""
    with session_scope(database_url) as session:
        return list(
            session.scalars(
                select(Publication.key)
                .where(
                    Publication.destination == destination,
                    Publication.withdrawn_at.is_(None),
                    Publication.shard.is_(None),
                    Publication.key.like("images/%"),
                )
                .order_by(Publication.key)
            )
        )


def _shards_named(database_url: str, destination: str, prefix: str) -> int:
    """How many shards of this run exist already (a publish of the run again numbers on from there)."""
    with session_scope(database_url) as session:
        return (
            session.scalar(
                select(func.count(func.distinct(Publication.shard))).where(
                    Publication.destination == destination, Publication.shard.like(f"{prefix}%")
                )
            )
            or 0
        )


def _drop_withdrawn(
    database_url: str, destination_name: str, destination: Store, stores: Stores, rows_for: RowReader
) -> int:
    """Write again, without them, the shards that hold withdrawn objects (or delete a shard left
    empty); the withdrawn objects are then in no shard."""
    with session_scope(database_url) as session:
        affected = list(
            session.scalars(
                select(Publication.shard)
                .where(
                    Publication.destination == destination_name,
                    Publication.withdrawn_at.is_not(None),
                    Publication.shard.is_not(None),
                )
                .distinct()
            )
        )
    for name in affected:
        with session_scope(database_url) as session:
            keys = list(
                session.scalars(
                    select(Publication.key)
                    .where(
                        Publication.destination == destination_name,
                        Publication.shard == name,
                        Publication.withdrawn_at.is_(None),
                    )
                    .order_by(Publication.id)
                )
            )
        if keys:
            _write_shard(destination, stores, name, rows_for, keys)
        else:
            destination.delete(name)
        with session_scope(database_url) as session:
            session.execute(
                update(Publication)
                .where(
                    Publication.destination == destination_name,
                    Publication.shard == name,
                    Publication.withdrawn_at.is_not(None),
                )
                .values(shard=None)
            )
    return len(affected)


def _write_shard(destination: Store, stores: Stores, name: str, rows_for: RowReader, keys: list[str]) -> None:
    """One tar built in a temporary file, a page of rows at a time, and put in one write."""
    with tempfile.TemporaryFile() as file:
        with tarfile.open(fileobj=file, mode="w", format=tarfile.PAX_FORMAT) as tar:
            for page in chunks(keys, READ_ROWS):
                for row in rows_for(page):
                    _add_sample(tar, row, stores(row["staging"]).get(row["staging_key"]))
        destination.put_file(name, file, "application/x-tar")


def _add_sample(tar: tarfile.TarFile, row: dict, data: bytes) -> None:
    sample = row["sha256"]
    ext = row["key"].rsplit(".", 1)[-1]
    _add(tar, f"{sample}.{ext}", data)
    _add(tar, f"{sample}.cls", str(row["label_index"]).encode("ascii"))
    _add(tar, f"{sample}.txt", (row["alt"] or "").encode("utf-8"))
    _add(tar, f"{sample}.json", json.dumps(public(row), ensure_ascii=False).encode("utf-8"))


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = 0o644
    tar.addfile(info, io.BytesIO(data))


def _record(database_url: str, destination: str, name: str, keys: Iterable[str]) -> None:
    with session_scope(database_url) as session:
        for page in chunks(list(keys), READ_ROWS):
            session.execute(
                update(Publication)
                .where(Publication.destination == destination, Publication.key.in_(page))
                .values(shard=name)
            )


def _listing(database_url: str, destination: str) -> dict[str, int]:
    """Every shard the state DB knows at the destination, with its sample count."""
    with session_scope(database_url) as session:
        return dict(
            session.execute(
                select(Publication.shard, func.count())
                .where(
                    Publication.destination == destination,
                    Publication.withdrawn_at.is_(None),
                    Publication.shard.is_not(None),
                )
                .group_by(Publication.shard)
            ).all()
        )
