"""A run's JSONL manifest (``manifests/<run slug>.jsonl``): one row per image the run kept, in the
dataset's one schema (:mod:`harvest.dataset.schema`), written to a temporary file a chunk of keepers
at a time and put at the destination in one write when the run is done."""

from __future__ import annotations

import json
import tempfile
from typing import Any

from harvest.dataset.layout import ClassIndex, manifest_key, training_key
from harvest.dataset.schema import image_details, public, record
from harvest.settings.config import HarvestConfig
from harvest.storage import Store


class RunManifest:
    """Rows of one run's keepers. ``add`` takes a chunk of the publish stage's keepers (anything
    with ``key``, ``label``, ``score``, ``sha256`` (the download's), ``published_sha256``, ``model``
    and the run's own candidate: ``url``, ``page_url``, ``alt``, ``rendition_url``,
    ``renditions_failed``, ``license``, ``license_url``, ``author``); new labels are given their
    ``classes.json`` index as they appear."""

    def __init__(self, cfg: HarvestConfig, destination: Store):
        self.cfg, self.destination = cfg, destination
        self.run_id = cfg.manifest_id or cfg.run_id
        self.key = manifest_key(self.run_id)
        self.classes = ClassIndex(destination)
        self._file = tempfile.TemporaryFile()  # noqa: SIM115 - closed when the with block ends
        self.rows = 0

    def __enter__(self) -> RunManifest:
        return self

    def __exit__(self, *_: object) -> None:
        self._file.close()

    def add(self, kept: list[Any]) -> None:
        if not kept:
            return
        self.classes.ensure(item.label for item in kept)
        # each row's source is the run's own candidate (below), so none is looked up
        details = image_details(self.cfg.database_url, (item.sha256 for item in kept), sources=False)
        for item in kept:
            # a run's manifest says where this run found the image (its own candidate), not where
            # the state DB first saw it; in SOURCE_COLUMNS order
            found = (
                item.url,
                item.page_url,
                item.alt,
                item.rendition_url,
                item.renditions_failed,
                item.license,
                {"url": item.license_url} if item.license_url else None,
                item.author,
            )
            row = record(
                key=item.key,
                label=item.label,
                label_index=self.classes[item.label],
                score=item.score,
                sha256=item.published_sha256,
                run_id=self.run_id,
                model=item.model,
                image={**details[item.sha256], "source": found},
                training_key=training_key(item.key) if self.cfg.publish_format == "jpeg" else None,
            )
            self._file.write(json.dumps(public(row), ensure_ascii=False).encode("utf-8") + b"\n")
            self.rows += 1

    def put(self) -> str:
        """Put the manifest at the destination (atomically: it never names an object that is not
        there); returns its URL."""
        self.destination.put_file(self.key, self._file, "application/x-ndjson")
        return self.destination.url(self.key)
