"""Which classified images may be published: no placeholders, no near-blank images, one copy of each
picture, nothing whose private metadata could not be removed.

Decided at publish time over everything the destination holds plus this run's keepers, so a
placeholder first recognised mid-run (the fifth URL of a host serving the same "image not
available" picture) also withdraws the copies that earlier runs published.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field

from sqlalchemy import and_, func, or_, select, update
from sqlalchemy.engine import Row

from harvest.images.neardup import Entry, HashIndex, group, parse
from harvest.settings.config import HarvestConfig
from harvest.state.db import chunks, session_scope
from harvest.state.models import Image, ImageUrl, Publication

log = logging.getLogger(__name__)

#: the images columns that the download stage fills from inspecting the bytes
DESCRIPTION = (
    "mode",
    "has_alpha",
    "phash",
    "entropy",
    "detail",
    "orientation",
    "exif",
    "private_fields",
    "exif_private",
    "clean_sha256",
    "clean_key",
    "metadata_policy",
    "excluded",
)


@dataclass
class CurationVerdict:
    """Which of the kept and published images stay out of the dataset, and why."""

    #: sha256 -> why it is not published (placeholder, low information, private metadata)
    excluded: dict[str, str] = field(default_factory=dict)
    #: sha256 -> (sha256 of the better copy, Hamming distance)
    duplicates: dict[str, tuple[str, int]] = field(default_factory=dict)

    def reason(self, sha256: str) -> str | None:
        if sha256 in self.excluded:
            return self.excluded[sha256]
        if sha256 in self.duplicates:
            best, distance = self.duplicates[sha256]
            return f"near duplicate of {best} (phash distance {distance})"
        return None


def low_information(image: Image | Row, min_entropy: float, min_detail: float = 3.0) -> str | None:
    """A flat picture: a fill, a smooth gradient, a logo of a few colours. Low grey-level entropy
    alone also fits a photo of an object on a black or white background (the background is most of
    the histogram), so an image is low information only when its detail beside the background is
    low too. Rows described before the detail was measured (detail None) are judged by the entropy
    alone."""
    detail = getattr(image, "detail", None)
    if image.entropy is not None and image.entropy < min_entropy:
        if detail is None:
            return f"low information (grey-level entropy {image.entropy:.2f} bits < {min_entropy:g})"
        if detail < min_detail:
            return (
                f"low information (grey-level entropy {image.entropy:.2f} bits < {min_entropy:g}, "
                f"detail {detail:.2f} bits < {min_detail:g})"
            )
    return None


def private_metadata_left(image: Image | Row) -> str | None:
    """Every published file is a copy with metadata by allow-list: an image without one stays out."""
    if image.clean_key:
        return None
    if image.excluded:
        return image.excluded
    if image.private_fields:
        return f"private metadata ({', '.join(image.private_fields)}) could not be stripped"
    return "no copy without metadata could be made"


def find_placeholders(
    database_url: str, hosts: Iterable[str], distance: int, min_urls: int
) -> dict[str, str]:
    """Images that ``min_urls`` or more different URLs of one host serve (same picture, or one within
    ``distance`` bits of perceptual hash)."""
    hosts = sorted(set(hosts))
    if not hosts:
        return {}
    with session_scope(database_url) as session:
        rows = session.execute(
            select(ImageUrl.host, ImageUrl.sha256, Image.phash, func.count(func.distinct(ImageUrl.url)))
            .join(Image, Image.sha256 == ImageUrl.sha256)
            .where(ImageUrl.host.in_(hosts))
            .group_by(ImageUrl.host, ImageUrl.sha256, Image.phash)
        ).all()
    by_host: dict[str, list[tuple[str, str | None, int]]] = defaultdict(list)
    for host, sha256, phash, urls in rows:
        by_host[host].append((sha256, phash, int(urls)))
    flagged: dict[str, str] = {}
    for host, images in by_host.items():
        index = HashIndex(distance)
        clusters: dict[str, list[tuple[str, int]]] = {}
        for sha256, phash, urls in sorted(images, key=lambda row: (-row[2], row[0])):
            if phash is None:
                clusters[sha256] = [(sha256, urls)]
                continue
            match = index.nearest(parse(phash))
            if match is None:
                index.add(parse(phash), sha256)
                clusters[sha256] = [(sha256, urls)]
            else:
                clusters[str(match[0])].append((sha256, urls))
        for members in clusters.values():
            total = sum(urls for _, urls in members)
            if total >= min_urls:
                for sha256, _ in members:
                    flagged[sha256] = f"placeholder: {total} different URLs on {host} serve this picture"
    return flagged


def describe_missing(cfg: HarvestConfig, sha256s: Iterable[str]) -> int:
    """Describe again, from their staged bytes, the images whose row predates the current rules:
    stored before hashes and EXIF were recorded, made under another metadata policy
    (:data:`harvest.images.sanitize.POLICY`: older versions published some files as downloaded), or left
    without a copy to publish. The row then says what a download today would say, whichever version
    first saw the image, so what is published does not depend on the state DB's history. When the
    staged bytes are gone, the object the destination publishes for the image stands in for them."""
    from harvest.images.imagecheck import ImageRejected, inspect_image
    from harvest.images.rows import image_row
    from harvest.images.sanitize import POLICY
    from harvest.storage import Stores

    stores = Stores(cfg.s3)
    outdated = or_(
        Image.metadata_policy.is_(None),
        Image.metadata_policy != POLICY,
        and_(Image.clean_key.is_(None), Image.excluded.is_(None)),
    )
    done = 0
    with session_scope(cfg.database_url) as session:
        rows = [
            row
            for chunk in chunks(sorted(set(sha256s)), 500)
            for row in session.scalars(select(Image).where(Image.sha256.in_(chunk), outdated)).all()
        ]
        for row in rows:
            data, missing = _stored_bytes(cfg.destination, stores, session, row)
            try:
                if data is None:
                    raise ImageRejected(missing)
                inspected = inspect_image(data, 1, 1)
            except ImageRejected as exc:
                row.excluded = f"cannot be described again: {exc}"
                row.clean_sha256 = row.clean_key = None
                row.metadata_policy = POLICY
                continue
            store = stores(row.staging)
            if inspected.clean_data is not None and not store.exists(inspected.clean_key):
                store.put(inspected.clean_key, inspected.clean_data, inspected.mime_type)
            described = image_row(store, cfg, row.first_url, inspected)
            for column in DESCRIPTION:
                setattr(row, column, described[column])
            done += 1
    if done:
        log.info(
            "described %d images again (stored by an earlier version or under older metadata rules)", done
        )
    return done


def _stored_bytes(destination: str, stores, session, row: Image) -> tuple[bytes | None, str]:
    """The image's staged bytes, else those of its object at the destination; (None, why) when
    neither can be read. A passing storage failure is raised: it says nothing about the bytes."""
    from harvest.storage import StorageError

    try:
        return stores(row.staging).get(row.storage_key), ""
    except StorageError as exc:
        if exc.transient:
            raise
        staged = str(exc)
    key = session.scalar(
        select(Publication.key)
        .where(
            Publication.destination == destination,
            Publication.sha256 == row.sha256,
            Publication.withdrawn_at.is_(None),
        )
        .order_by(Publication.id)
        .limit(1)
    )
    if key is None:
        return None, f"staged bytes missing ({staged})"
    try:
        return stores(destination).get(key), ""
    except StorageError as exc:
        if exc.transient:
            raise
        return None, f"staged bytes missing ({staged}) and published object unreadable ({exc})"


#: what the verdict reads of each image; rows, not ORM objects, read a chunk at a time
_JUDGED = (
    Image.sha256,
    Image.phash,
    Image.width,
    Image.height,
    Image.size_bytes,
    Image.entropy,
    Image.detail,
    Image.private_fields,
    Image.clean_key,
    Image.excluded,
)


def curate_keepers(cfg: HarvestConfig, kept_sha256s: Iterable[str]) -> CurationVerdict:
    """The verdict over this run's keepers and everything currently published at the destination.

    Images are read a chunk at a time and only their hashes are held (for the near-duplicate
    grouping), so a run of a hundred thousand keepers costs a few megabytes here."""
    wanted = set(kept_sha256s)
    with session_scope(cfg.database_url) as session:
        wanted |= set(
            session.scalars(
                select(Publication.sha256).where(
                    Publication.destination == cfg.destination, Publication.withdrawn_at.is_(None)
                )
            ).all()
        )
    describe_missing(cfg, wanted)
    ordered = sorted(wanted)
    with session_scope(cfg.database_url) as session:
        hosts = {
            host
            for chunk in chunks(ordered, 500)
            for host in session.scalars(
                select(ImageUrl.host).where(ImageUrl.sha256.in_(chunk)).distinct()
            ).all()
        }
    verdict = CurationVerdict()
    placeholders = find_placeholders(
        cfg.database_url, hosts, cfg.placeholder_distance, cfg.placeholder_min_urls
    )
    entries: list[Entry] = []
    with session_scope(cfg.database_url) as session:
        for chunk in chunks(ordered, 500):
            for image in session.execute(select(*_JUDGED).where(Image.sha256.in_(chunk))).all():
                reason = (
                    private_metadata_left(image)
                    or placeholders.get(image.sha256)
                    or low_information(image, cfg.min_entropy, cfg.min_detail)
                )
                if reason:
                    verdict.excluded[image.sha256] = reason
                elif image.phash:
                    entries.append(
                        Entry(image.sha256, parse(image.phash), image.width, image.height, image.size_bytes)
                    )
    verdict.duplicates = group(entries, cfg.near_dup_distance)
    _record(cfg.database_url, ordered, verdict)
    return verdict


def _record(database_url: str, sha256s: list[str], verdict: CurationVerdict) -> None:
    """Keep the state DB's view in step with the verdict, so it can be queried after the run; only
    the rows whose verdict changed are written."""
    with session_scope(database_url) as session:
        for chunk in chunks(sha256s, 500):
            rows = session.execute(
                select(Image.sha256, Image.excluded, Image.duplicate_of, Image.duplicate_distance).where(
                    Image.sha256.in_(chunk)
                )
            ).all()
            for sha256, excluded, duplicate_of, duplicate_distance in rows:
                duplicate = verdict.duplicates.get(sha256)
                now = {
                    "excluded": verdict.excluded.get(sha256),
                    "duplicate_of": duplicate[0] if duplicate else None,
                    "duplicate_distance": duplicate[1] if duplicate else None,
                }
                if (excluded, duplicate_of, duplicate_distance) != tuple(now.values()):
                    session.execute(update(Image).where(Image.sha256 == sha256).values(**now))
