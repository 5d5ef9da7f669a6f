"""Where bytes live: a local folder or an S3 prefix behind one small interface.

Keys are relative paths ("images/goldfish/<sha256>.jpg"). Writes are atomic in both backends (a
local temp file renamed into place; a single S3 PUT), so a reader never sees half an object and a
retried stage can simply write again. A local writer killed mid-write leaves its temp file in one
folder, where the next store opened on that machine finds and removes it: only in a writing folder a
store created itself (it holds the store's marker folder), and only files named like its temp files.
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import os
import re
import socket
import stat
import threading
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import BinaryIO, Protocol
from urllib.parse import urlsplit

from harvest.settings.config import S3Options, is_s3


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


#: Attempts at each S3 request (the client retries) and at each read of a body cut off halfway.
S3_ATTEMPTS = 3
#: Objects at least this large go up in parts, each part with its own checksum.
MULTIPART_THRESHOLD = 16 * 1024 * 1024
PART_SIZE = 8 * 1024 * 1024
#: Read size when copying or hashing a file.
COPY_CHUNK = 1024 * 1024


#: the folder of unfinished local writes (renamed into place when complete)
WRITING = ".writing"
#: made inside the writing folder by the store that creates it; a writing folder without it is not
#: swept, as it is someone else's (a folder opened as a store may hold a ``.writing`` of its own). A
#: folder, not a file, so a published dataset still holds only its objects as files.
WRITING_MARKER = ".image-harvester-store"
#: a temp file this old belongs to a dead writer even if its process id was reused or is on another host
ABANDONED_AFTER = 24 * 3600
#: the names :func:`_temp_prefix` and a counter give temp files: ``.tmp-<host>.<pid>-<hex>``
_TEMP_NAME = re.compile(r"\.tmp-(?P<host>.+)\.(?P<pid>[0-9]+)-[0-9a-f]+")
_CREATE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
#: temp file names within a process: host and process id, then a number from this counter
_TEMP_NAMES = itertools.count()
_prefix: tuple[int, str] | None = None


def _discard(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def _temp_prefix() -> str:
    """``.tmp-<host>.<pid>-``, worked out again after a fork (the child has another process id)."""
    global _prefix
    pid = os.getpid()
    if _prefix is None or _prefix[0] != pid:
        _prefix = (pid, f".tmp-{socket.gethostname()}.{pid}-")
    return _prefix[1]


class LocalStore:
    def __init__(self, root: str | Path):
        self.root = Path(root).expanduser().resolve()
        self.location = str(self.root)
        self._unsynced: list[str] = []
        self._lock = threading.Lock()
        self._deferred = False
        self._untracked = False
        #: folder keys already proven to resolve inside the root ("images/ab" -> its real path + "/")
        self._folders: dict[str, str] = {}
        self._remove_abandoned()

    def _remove_abandoned(self) -> None:
        """Delete the temp files of writers that died mid-write (a SIGKILLed or OOM-killed task): no
        one will rename them. Names carry host and process id; a live writer's files are left alone.
        Only a writing folder a store created (:data:`WRITING_MARKER`) is swept, and in it only files
        named like a store's temp files: opening someone else's folder as a store deletes nothing."""
        entries = _own_writing_folder(self.root / WRITING)
        host, now = socket.gethostname(), time.time()
        for entry in entries:
            name = _TEMP_NAME.fullmatch(entry.name)
            try:
                if name is None or not entry.is_file(follow_symlinks=False):
                    continue
                dead = name["host"] == host and not _alive(int(name["pid"]))
                if dead or now - entry.stat(follow_symlinks=False).st_mtime > ABANDONED_AFTER:
                    os.unlink(entry.path)
            except OSError:
                pass  # removed by another store meanwhile

    def _path(self, key: str) -> Path:
        path = (self.root / key).resolve()
        if self.root not in path.parents:
            raise StorageError(self.location, f"key {key!r} escapes the store")
        return path

    def _write_path(self, key: str) -> str:
        """Where a write of ``key`` goes: the folder is resolved (symlinks and all) once and then
        remembered, since resolving walks every component of the path with a syscall each; the file
        name itself is never followed (writes rename over it, :meth:`exists` does not follow it).
        A string, not a Path: this runs twice per download, and pathlib costs more than the lstat."""
        folder, _, name = key.rpartition("/")
        if name in ("", ".", "..") or folder.startswith("/"):
            return str(self._path(key))
        real = self._folders.get(folder)
        if real is None:
            resolved = (self.root / folder).resolve() if folder else self.root
            if resolved != self.root and self.root not in resolved.parents:
                raise StorageError(self.location, f"key {key!r} escapes the store")
            real = self._folders[folder] = f"{resolved}{os.sep}"
        return real + name

    def exists(self, key: str) -> bool:
        try:
            return stat.S_ISREG(os.lstat(self._write_path(key)).st_mode)
        except OSError:
            return False

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

    @contextmanager
    def synced_elsewhere(self) -> Iterator[None]:
        """Writes inside skip their fsync and are not remembered: the process that adopts them
        (:meth:`adopt`) syncs them. For an inspecting process of the download stage, which may
        write for hours and would otherwise keep every path it wrote."""
        self._deferred = self._untracked = True
        try:
            yield
        finally:
            self._deferred = self._untracked = False

    def put(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> None:
        self._write(key, data)

    def put_file(self, key: str, source: BinaryIO, content_type: str = "application/octet-stream") -> None:
        """Like :meth:`put`, copying from an open file from its start: an object written as it is
        built (a manifest, a tar shard) never has to be held in memory whole."""
        source.seek(0)
        self._write(key, source)

    def _write(self, key: str, data: bytes | BinaryIO) -> None:
        path = self._write_path(key)
        durable = not self._deferred
        try:
            tmp = self._write_temp(data, durable)
            try:
                self._rename(tmp, path)
                if not durable and not self._untracked:
                    with self._lock:
                        self._unsynced.append(path)
            except BaseException:
                _discard(tmp)
                raise
        except OSError as exc:
            raise StorageError(str(path), f"cannot write: {exc.strerror or exc}") from exc

    def _write_temp(self, data: bytes | BinaryIO, durable: bool) -> str:
        """``data`` in a new temp file of the writing folder (named after this host and process, for
        :meth:`_remove_abandoned`); returns its path. Plain ``os`` calls, the folders assumed to exist
        until a call says otherwise: a write is in the hot path of a download, and ``mkstemp``, two
        ``mkdir`` and a buffered file object made it cost 0.087 ms of CPU on tmpfs against 0.05."""
        writing = str(self.root / WRITING)
        prefix = _temp_prefix()
        for _ in range(100):
            tmp = f"{writing}/{prefix}{next(_TEMP_NAMES):x}"
            try:
                fd = os.open(tmp, _CREATE, 0o600)
            except FileExistsError:  # left by a dead process that had this process id
                continue
            except FileNotFoundError:
                _make_writing_folder(writing)
                continue
            try:
                chunks = (data,) if isinstance(data, bytes) else iter(lambda: data.read(COPY_CHUNK), b"")
                for chunk in chunks:
                    view = memoryview(chunk)
                    while view:
                        view = view[os.write(fd, view) :]
                if durable:
                    os.fsync(fd)
            except BaseException:
                os.close(fd)
                _discard(tmp)
                raise
            os.close(fd)
            return tmp
        raise FileExistsError(f"no free temporary file name in {writing}")

    def _rename(self, tmp: str, path: str) -> None:
        """Move the temp file into place, creating the key's folder the first time it is missing
        (a folder that exists is not looked at again: a ``mkdir`` per write costs as much as the write)."""
        try:
            os.replace(tmp, path)
        except FileNotFoundError:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            os.replace(tmp, path)

    def put_new(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> bool:
        """Write a content-addressed key unless it is there; True if this call wrote it. (Two writers
        racing here both rename identical bytes into place, which no reader can tell apart.)"""
        if self.exists(key):
            return False
        self.put(key, data, content_type)
        return True

    def adopt(self, *keys: str) -> None:
        """Keys another process wrote into this store without syncing (an inspecting process of the
        download stage): the next :meth:`sync` makes them durable with this store's own writes."""
        with self._lock:
            self._unsynced.extend(self._write_path(key) for key in keys)

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
            if path.is_file() and not path.name.startswith(".tmp-") and WRITING not in path.parts:
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
        self._key_locks = [threading.Lock() for _ in range(64)]

    def _key(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    def _error(self, key: str, exc: Exception) -> StorageError:
        return StorageError(
            f"s3://{self.bucket}/{self._key(key)}", f"{type(exc).__name__}: {exc}", transient=_passing(exc)
        )

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
        self._write(key, data, len(data), hashlib.sha256(data).digest(), content_type, only_new=False)

    def put_file(self, key: str, source: BinaryIO, content_type: str = "application/octet-stream") -> None:
        """Like :meth:`put`, streaming from an open file: its SHA-256 is computed in one pass, then
        the body (or each part) is read from the file as it goes up."""
        digest = hashlib.sha256()
        source.seek(0)
        while chunk := source.read(COPY_CHUNK):
            digest.update(chunk)
        size = source.tell()
        source.seek(0)
        self._write(key, source, size, digest.digest(), content_type, only_new=False)

    def put_new(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> bool:
        """Write a content-addressed key unless it is there; True if this call wrote it.

        Of two writers racing for one key, only one uploads it: the threads of a task take turns
        per key, and the write is conditional (If-None-Match: *), so the S3 server refuses the
        second of two tasks' uploads and the object stays the one first written."""
        with self._key_locks[hash(key) % len(self._key_locks)]:
            if self.exists(key):
                return False
            return self._write(
                key, data, len(data), hashlib.sha256(data).digest(), content_type, only_new=True
            )

    def _write(
        self, key: str, body: bytes | BinaryIO, size: int, digest: bytes, content_type: str, only_new: bool
    ) -> bool:
        """Upload ``size`` bytes from ``body``; with ``only_new``, False when the server refused
        because the key exists."""
        condition = {"IfNoneMatch": "*"} if only_new else {}
        if size >= MULTIPART_THRESHOLD:
            if isinstance(body, bytes):
                parts = (body[start : start + PART_SIZE] for start in range(0, size, PART_SIZE))
            else:
                parts = iter(lambda: body.read(PART_SIZE), b"")
            return self._put_multipart(key, parts, content_type, digest, condition)
        try:
            self.client.put_object(
                Bucket=self.bucket,
                Key=self._key(key),
                Body=body,
                ContentLength=size,
                ContentType=content_type,
                ChecksumSHA256=base64.b64encode(digest).decode("ascii"),
                Metadata={"sha256": digest.hex()},
                **condition,
            )
        except Exception as exc:
            if only_new and _exists_already(exc):
                return False
            raise self._error(key, exc) from exc
        return True

    @contextmanager
    def deferred_sync(self) -> Iterator[None]:
        yield

    def sync(self) -> None:
        """S3 writes are durable once the PUT returns."""

    def _put_multipart(
        self, key: str, parts: Iterator[bytes], content_type: str, digest: bytes, condition: dict[str, str]
    ) -> bool:
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
            uploaded = []
            for number, body in enumerate(parts, 1):
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
                uploaded.append({"PartNumber": number, "ETag": response["ETag"], "ChecksumSHA256": checksum})
            self.client.complete_multipart_upload(
                Bucket=self.bucket,
                Key=self._key(key),
                UploadId=upload["UploadId"],
                MultipartUpload={"Parts": uploaded},
                **condition,
            )
        except Exception as exc:
            if upload is not None:
                try:
                    self.client.abort_multipart_upload(
                        Bucket=self.bucket, Key=self._key(key), UploadId=upload["UploadId"]
                    )
                except Exception:  # noqa: BLE001 - the original error is the one to report
                    pass
            if condition and _exists_already(exc):
                return False
            raise self._error(key, exc) from exc
        return True

    def delete(self, key: str) -> None:
        try:
            self.client.delete_object(Bucket=self.bucket, Key=self._key(key))
        except Exception as exc:
            raise self._error(key, exc) from exc

    def get(self, key: str) -> bytes:
        """The client retries a request that fails, but not a body cut off after the answer began:
        such a read is retried here, as often as the client retries requests."""
        from botocore.exceptions import IncompleteReadError, ReadTimeoutError, ResponseStreamingError

        attempt = 1
        while True:
            try:
                body = self.client.get_object(Bucket=self.bucket, Key=self._key(key))["Body"]
            except Exception as exc:
                raise self._error(key, exc) from exc
            try:
                return body.read()
            except (IncompleteReadError, ReadTimeoutError, ResponseStreamingError) as exc:
                if attempt >= S3_ATTEMPTS:
                    raise self._error(key, exc) from exc
                attempt += 1
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


#: S3 error codes that mean "try again later" whatever the HTTP status says
PASSING_CODES = {"SlowDown", "RequestTimeout", "ServiceUnavailable", "InternalError", "Throttling"}


def _passing(exc: Exception) -> bool:
    """Whether an S3 failure is the server's or the network's (5xx, throttling, no or a cut-off answer)."""
    from botocore.exceptions import ClientError, HTTPClientError, IncompleteReadError
    from botocore.exceptions import ConnectionError as S3ConnectionError

    if isinstance(exc, (HTTPClientError, S3ConnectionError, IncompleteReadError)):
        return True
    if isinstance(exc, ClientError):
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0
        return status >= 500 or status == 429 or exc.response.get("Error", {}).get("Code") in PASSING_CODES
    return False


def _exists_already(exc: Exception) -> bool:
    """A conditional upload (If-None-Match: *) refused because the key was written meanwhile."""
    from botocore.exceptions import ClientError

    if not isinstance(exc, ClientError):
        return False
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return status == 412 or exc.response.get("Error", {}).get("Code") == "PreconditionFailed"


def _own_writing_folder(writing: Path) -> list[os.DirEntry]:
    """The entries of a writing folder a store created (a real folder, not a link, holding the marker
    folder); none for any other folder, which is not this store's to clean."""
    try:
        if not stat.S_ISDIR(os.lstat(writing).st_mode):
            return []
        if not stat.S_ISDIR(os.lstat(writing / WRITING_MARKER).st_mode):
            return []
        return list(os.scandir(writing))
    except OSError:
        return []


def _make_writing_folder(writing: str) -> None:
    """Create the writing folder and mark it as a store's; a folder that already exists (made by a
    concurrent writer, or not by a store at all) is used as it is and left unmarked."""
    os.makedirs(os.path.dirname(writing), exist_ok=True)
    try:
        os.mkdir(writing)
    except FileExistsError:
        return
    try:
        os.mkdir(os.path.join(writing, WRITING_MARKER))
    except FileExistsError:
        pass


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


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
        config=Config(
            retries={"max_attempts": S3_ATTEMPTS, "mode": "standard"}, connect_timeout=5, read_timeout=60
        ),
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
