"""Where each part of a published dataset lives at its destination, and the names it gets.

Object names are safe everywhere a dataset is copied to: run ids become slugs (``[A-Za-z0-9._-]``
only, so no ``:`` or ``+`` in a file name, which Windows refuses and S3 tools quote), while every
manifest row carries the real run id. Class indices come from ``classes.json`` at the destination,
which only ever grows: a label keeps its index for the life of the dataset.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable

from harvest.images.variants import TRAINING_PREFIX, training_key
from harvest.storage import Store

__all__ = ["TRAINING_PREFIX", "ClassIndex", "manifest_key", "slug", "training_key"]

#: the ImageFolder tree every training stack reads; its ``metadata.jsonl`` attaches url, alt, score
IMAGES_PREFIX = "images/"
METADATA_KEY = "images/metadata.jsonl"
#: the optional training copy (``publish_format: jpeg``, :mod:`harvest.images.variants`): RGB JPEG,
#: the same tree and file names as ``images/``
TRAINING_METADATA_KEY = "training/metadata.jsonl"
MANIFESTS_PREFIX = "manifests/"
PARQUET_KEY = "manifests/dataset.parquet"
WEBDATASET_PREFIX = "webdataset/"
#: which publications each WebDataset shard holds, so a publish adds shards instead of rebuilding
SHARDS_KEY = "webdataset/shards.json"
CLASSES_KEY = "classes.json"
CARD_KEY = "README.md"
#: author, source and licence of every published image whose licence requires attribution
ATTRIBUTION_KEY = "ATTRIBUTION.md"
CARD_PREFIX = "card/"

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def slug(run_id: str) -> str:
    """A run id as a file name: every run of characters outside ``[A-Za-z0-9._-]`` becomes one ``-``
    (``manual__2026-12-03T07:36:58.434181+00:00`` -> ``manual__2026-12-03T07-36-58.434181-00-00``)."""
    return _UNSAFE.sub("-", run_id).strip("-.") or "run"


def manifest_key(run_id: str) -> str:
    """The JSONL manifest of one run, named after its slug; its rows carry the run id itself."""
    return f"{MANIFESTS_PREFIX}{slug(run_id)}.jsonl"


class ClassIndex:
    """``classes.json``: label -> integer index, append-only. New labels get the next indices, in
    sorted order among themselves; a label never changes index nor disappears, so a model trained on
    an earlier version of the dataset keeps its meaning."""

    def __init__(self, destination: Store):
        self.destination = destination
        self.indexes: dict[str, int] = {}
        if destination.exists(CLASSES_KEY):
            stored = json.loads(destination.get(CLASSES_KEY).decode("utf-8"))
            self.indexes = {str(label): int(index) for label, index in stored.items()}

    def ensure(self, labels: Iterable[str]) -> bool:
        """Give every new label the next index and write the file; True if it changed."""
        new = sorted(set(labels) - set(self.indexes))
        if not new:
            return False
        start = max(self.indexes.values(), default=-1) + 1
        self.indexes.update({label: start + i for i, label in enumerate(new)})
        body = json.dumps(self.indexes, indent=1, ensure_ascii=False) + "\n"
        self.destination.put(CLASSES_KEY, body.encode("utf-8"), "application/json")
        return True

    def __getitem__(self, label: str) -> int:
        return self.indexes[label]

    def names(self) -> list[str]:
        """The labels in index order (index i is ``names()[i]``; indices are dense from 0)."""
        return sorted(self.indexes, key=self.indexes.__getitem__)
