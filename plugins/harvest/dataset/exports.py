"""Dataset-wide exports that ML tools read as is: a Parquet manifest, WebDataset tar shards and the
dataset card, all rebuilt from the state DB's current publications (withdrawn objects excluded).

The destination's publications are read a page at a time and each page goes to every export at
once: the Parquet file and the tar shards are written to temporary files and uploaded from them, and
the card keeps only counters and the two histograms' values. Publish's memory therefore does not
grow with the size of the dataset by more than a few bytes per image.
"""

from __future__ import annotations

import io
import json
import logging
import tarfile
import tempfile
from collections.abc import Iterator
from typing import BinaryIO

from sqlalchemy import select

from harvest.settings.config import HarvestConfig
from harvest.state.db import session_scope
from harvest.state.models import Candidate, Image, ImageUrl, Publication
from harvest.storage import Store, Stores

log = logging.getLogger(__name__)

PARQUET_KEY = "manifests/dataset.parquet"
WEBDATASET_PREFIX = "webdataset/"
#: Public EXIF fields copied into the exports; private ones (GPS, owner, serials) never are.
EXIF_COLUMNS = ("make", "model", "date_taken", "orientation", "copyright", "country")
#: each image's licence (SPDX id or "unknown"), the URL of its evidence and the author to credit
LICENCE_COLUMNS = ("license", "license_url", "author")
#: publications read at a time
PAGE_ROWS = 500
#: the Parquet manifest's columns, in order (a row also carries where its bytes are staged)
COLUMNS = (
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
    *(f"exif_{name}" for name in EXIF_COLUMNS),
    "rendition_url",
    "renditions_failed",
    *LICENCE_COLUMNS,
)


def dataset_pages(database_url: str, destination: str, size: int = PAGE_ROWS) -> Iterator[list[dict]]:
    """One row per object currently published at the destination, in key order, ``size`` at a time."""
    after = ""
    while True:
        with session_scope(database_url) as session:
            found = session.execute(
                select(
                    Publication.key,
                    Publication.label,
                    Publication.score,
                    Publication.content_sha256,
                    Publication.run_id,
                    Image.sha256,
                    Image.first_url,
                    Image.width,
                    Image.height,
                    Image.format,
                    Image.mime_type,
                    Image.size_bytes,
                    Image.has_alpha,
                    Image.phash,
                    Image.entropy,
                    Image.staging,
                    Image.storage_key,
                    Image.clean_key,
                    Image.exif,
                )
                .join(Image, Image.sha256 == Publication.sha256)
                .where(
                    Publication.destination == destination,
                    Publication.withdrawn_at.is_(None),
                    Publication.key.like("images/%"),
                    Publication.key > after,
                )
                .order_by(Publication.key)
                .limit(size)
            ).all()
            if not found:
                return
            shas = list({row.sha256 for row in found})
            sources: dict[str, tuple] = {}
            for sha256, *source in session.execute(
                select(
                    Candidate.sha256,
                    Candidate.url,
                    Candidate.page_url,
                    Candidate.alt,
                    Candidate.rendition_url,
                    Candidate.renditions_failed,
                    Candidate.license,
                    Candidate.license_evidence,
                    Candidate.author,
                )
                .where(Candidate.sha256.in_(shas))
                .order_by(Candidate.id)
            ):
                sources.setdefault(sha256, tuple(source))
            url_counts: dict[str, int] = {}
            for sha256 in session.scalars(select(ImageUrl.sha256).where(ImageUrl.sha256.in_(shas))):
                url_counts[sha256] = url_counts.get(sha256, 0) + 1
        yield [_row(found_row, sources, url_counts) for found_row in found]
        after = found[-1].key


def _row(found, sources: dict[str, tuple], url_counts: dict[str, int]) -> dict:
    url, page_url, alt, rendition_url, failed, spdx, evidence, author = sources.get(
        found.sha256, (found.first_url, None, None, None, None, None, None, None)
    )
    exif = found.exif or {}
    row = {
        "key": found.key,
        "label": found.label or found.key.split("/")[1],
        "score": found.score,
        "sha256": found.content_sha256 or found.sha256,
        "source_sha256": found.sha256,
        "url": url,
        "page_url": page_url,
        "alt": alt,
        "urls_seen": url_counts.get(found.sha256, 1),
        "width": found.width,
        "height": found.height,
        "format": found.format,
        "mime_type": found.mime_type,
        "size_bytes": found.size_bytes,
        "has_alpha": found.has_alpha,
        "phash": found.phash,
        "entropy": found.entropy,
        "run_id": found.run_id,
        "staging": found.staging,
        "staging_key": found.clean_key or found.storage_key,
        "rendition_url": rendition_url or url,
        "renditions_failed": [{"url": f["url"], "reason": f["reason"]} for f in failed or []],
    }
    row.update({f"exif_{name}": _text(exif.get(name)) for name in EXIF_COLUMNS})
    row.update(license=spdx or "unknown", license_url=(evidence or {}).get("url"), author=author)
    return row


