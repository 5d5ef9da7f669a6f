"""Where bytes live: a local folder or an S3 prefix behind one small interface.

Keys are relative paths ("images/goldfish/<sha256>.jpg"). Writes are atomic in both backends (a
local temp file renamed into place; a single S3 PUT), so a reader never sees half an object and a
retried stage can simply write again. A local writer killed mid-write leaves its temp file in one
folder, where the next store opened on that machine finds and removes it: only in a writing folder a
store created itself (it holds the store's marker folder), and only files named like its temp files.
"""

from __future__ import annotations

from harvest.settings.config import S3Options, is_s3
from harvest.storage.interface import COPY_CHUNK, StorageError, Store
from harvest.storage.local import ABANDONED_AFTER, WRITING, WRITING_MARKER, LocalStore
from harvest.storage.s3 import (
    MULTIPART_THRESHOLD,
    PART_SIZE,
    PASSING_CODES,
    S3_ATTEMPTS,
    S3Store,
    make_s3_client,
)

__all__ = [
    "ABANDONED_AFTER",
    "COPY_CHUNK",
    "MULTIPART_THRESHOLD",
    "PART_SIZE",
    "PASSING_CODES",
    "S3_ATTEMPTS",
    "WRITING",
    "WRITING_MARKER",
    "LocalStore",
    "S3Store",
    "StorageError",
    "Store",
    "Stores",
    "make_s3_client",
    "open_store",
]


def open_store(location: str, s3: S3Options | None = None) -> Store:
    if is_s3(location):
        return S3Store(location, s3)
    return LocalStore(location)


class Stores:
    """Opens each location once; images downloaded by earlier runs may sit in another staging area."""

    def __init__(self, s3: S3Options | None):
        self.s3 = s3
        self._open: dict[str, Store] = {}

    def __call__(self, location: str) -> Store:
        if location not in self._open:
            self._open[location] = open_store(location, self.s3)
        return self._open[location]
