"""Which classified images may be published: no placeholders, no near-blank images, one copy of each
picture, nothing whose private metadata could not be removed.

Decided at publish time over everything the destination holds plus this run's keepers, so a
placeholder first recognised mid-run (the fifth URL of a host serving the same "image not
available" picture) also withdraws the copies that earlier runs published. The verdict is written
to the images' rows (``excluded``, ``duplicate_of``) and read back from there by the tasks that
upload and withdraw; the near-duplicate grouping runs in the state DB (:mod:`harvest.dataset.neardup_sql`),
so no task holds a structure per image of the destination.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Iterable

from sqlalchemy import Select, and_, func, or_, select, union, update
from sqlalchemy.engine import Row

from harvest.dataset.neardup_sql import group_near_duplicates
from harvest.images.neardup import HashIndex, parse
from harvest.settings.config import HarvestConfig
from harvest.state.db import chunks, session_scope
from harvest.state.models import Image, ImageUrl, Keeper, Publication

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


def verdict_reason(excluded: str | None, duplicate_of: str | None, distance: int | None) -> str | None:
    """Why an image is not published, from its row's verdict columns; None when it may be."""
    if excluded:
        return excluded
    if duplicate_of:
        return f"near duplicate of {duplicate_of} (phash distance {distance})"
    return None


def reasons_of(database_url: str, sha256s: Iterable[str]) -> dict[str, str]:
    """The images (a chunk) that stay out, with why, as the last curation left them."""
    reasons: dict[str, str] = {}
    with session_scope(database_url) as session:
        for chunk in chunks(sorted(set(sha256s)), 500):
            rows = session.execute(
                select(Image.sha256, Image.excluded, Image.duplicate_of, Image.duplicate_distance).where(
                    Image.sha256.in_(chunk), or_(Image.excluded.is_not(None), Image.duplicate_of.is_not(None))
                )
            ).all()
            for sha256, excluded, duplicate_of, distance in rows:
                reasons[sha256] = verdict_reason(excluded, duplicate_of, distance) or ""
    return {sha256: reason for sha256, reason in reasons.items() if reason}


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
    Image.entropy,
    Image.detail,
    Image.private_fields,
    Image.clean_key,
    Image.excluded,
    Image.duplicate_of,
)
#: images judged per query and per transaction
CHUNK = 500


def members(cfg: HarvestConfig) -> Select:
    """The sha256s curation judges: this run's keepers and everything published at the destination."""
    return union(
        select(Keeper.sha256).where(Keeper.run_id == cfg.run_id),
        select(Publication.sha256).where(
            Publication.destination == cfg.destination, Publication.withdrawn_at.is_(None)
        ),
    )


def curate(cfg: HarvestConfig) -> dict[str, int]:
    """The verdict over this run's keepers (the ``keepers`` rows) and everything published at the
    destination, written to the images' rows: per-image reasons first (private metadata left,
    placeholder, low information), then the near-duplicate grouping of the rest, in the state DB.

    Rows are read a chunk at a time by sha256; what is held is the set of hosts and the placeholder
    images found on them. Callers describe outdated rows first (:func:`describe_missing`)."""
    member_ids = members(cfg).subquery()
    with session_scope(cfg.database_url) as session:
        hosts = set(
            session.scalars(
                select(ImageUrl.host).where(ImageUrl.sha256.in_(select(member_ids.c.sha256))).distinct()
            ).all()
        )
    placeholders = find_placeholders(
        cfg.database_url, hosts, cfg.placeholder_distance, cfg.placeholder_min_urls
    )
    counts = {"judged": 0, "excluded": 0}
    after = ""
    while True:
        with session_scope(cfg.database_url) as session:
            rows = session.execute(
                select(*_JUDGED)
                .where(Image.sha256.in_(select(member_ids.c.sha256)), Image.sha256 > after)
                .order_by(Image.sha256)
                .limit(CHUNK)
            ).all()
            for image in rows:
                reason = (
                    private_metadata_left(image)
                    or placeholders.get(image.sha256)
                    or low_information(image, cfg.min_entropy, cfg.min_detail)
                )
                counts["excluded"] += reason is not None
                # an excluded image, or one without a hash, is no near duplicate of anything
                clear = (reason is not None or image.phash is None) and image.duplicate_of is not None
                if reason != image.excluded or clear:
                    values: dict = {"excluded": reason}
                    if clear:
                        values.update(duplicate_of=None, duplicate_distance=None)
                    session.execute(update(Image).where(Image.sha256 == image.sha256).values(**values))
        counts["judged"] += len(rows)
        if len(rows) < CHUNK:
            break
        after = rows[-1].sha256
    eligible = select(member_ids.c.sha256)
    counts["duplicates"] = group_near_duplicates(cfg.database_url, eligible, cfg.near_dup_distance)
    log.info(
        "curation: %d images judged, %d excluded, %d near duplicates",
        counts["judged"],
        counts["excluded"],
        counts["duplicates"],
    )
    return counts
