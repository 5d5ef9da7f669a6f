"""Checks that run before any crawling, so a wrong destination fails in seconds with what to fix.

Without them an unwritable folder or a wrong S3 endpoint would surface only at the first upload, after
the whole crawl and download had been paid for.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from urllib.parse import urlsplit

from harvest.settings.config import ConfigError, HarvestConfig, S3Options, is_s3


def check_location(location: str, s3: S3Options | None, role: str) -> None:
    if is_s3(location):
        _check_bucket(location, s3, role)
    else:
        _check_folder(Path(location), role)


def _check_folder(folder: Path, role: str) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".tmp-probe-", dir=folder)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise ConfigError([f"{role} {folder}: not writable ({exc.strerror or exc})"]) from exc


def _check_bucket(location: str, s3: S3Options | None, role: str) -> None:
    from botocore.exceptions import BotoCoreError, ClientError

    from harvest.storage import make_s3_client

    bucket = urlsplit(location).netloc
    endpoint = (s3.endpoint_url if s3 else None) or "the default AWS endpoint"
    try:
        make_s3_client(s3).head_bucket(Bucket=bucket)
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "")
        if code in ("404", "NoSuchBucket", "NotFound"):
            reason = f"bucket {bucket!r} does not exist at {endpoint}"
        elif code in ("403", "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch"):
            reason = f"access to bucket {bucket!r} denied at {endpoint}: check the aws_default credentials"
        else:
            reason = f"bucket {bucket!r} at {endpoint}: {code or exc}"
        raise ConfigError([f"{role} {location}: {reason}"]) from exc
    except BotoCoreError as exc:
        raise ConfigError(
            [f"{role} {location}: cannot reach {endpoint} ({exc}); check endpoint_url of aws_default"]
        ) from exc


def check_destinations(cfg: HarvestConfig) -> None:
    """The destination and the staging area must accept writes before the run starts."""
    problems: list[str] = []
    for location, role in ((cfg.destination, "destination"), (cfg.staging, "staging area")):
        try:
            check_location(location, cfg.s3, role)
        except ConfigError as exc:
            problems.extend(exc.problems)
    if problems:
        raise ConfigError(problems)
