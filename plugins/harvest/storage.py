"""Where bytes live: a local folder or an S3 prefix behind one small interface.

Keys are relative paths ("images/goldfish/<sha256>.jpg"). Writes are atomic in both backends (a
local temp file renamed into place; a single S3 PUT), so a reader never sees half an object and a
retried stage can simply write again.
"""

from __future__ import annotations

import base64
import hashlib
import os
import tempfile
import threading
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Protocol
from urllib.parse import urlsplit

from harvest.config import S3Options, is_s3


class StorageError(Exception):
    def __init__(self, location: str, reason: str):
        self.location = location
        self.reason = reason
        super().__init__(f"{location}: {reason}")


class Store(Protocol):
    location: str

    def exists(self, key: str) -> bool: ...

    def put(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> None: ...

    def deferred_sync(self) -> AbstractContextManager[None]: ...

    def sync(self) -> None: ...

    def get(self, key: str) -> bytes: ...

    def sha256_of(self, key: str) -> str | None: ...

    def keys(self, prefix: str = "") -> Iterator[str]: ...

    def url(self, key: str) -> str: ...

    def delete(self, key: str) -> None: ...


#: Objects at least this large go up in parts, each part with its own checksum.
MULTIPART_THRESHOLD = 16 * 1024 * 1024
PART_SIZE = 8 * 1024 * 1024


class LocalStore:
    def __init__(self, root: str | Path):
        self.root = Path(root).expanduser().resolve()
        self.location = str(self.root)
        self._unsynced: list[Path] = []
        self._lock = threading.Lock()
        self._deferred = False

    def _path(self, key: str) -> Path:
        path = (self.root / key).resolve()
        if self.root not in path.parents:
            raise StorageError(self.location, f"key {key!r} escapes the store")
        return path

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    @contextmanager
    def deferred_sync(self) -> Iterator[None]:
        """Writes inside skip their own fsync; the caller calls :meth:`sync` before relying on them
        (one sync for a batch of files is several times cheaper than an fsync each)."""
        self._deferred = True
        try:
            yield
        finally:
            self._deferred = False
            self.sync()

    def put(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> None:
        path = self._path(key)
        durable = not self._deferred
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=path.parent)
            try:
                with os.fdopen(fd, "wb") as handle:
                    handle.write(data)
                    handle.flush()
                    if durable:
                        os.fsync(handle.fileno())
                os.replace(tmp, path)
                if not durable:
                    with self._lock:
                        self._unsynced.append(path)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
        except OSError as exc:
            raise StorageError(str(path), f"cannot write: {exc.strerror or exc}") from exc

    def sync(self) -> None:
        """Make every non-durable write so far durable: one syncfs() for the whole batch where the
        platform has it (an fsync per file costs several times more), else an fsync per file."""
        with self._lock:
            pending, self._unsynced = self._unsynced, []
        if not pending:
            return
        if _syncfs(self.root):
            return
        for path in pending:
            try:
                fd = os.open(path, os.O_RDONLY)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
            except OSError as exc:
                raise StorageError(str(path), f"cannot sync: {exc.strerror or exc}") from exc

    def get(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
        except OSError as exc:
            raise StorageError(str(self._path(key)), f"cannot read: {exc.strerror or exc}") from exc

    def sha256_of(self, key: str) -> str | None:
        path = self._path(key)
        if not path.is_file():
            return None
        return hashlib.sha256(path.read_bytes()).hexdigest()

    def keys(self, prefix: str = "") -> Iterator[str]:
        base = self.root / prefix if prefix else self.root
        if not base.exists():
            return
        for path in sorted(base.rglob("*")):
            if path.is_file() and not path.name.startswith(".tmp-"):
                yield path.relative_to(self.root).as_posix()

    def url(self, key: str) -> str:
        return str(self._path(key))

    def delete(self, key: str) -> None:
        try:
            self._path(key).unlink(missing_ok=True)
        except OSError as exc:
            raise StorageError(str(self._path(key)), f"cannot delete: {exc.strerror or exc}") from exc


class S3Store:
    """An S3 prefix. Every object carries its sha256 as a checksum the server verifies on upload."""

    def __init__(self, location: str, options: S3Options | None = None, client=None):
        parts = urlsplit(location)
        self.bucket = parts.netloc
        self.prefix = parts.path.strip("/")
        self.location = location.rstrip("/")
        self.client = client or make_s3_client(options)

    def _key(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    def _error(self, key: str, exc: Exception) -> StorageError:
        return StorageError(f"s3://{self.bucket}/{self._key(key)}", f"{type(exc).__name__}: {exc}")

    def exists(self, key: str) -> bool:
        return self._head(key) is not None

    def _head(self, key: str) -> dict | None:
        from botocore.exceptions import ClientError

        try:
            return self.client.head_object(Bucket=self.bucket, Key=self._key(key), ChecksumMode="ENABLED")
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return None
            raise self._error(key, exc) from exc
        except Exception as exc:  # connection problems: surface with the location
            raise self._error(key, exc) from exc

    def put(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> None:
        digest = hashlib.sha256(data).digest()
        if len(data) >= MULTIPART_THRESHOLD:
            self._put_multipart(key, data, content_type, digest)
            return
        try:
            self.client.put_object(
                Bucket=self.bucket,
                Key=self._key(key),
                Body=data,
                ContentType=content_type,
                ChecksumSHA256=base64.b64encode(digest).decode("ascii"),
                Metadata={"sha256": digest.hex()},
            )
        except Exception as exc:
            raise self._error(key, exc) from exc

    @contextmanager
    def deferred_sync(self) -> Iterator[None]:
        yield

    def sync(self) -> None:
        """S3 writes are durable once the PUT returns."""

    def _put_multipart(self, key: str, data: bytes, content_type: str, digest: bytes) -> None:
        """Large objects in parts; the server checks every part's SHA-256, and an aborted upload
        leaves no object behind (the key appears only on completion)."""
        upload = None
        try:
            upload = self.client.create_multipart_upload(
                Bucket=self.bucket,
                Key=self._key(key),
                ContentType=content_type,
                ChecksumAlgorithm="SHA256",
                Metadata={"sha256": digest.hex()},
            )
            parts = []
            for number, start in enumerate(range(0, len(data), PART_SIZE), 1):
                body = data[start : start + PART_SIZE]
                checksum = base64.b64encode(hashlib.sha256(body).digest()).decode("ascii")
                response = self.client.upload_part(
                    Bucket=self.bucket,
                    Key=self._key(key),
                    UploadId=upload["UploadId"],
                    PartNumber=number,
                    Body=body,
                    ChecksumAlgorithm="SHA256",
                    ChecksumSHA256=checksum,
                )
                parts.append({"PartNumber": number, "ETag": response["ETag"], "ChecksumSHA256": checksum})
            self.client.complete_multipart_upload(
                Bucket=self.bucket,
                Key=self._key(key),
                UploadId=upload["UploadId"],
                MultipartUpload={"Parts": parts},
            )
        except Exception as exc:
            if upload is not None:
                try:
                    self.client.abort_multipart_upload(
                        Bucket=self.bucket, Key=self._key(key), UploadId=upload["UploadId"]
                    )
                except Exception:  # noqa: BLE001 - the original error is the one to report
                    pass
            raise self._error(key, exc) from exc

    def delete(self, key: str) -> None:
        try:
            self.client.delete_object(Bucket=self.bucket, Key=self._key(key))
        except Exception as exc:
            raise self._error(key, exc) from exc

    def get(self, key: str) -> bytes:
        try:
            return self.client.get_object(Bucket=self.bucket, Key=self._key(key))["Body"].read()
        except Exception as exc:
            raise self._error(key, exc) from exc

    def sha256_of(self, key: str) -> str | None:
        head = self._head(key)
        if head is None:
            return None
        return head.get("Metadata", {}).get("sha256") or hashlib.sha256(self.get(key)).hexdigest()

    def keys(self, prefix: str = "") -> Iterator[str]:
        full = self._key(prefix)
        strip = len(self.prefix) + 1 if self.prefix else 0
        paginator = self.client.get_paginator("list_objects_v2")
        try:
            for page in paginator.paginate(Bucket=self.bucket, Prefix=full):
                for item in page.get("Contents", []):
                    yield item["Key"][strip:]
        except Exception as exc:
            raise self._error(prefix, exc) from exc

    def url(self, key: str) -> str:
        return f"s3://{self.bucket}/{self._key(key)}"


def _syncfs(root: Path) -> bool:
    """syncfs(2) on the filesystem holding ``root``; False where it is not available."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        syncfs = libc.syncfs
    except (OSError, AttributeError):
        return False
    fd = os.open(root, os.O_RDONLY)
    try:
        return syncfs(fd) == 0
    finally:
        os.close(fd)


def make_s3_client(options: S3Options | None):
    import boto3
    from botocore.config import Config

    options = options or S3Options()
    return boto3.client(
        "s3",
        endpoint_url=options.endpoint_url,
        aws_access_key_id=options.aws_access_key_id,
        aws_secret_access_key=options.aws_secret_access_key,
        region_name=options.region_name or "us-east-1",
        config=Config(retries={"max_attempts": 3, "mode": "standard"}, connect_timeout=5, read_timeout=60),
    )


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
