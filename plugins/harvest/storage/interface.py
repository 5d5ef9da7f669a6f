"""What every store offers (Store), and the one error a store raises (StorageError)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager
from typing import BinaryIO, Protocol


class StorageError(Exception):
    """A store operation failed; ``transient`` when the store itself failed for a passing reason (an
    S3 server error or no answer), which says nothing about the object and is worth a re-run."""

    def __init__(self, location: str, reason: str, transient: bool = False):
        self.location = location
        self.reason = reason
        self.transient = transient
        super().__init__(f"{location}: {reason}")


class Store(Protocol):
    location: str

    def exists(self, key: str) -> bool: ...

    def put(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> None: ...

    def put_new(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> bool: ...

    def put_file(
        self, key: str, source: BinaryIO, content_type: str = "application/octet-stream"
    ) -> None: ...

    def deferred_sync(self) -> AbstractContextManager[None]: ...

    def sync(self) -> None: ...

    def get(self, key: str) -> bytes: ...

    def sha256_of(self, key: str) -> str | None: ...

    def keys(self, prefix: str = "") -> Iterator[str]: ...

    def url(self, key: str) -> str: ...

    def delete(self, key: str) -> None: ...


#: Read size when copying or hashing a file.
COPY_CHUNK = 1024 * 1024
