"""A store under an S3 prefix: each object is written by a single PUT (or a multipart upload with a
checksum per part), so a reader never sees half an object; failures of the server or the network
are StorageError(transient=True)."""

from __future__ import annotations

import base64
import hashlib
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import BinaryIO
from urllib.parse import urlsplit

from harvest.settings.config import S3Options
from harvest.storage.interface import COPY_CHUNK, StorageError

#: Attempts at each S3 request (the client retries) and at each read of a body cut off halfway.
S3_ATTEMPTS = 3


#: Objects at least this large go up in parts, each part with its own checksum.
MULTIPART_THRESHOLD = 16 * 1024 * 1024


PART_SIZE = 8 * 1024 * 1024


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


def make_s3_client(options: S3Options | None):
    import boto3
    from botocore.config import Config

    options = options or S3Options()
    config = Config(
        retries={"max_attempts": S3_ATTEMPTS, "mode": "standard"}, connect_timeout=5, read_timeout=60
    )
    if options.session is not None:  # credentials resolved (and refreshed) by the session's provider
        return options.session.client(
            "s3",
            endpoint_url=options.endpoint_url,
            region_name=options.region_name or options.session.region_name or "us-east-1",
            config=config,
        )
    return boto3.client(
        "s3",
        endpoint_url=options.endpoint_url,
        aws_access_key_id=options.aws_access_key_id,
        aws_secret_access_key=options.aws_secret_access_key,
        aws_session_token=options.aws_session_token,
        region_name=options.region_name or "us-east-1",
        config=config,
    )
