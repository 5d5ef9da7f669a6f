"""Dataset-wide exports that ML tools read as is: a Parquet manifest, WebDataset tar shards and the
dataset card, all rebuilt from the state DB's current publications (withdrawn objects excluded).
"""

from __future__ import annotations

import io
import json
import logging
import tarfile
from collections.abc import Iterator

from sqlalchemy import select

from harvest.config import HarvestConfig
from harvest.state.db import session_scope
from harvest.state.models import Candidate, Image, ImageUrl, Publication
from harvest.storage import Store, Stores

log = logging.getLogger(__name__)

PARQUET_KEY = "manifests/dataset.parquet"
WEBDATASET_PREFIX = "webdataset/"
#: Public EXIF fields copied into the exports; private ones (GPS, owner, serials) never are.
EXIF_COLUMNS = ("make", "model", "date_taken", "orientation", "copyright")


def dataset_rows(cfg: HarvestConfig) -> list[dict]:
    """One row per object currently published at the destination, in key order."""
    with session_scope(cfg.database_url) as session:
        rows = session.execute(
            select(Publication, Image)
            .join(Image, Image.sha256 == Publication.sha256)
            .where(
                Publication.destination == cfg.destination,
                Publication.withdrawn_at.is_(None),
                Publication.key.like("images/%"),
            )
            .order_by(Publication.key)
        ).all()
        shas = [image.sha256 for _, image in rows]
        sources: dict[str, tuple[str, str, str | None]] = {}
        for start in range(0, len(shas), 500):
            for sha256, url, page_url, alt in session.execute(
                select(Candidate.sha256, Candidate.url, Candidate.page_url, Candidate.alt)
                .where(Candidate.sha256.in_(shas[start : start + 500]))
                .order_by(Candidate.id)
            ).all():
                sources.setdefault(sha256, (url, page_url, alt))
        url_counts: dict[str, int] = {}
        for start in range(0, len(shas), 500):
            for sha256 in session.scalars(
                select(ImageUrl.sha256).where(ImageUrl.sha256.in_(shas[start : start + 500]))
            ).all():
                url_counts[sha256] = url_counts.get(sha256, 0) + 1
    out = []
    for publication, image in rows:
        url, page_url, alt = sources.get(image.sha256, (image.first_url, None, None))
        exif = image.exif or {}
        row = {
            "key": publication.key,
            "label": publication.label or publication.key.split("/")[1],
            "score": publication.score,
            "sha256": publication.content_sha256 or image.sha256,
            "source_sha256": image.sha256,
            "url": url,
            "page_url": page_url,
            "alt": alt,
            "urls_seen": url_counts.get(image.sha256, 1),
            "width": image.width,
            "height": image.height,
            "format": image.format,
            "mime_type": image.mime_type,
            "size_bytes": image.size_bytes,
            "has_alpha": image.has_alpha,
            "phash": image.phash,
            "entropy": image.entropy,
            "run_id": publication.run_id,
            "staging": image.staging,
            "staging_key": image.clean_key or image.storage_key,
        }
        row.update({f"exif_{name}": _text(exif.get(name)) for name in EXIF_COLUMNS})
        out.append(row)
    return out


def _text(value: object) -> str | None:
    return None if value is None else str(value)


def parquet_bytes(rows: list[dict]) -> bytes:
    import pyarrow as pa
    import pyarrow.parquet as pq

    columns = [name for name in (rows[0] if rows else _EMPTY_ROW) if name not in ("staging", "staging_key")]
    table = pa.Table.from_pylist([{c: row[c] for c in columns} for row in rows], schema=_schema(columns))
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, compression="zstd")
    return sink.getvalue().to_pybytes()


_EMPTY_ROW = dict.fromkeys(
    [
        "key",
        "label",
        "score",
        "sha256",
        "source_sha256",
        "url",
        "page_url",
        "alt",
        "urls_seen",
        "width",
        "height",
        "format",
        "mime_type",
        "size_bytes",
        "has_alpha",
        "phash",
        "entropy",
        "run_id",
    ]
    + [f"exif_{name}" for name in EXIF_COLUMNS]
)


def _schema(columns: list[str]):
    import pyarrow as pa

    types = {
        "score": pa.float64(),
        "entropy": pa.float64(),
        "urls_seen": pa.int32(),
        "width": pa.int32(),
        "height": pa.int32(),
        "size_bytes": pa.int64(),
        "has_alpha": pa.bool_(),
    }
    return pa.schema([(name, types.get(name, pa.string())) for name in columns])


def webdataset_shards(rows: list[dict], stores: Stores, shard_size: int) -> Iterator[tuple[str, bytes]]:
    """(key, tar bytes) per shard; sample keys are img2dataset's zero-padded shard+index numbers."""
    for shard, start in enumerate(range(0, len(rows), shard_size)):
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w") as tar:
            for index, row in enumerate(rows[start : start + shard_size]):
                key = f"{shard:05d}{index:04d}" if shard_size <= 10_000 else f"{shard:05d}{index:09d}"
                data = stores(row["staging"]).get(row["staging_key"])
                ext = row["key"].rsplit(".", 1)[-1]
                meta = {k: v for k, v in row.items() if k not in ("staging", "staging_key")}
                meta.update(key=key, status="success", caption=row["alt"])
                _add(tar, f"{key}.{ext}", data)
                _add(tar, f"{key}.txt", (row["alt"] or "").encode("utf-8"))
                _add(tar, f"{key}.cls", row["label"].encode("utf-8"))
                _add(tar, f"{key}.json", json.dumps(meta, sort_keys=True).encode("utf-8"))
        yield f"{WEBDATASET_PREFIX}{shard:05d}.tar", buffer.getvalue()


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = 0o644
    tar.addfile(info, io.BytesIO(data))


def write_exports(cfg: HarvestConfig, destination: Store, stores: Stores) -> dict:
    rows = dataset_rows(cfg)
    written: dict = {"rows": len(rows)}
    if "parquet" in cfg.exports:
        destination.put(PARQUET_KEY, parquet_bytes(rows), "application/vnd.apache.parquet")
        written["parquet"] = destination.url(PARQUET_KEY)
    if "webdataset" in cfg.exports:
        keep = set()
        for key, body in webdataset_shards(rows, stores, cfg.webdataset_shard_size):
            destination.put(key, body, "application/x-tar")
            keep.add(key)
        for stale in [k for k in destination.keys(WEBDATASET_PREFIX) if k not in keep]:
            destination.delete(stale)
        written["webdataset_shards"] = len(keep)
    if "card" in cfg.exports:
        from harvest.dataset_card import write_card

        written["card"] = write_card(cfg, destination, rows)
    log.info("exports: %s", written)
    return written
