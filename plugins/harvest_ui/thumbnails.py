"""Small JPEG previews of harvested images, made once per sha256 and kept on disk.

Originals can be megabytes and sit in S3; the grid needs a few kilobytes each. Because images are
content-addressed, a thumbnail never goes stale and can be cached by the browser for good.
"""

from __future__ import annotations

import io
import os
import re
import tempfile
from pathlib import Path

from PIL import Image as PILImage
from PIL import ImageOps
from sqlalchemy import select

from harvest.config import S3Options
from harvest.preprocess import to_rgb
from harvest.state.db import session_scope
from harvest.state.models import Image, Publication
from harvest.storage import StorageError, Stores

SHA256 = re.compile(r"^[0-9a-f]{64}$")


class ThumbnailError(Exception):
    """No thumbnail for this image; ``location`` says where the bytes were looked for."""

    def __init__(self, location: str, reason: str):
        self.location = location
        self.reason = reason
        super().__init__(f"{location}: {reason}")


def render(data: bytes, size: int) -> bytes:
    with PILImage.open(io.BytesIO(data)) as image:
        image = to_rgb(ImageOps.exif_transpose(image))
        image.thumbnail((size, size), PILImage.Resampling.LANCZOS)
        out = io.BytesIO()
        image.save(out, "JPEG", quality=82, optimize=True)
    return out.getvalue()


def _original(database_url: str, sha256: str, s3: S3Options | None) -> bytes:
    """The image's bytes from staging, or from wherever it was published if staging was cleaned up."""
    with session_scope(database_url) as session:
        image = session.get(Image, sha256)
        if image is None:
            raise ThumbnailError(sha256, "no such image in the state DB")
        places = [(image.staging, image.storage_key)]
        places += session.execute(
            select(Publication.destination, Publication.key).where(Publication.sha256 == sha256)
        ).all()
    stores = Stores(s3)
    problems = []
    for location, key in places:
        try:
            return stores(location).get(key)
        except StorageError as exc:
            problems.append(str(exc))
    raise ThumbnailError(sha256, "bytes not found: " + "; ".join(problems))


def thumbnail_path(cache_dir: Path, sha256: str, size: int) -> Path:
    if not SHA256.match(sha256):
        raise ThumbnailError(sha256, "not a sha256 hex digest")
    return cache_dir / str(size) / sha256[:2] / f"{sha256}.jpg"


def ensure_thumbnail(
    database_url: str, cache_dir: Path, sha256: str, size: int, s3: S3Options | None
) -> Path:
    """The cached thumbnail, made on first request."""
    path = thumbnail_path(cache_dir, sha256, size)
    if path.is_file():
        return path
    data = _original(database_url, sha256, s3)
    try:
        body = render(data, size)
    except (OSError, ValueError) as exc:
        raise ThumbnailError(sha256, f"cannot decode the image: {exc}") from exc
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(body)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