def _text(value: object) -> str | None:
    return None if value is None else str(value)


def _schema():
    import pyarrow as pa

    types = {
        "score": pa.float64(),
        "entropy": pa.float64(),
        "urls_seen": pa.int32(),
        "width": pa.int32(),
        "height": pa.int32(),
        "size_bytes": pa.int64(),
        "has_alpha": pa.bool_(),
        "renditions_failed": pa.list_(pa.struct([("url", pa.string()), ("reason", pa.string())])),
    }
    return pa.schema([(name, types.get(name, pa.string())) for name in COLUMNS])


class ParquetExport:
    """The Parquet manifest, a row group per page, written to ``sink``."""

    def __init__(self, sink: BinaryIO):
        import pyarrow.parquet as pq

        self.schema = _schema()
        self.writer = pq.ParquetWriter(sink, self.schema, compression="zstd")

    def add(self, rows: list[dict]) -> None:
        import pyarrow as pa

        table = pa.Table.from_pylist([{c: row[c] for c in COLUMNS} for row in rows], schema=self.schema)
        self.writer.write_table(table)

    def close(self) -> None:
        self.writer.close()


class WebDatasetExport:
    """Tar shards of ``shard_size`` samples, each written to a temporary file and uploaded when full;
    sample keys are img2dataset's zero-padded shard+index numbers."""

    def __init__(self, destination: Store, stores: Stores, shard_size: int):
        self.destination, self.stores, self.shard_size = destination, stores, shard_size
        self.written: list[str] = []
        self._file: BinaryIO | None = None
        self._tar: tarfile.TarFile | None = None
        self._count = 0

    def add(self, rows: list[dict]) -> None:
        for row in rows:
            shard, index = divmod(self._count, self.shard_size)
            if index == 0:
                self._finish_shard()
                # both closed when the shard is uploaded (_finish_shard) or abandoned (discard)
                self._file = tempfile.TemporaryFile()  # noqa: SIM115
                self._tar = tarfile.open(fileobj=self._file, mode="w")  # noqa: SIM115
            key = f"{shard:05d}{index:04d}" if self.shard_size <= 10_000 else f"{shard:05d}{index:09d}"
            data = self.stores(row["staging"]).get(row["staging_key"])
            ext = row["key"].rsplit(".", 1)[-1]
            meta = {k: v for k, v in row.items() if k not in ("staging", "staging_key")}
            meta.update(key=key, status="success", caption=row["alt"])
            _add(self._tar, f"{key}.{ext}", data)
            _add(self._tar, f"{key}.txt", (row["alt"] or "").encode("utf-8"))
            _add(self._tar, f"{key}.cls", row["label"].encode("utf-8"))
            _add(self._tar, f"{key}.json", json.dumps(meta, sort_keys=True).encode("utf-8"))
            self._count += 1

    def _finish_shard(self) -> None:
        if self._tar is None or self._file is None:
            return
        self._tar.close()
        key = f"{WEBDATASET_PREFIX}{len(self.written):05d}.tar"
        self.destination.put_file(key, self._file, "application/x-tar")
        self._file.close()
        self._tar = self._file = None
        self.written.append(key)

    def close(self) -> None:
        """Upload the last shard and remove shards a larger dataset left behind."""
        self._finish_shard()
        keep = set(self.written)
        for stale in [k for k in self.destination.keys(WEBDATASET_PREFIX) if k not in keep]:
            self.destination.delete(stale)

    def discard(self) -> None:
        if self._file is not None:
            self._file.close()


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = 0o644
    tar.addfile(info, io.BytesIO(data))


def write_exports(cfg: HarvestConfig, destination: Store, stores: Stores) -> dict:
    from harvest.dataset.card import CardFigures, write_card

    figures = CardFigures()
    with tempfile.TemporaryFile() as parquet_file:
        parquet = ParquetExport(parquet_file) if "parquet" in cfg.exports else None
        shards = (
            WebDatasetExport(destination, stores, cfg.webdataset_shard_size)
            if "webdataset" in cfg.exports
            else None
        )
        try:
            for rows in dataset_pages(cfg.database_url, cfg.destination):
                figures.add(rows)
                if parquet:
                    parquet.add(rows)
                if shards:
                    shards.add(rows)
        except BaseException:
            if shards:
                shards.discard()
            raise
        written: dict = {"rows": figures.images}
        if parquet:
            parquet.close()
            destination.put_file(PARQUET_KEY, parquet_file, "application/vnd.apache.parquet")
            written["parquet"] = destination.url(PARQUET_KEY)
        if shards:
            shards.close()
            written["webdataset_shards"] = len(shards.written)
    if "card" in cfg.exports:
        written["card"] = write_card(cfg, destination, figures)
    log.info("exports: %s", written)
    return written
