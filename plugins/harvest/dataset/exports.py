"""Dataset-wide exports that ML tools read as is, all rebuilt from the state DB's current
publications (withdrawn objects excluded) in the dataset's one schema (:mod:`harvest.dataset.schema`):
the Parquet manifest, the ImageFolder ``metadata.jsonl`` (Hugging Face ``imagefolder`` attaches its
columns to each image by ``file_name``), ``classes.json``, the WebDataset shards (written
incrementally: :mod:`harvest.dataset.webdataset`) and the dataset card.

The destination's publications are read a page at a time and each page goes to every export at
once: the Parquet and metadata files are written to temporary files and uploaded from them, and the
card keeps only counters, the histograms' values and a few sample images per label. Publish's memory
therefore does not grow with the size of the dataset by more than a few bytes per image.
"""

from __future__ import annotations

import json
import logging
import tempfile
from collections.abc import Iterator
from typing import Any, BinaryIO

from sqlalchemy import select

from harvest.dataset.layout import (
    IMAGES_PREFIX,
    METADATA_KEY,
    PARQUET_KEY,
    TRAINING_METADATA_KEY,
    TRAINING_PREFIX,
    ClassIndex,
    training_key,
)
from harvest.dataset.runs import Runs
from harvest.dataset.schema import COLUMNS, EXIF_COLUMNS, arrow_schema, image_details, public, record
from harvest.settings.config import HarvestConfig
from harvest.state.db import session_scope
from harvest.state.models import Publication
from harvest.storage import Store, Stores

log = logging.getLogger(__name__)

__all__ = ["COLUMNS", "EXIF_COLUMNS", "PARQUET_KEY", "DatasetRows", "write_exports"]

#: publications read at a time
PAGE_ROWS = 500

_FIELDS = (
    Publication.key,
    Publication.label,
    Publication.score,
    Publication.sha256,
    Publication.content_sha256,
    Publication.run_id,
)


class DatasetRows:
    """The destination's published objects as rows of the one schema: the label's index from
    ``classes.json`` (new labels appended), the run id and model of the run that published each."""

    def __init__(self, cfg: HarvestConfig, destination: Store):
        self.cfg = cfg
        self.classes = ClassIndex(destination)
        self.runs = Runs(cfg.database_url, cfg.models_dir)

    def _where(self):
        return (
            Publication.destination == self.cfg.destination,
            Publication.withdrawn_at.is_(None),
            Publication.key.like(f"{IMAGES_PREFIX}%"),
        )

    def pages(self, size: int = PAGE_ROWS) -> Iterator[list[dict]]:
        """Every published object, in key order, ``size`` at a time."""
        after = ""
        while True:
            with session_scope(self.cfg.database_url) as session:
                found = session.execute(
                    select(*_FIELDS)
                    .where(*self._where(), Publication.key > after)
                    .order_by(Publication.key)
                    .limit(size)
                ).all()
            if not found:
                return
            yield self._rows(found)
            after = found[-1].key

    def for_keys(self, keys: list[str]) -> list[dict]:
        """The rows of some published objects, in the order of ``keys``."""
        with session_scope(self.cfg.database_url) as session:
            found = session.execute(select(*_FIELDS).where(*self._where(), Publication.key.in_(keys))).all()
        rows = {row["key"]: row for row in self._rows(found)}
        return [rows[key] for key in keys if key in rows]

    def _rows(self, found) -> list[dict]:
        self.classes.ensure(self._label(p) for p in found)
        images = image_details(self.cfg.database_url, (p.sha256 for p in found))
        jpeg = self.cfg.publish_format == "jpeg"
        rows = []
        for p in found:
            run = self.runs[p.run_id]
            rows.append(
                record(
                    key=p.key,
                    label=self._label(p),
                    label_index=self.classes[self._label(p)],
                    score=p.score,
                    sha256=p.content_sha256 or p.sha256,
                    run_id=run.run_id,
                    model=run.model,
                    image=images[p.sha256],
                    training_key=training_key(p.key) if jpeg else None,
                )
            )
        return rows

    @staticmethod
    def _label(publication) -> str:
        return publication.label or publication.key.split("/")[1]


class ParquetExport:
    """The Parquet manifest, a row group per page, written to ``sink``."""

    def __init__(self, sink: BinaryIO):
        import pyarrow.parquet as pq

        self.schema = arrow_schema()
        self.writer = pq.ParquetWriter(sink, self.schema, compression="zstd")

    def add(self, rows: list[dict]) -> None:
        import pyarrow as pa

        table = pa.Table.from_pylist([public(row) for row in rows], schema=self.schema)
        self.writer.write_table(table)

    def close(self) -> None:
        self.writer.close()


class ImageFolderMetadata:
    """``metadata.jsonl`` beside an ImageFolder tree: the row of each image plus ``file_name``, its
    path relative to the file (what the Hugging Face ``imagefolder`` builder joins on)."""

    def __init__(self, prefix: str, sink: BinaryIO):
        self.prefix, self.sink = prefix, sink

    def add(self, rows: list[dict]) -> None:
        for row in rows:
            key = row["training_key"] if self.prefix == TRAINING_PREFIX else row["key"]
            line = {"file_name": key.removeprefix(self.prefix), **public(row)}
            self.sink.write(json.dumps(line, ensure_ascii=False).encode("utf-8") + b"\n")


def write_exports(cfg: HarvestConfig, destination: Store, stores: Stores) -> dict[str, Any]:
    from harvest.dataset.card import CardFigures, write_card
    from harvest.dataset.webdataset import update_shards

    dataset = DatasetRows(cfg, destination)
    figures = CardFigures()
    card = "card" in cfg.exports
    with (
        tempfile.TemporaryFile() as parquet_file,
        tempfile.TemporaryFile() as metadata_file,
        tempfile.TemporaryFile() as training_file,
    ):
        parquet = ParquetExport(parquet_file) if "parquet" in cfg.exports else None
        # the Hugging Face layout: the card's YAML points at the folders these describe
        metadata = [ImageFolderMetadata(IMAGES_PREFIX, metadata_file)] if card else []
        if card and cfg.publish_format == "jpeg":
            metadata.append(ImageFolderMetadata(TRAINING_PREFIX, training_file))
        for rows in dataset.pages():
            figures.add(rows)
            if card:
                figures.add_samples(rows, stores)
            if parquet:
                parquet.add(rows)
            for part in metadata:
                part.add(rows)
        written: dict[str, Any] = {"rows": figures.images}
        if parquet:
            parquet.close()
            destination.put_file(PARQUET_KEY, parquet_file, "application/vnd.apache.parquet")
            written["parquet"] = destination.url(PARQUET_KEY)
        for part, key in zip(metadata, (METADATA_KEY, TRAINING_METADATA_KEY), strict=False):
            destination.put_file(key, part.sink, "application/x-ndjson")
    if "webdataset" in cfg.exports:
        shards = update_shards(
            cfg.database_url,
            cfg.destination,
            destination,
            stores,
            dataset.for_keys,
            cfg.manifest_id or cfg.run_id,
            cfg.webdataset_shard_size,
        )
        written["webdataset_shards"] = shards["shards"]
        written["webdataset_new_shards"] = shards["new"]
    if card:
        written["card"] = write_card(cfg, destination, figures, dataset)
    log.info("exports: %s", written)
    return written
