"""Small JPEG previews of harvested images, made once per sha256 and kept on disk.

Originals can be megabytes and sit in S3; the grid needs a few kilobytes each. Because images are
content-addressed, a thumbnail never goes stale.

Thumbnails are made inside the Airflow API server, so what a decode may cost there is bounded like in
the download stage (harvest.images.decoding): JPEGs are decoded at reduced scale, the cost of a decode is
read from the image's header first, an image whose preview would cost more than
HARVEST_GALLERY_PREVIEW_MB gets none (the gallery shows a placeholder), and the decodes in flight
together never exceed twice that. No step after the decode copies the whole image.
"""

from __future__ import annotations

import io
import os
import re
import tempfile
import threading
import warnings
from collections import OrderedDict
from pathlib import Path

from PIL import Image as PILImage
from sqlalchemy import select

from harvest.images.decoding import MB, BudgetExceeded, DecodeBudget, declared_cost, declared_size, give_back
from harvest.images.imagecheck import ORIENTATION_TRANSPOSE, ImageRejected, sniff
from harvest.images.perceptual import reduce_in_bands
from harvest.images.pixels import to_rgb
from harvest.settings.config import S3Options
from harvest.state.db import session_scope
from harvest.state.models import Image, Publication
from harvest.storage import StorageError, Stores
from harvest_ui.settings import DEFAULT_PREVIEW_MB

SHA256 = re.compile(r"^[0-9a-f]{64}$")
#: The API server's thumbnail decodes in flight, at most twice the cost of the largest preview.
PREVIEWS = DecodeBudget(2 * DEFAULT_PREVIEW_MB * MB, setting="HARVEST_GALLERY_PREVIEW_MB, twice")


class ThumbnailError(Exception):
    """No thumbnail for this image; ``location`` says where the bytes were looked for."""

    def __init__(self, location: str, reason: str):
        self.location = location
        self.reason = reason
        super().__init__(f"{location}: {reason}")


class NoPreview(ThumbnailError):
    """The image is there, but too costly to decode for a preview."""


class TooCostly(Exception):
    """Decoding the image for a preview would take more memory than allowed."""


def render(
    data: bytes, size: int, limit: int = DEFAULT_PREVIEW_MB * MB, budget: DecodeBudget = PREVIEWS
) -> bytes:
    """A JPEG at most ``size`` pixels a side, made with at most ``limit`` bytes of decoded pixels,
    reserved from ``budget`` (the server's) for the time of the decode."""
    try:
        fmt = sniff(data)
    except ImageRejected as exc:
        raise ValueError(str(exc)) from None
    declared = declared_size(data, fmt)
    if declared is None:
        raise ValueError(f"unreadable {fmt} header")
    cost = declared_cost(declared, draft_side=2 * size)
    if cost > limit:
        raise TooCostly(
            f"too large to preview: a {declared.width}x{declared.height} {fmt} takes {cost / MB:.0f} MB to "
            f"decode, more than HARVEST_GALLERY_PREVIEW_MB ({limit / MB:.0f} MB)"
        )
    with budget.reserve(cost):
        try:
            return _render(data, fmt, declared.pixels, size)
        finally:
            give_back(cost)


def _render(data: bytes, fmt: str, declared_pixels: int, size: int) -> bytes:
    """Decode (a JPEG at reduced scale), reduce in bands while converting to RGB, resample to
    ``size``, turn upright; the decoded image is freed before returning, whatever happens."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", PILImage.DecompressionBombWarning)
        with PILImage.open(io.BytesIO(data), formats=[fmt]) as image:
            try:
                if image.width * image.height > declared_pixels:
                    raise ValueError("more pixels than its header declares")
                if fmt == "JPEG":
                    image.draft(image.mode, (2 * size, 2 * size))
                orientation = image.getexif().get(0x0112)
                image.load()
                small = reduce_in_bands(image, max(1, max(image.size) // (2 * size)), convert=to_rgb)
            finally:
                image.close()
    small.thumbnail((size, size), PILImage.Resampling.LANCZOS)
    if orientation in ORIENTATION_TRANSPOSE:
        small = small.transpose(ORIENTATION_TRANSPOSE[orientation])
    out = io.BytesIO()
    small.save(out, "JPEG", quality=82, optimize=True)
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


#: images found too costly to preview (sha256 -> reason), so that asking again costs no fetch
_REFUSED: OrderedDict[str, str] = OrderedDict()
_REFUSED_LOCK = threading.Lock()
_REFUSED_KEPT = 4096


def ensure_thumbnail(
    database_url: str,
    cache_dir: Path,
    sha256: str,
    size: int,
    s3: S3Options | None,
    preview_mb: int = DEFAULT_PREVIEW_MB,
) -> Path:
    """The cached thumbnail, made on first request; NoPreview for an image too costly to decode."""
    path = thumbnail_path(cache_dir, sha256, size)
    if path.is_file():
        return path
    with _REFUSED_LOCK:
        refused = _REFUSED.get(sha256)
    if refused is not None:
        raise NoPreview(sha256, refused)
    data = _original(database_url, sha256, s3)
    PREVIEWS.resize(2 * preview_mb * MB)
    try:
        body = render(data, size, preview_mb * MB)
    except (TooCostly, BudgetExceeded) as exc:
        _remember_refusal(sha256, str(exc))
        raise NoPreview(sha256, str(exc)) from None
    except (OSError, ValueError, PILImage.DecompressionBombError, PILImage.DecompressionBombWarning) as exc:
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


def _remember_refusal(sha256: str, reason: str) -> None:
    with _REFUSED_LOCK:
        _REFUSED[sha256] = reason
        while len(_REFUSED) > _REFUSED_KEPT:
            _REFUSED.popitem(last=False)
