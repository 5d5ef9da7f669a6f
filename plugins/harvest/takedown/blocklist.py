"""The blocklist every run honours: no download of a blocked URL, of an image found on a blocked page
or served from (or found on) a blocked domain; no publication of a blocked image, nor of a near
copy of one (a re-encoded, resized or re-compressed upload: its perceptual hash lies within a few
bits of the removed image's).

Entries are written by a takedown (:mod:`harvest.takedown.run`) and never expire: an image is put
back only by deleting its rows, on purpose.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field

from sqlalchemy import select, update

from harvest.images.neardup import HashIndex, parse
from harvest.state.db import chunks, insert_ignore, session_scope
from harvest.state.models import BlockEntry, Candidate, Image, Publication, Status, utcnow
from harvest.urls import canonicalize, host_of

log = logging.getLogger(__name__)

URL, PAGE, DOMAIN, SHA256 = "url", "page", "domain", "sha256"
KINDS = (URL, PAGE, DOMAIN, SHA256)
#: a near copy of a removed image: within this many of its 64 phash bits (re-encoding at another
#: quality or size moves a phash by 0-4 bits; unrelated photos differ in ~32)
NEAR_COPY_BITS = 8


@dataclass
class Blocklist:
    """The blocklist as one run reads it, once."""

    urls: dict[str, int] = field(default_factory=dict)
    pages: dict[str, int] = field(default_factory=dict)
    domains: dict[str, int] = field(default_factory=dict)
    sha256s: dict[str, int] = field(default_factory=dict)
    #: sha256 -> phash of each blocked image that has one
    phashes: dict[str, str] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.urls or self.pages or self.domains or self.sha256s)

    def domain_of(self, url: str | None) -> str | None:
        """The blocked domain ``url``'s host is, or lies under; None when it is not blocked."""
        host = host_of(url or "")
        while host:
            if host in self.domains:
                return host
            host = host.partition(".")[2]
        return None

    def download_reason(self, url: str, page_url: str | None, variants: Iterable[dict] | None) -> str | None:
        """Why a candidate may not be downloaded, or None. Its other renditions count: a blocked URL
        would otherwise be fetched as the fallback of an unblocked one."""
        urls = [url, *(v.get("url") for v in variants or () if isinstance(v, dict) and v.get("url"))]
        for each in urls:
            canonical = canonicalize(each) or each
            if canonical in self.urls:
                return f"taken down: blocked image URL {canonical} (takedown #{self.urls[canonical]})"
            domain = self.domain_of(canonical)
            if domain:
                return f"taken down: blocked domain {domain} (takedown #{self.domains[domain]})"
        if page_url:
            page = canonicalize(page_url) or page_url
            if page in self.pages:
                return f"taken down: found on blocked page {page} (takedown #{self.pages[page]})"
            domain = self.domain_of(page)
            if domain:
                return f"taken down: found on blocked domain {domain} (takedown #{self.domains[domain]})"
        return None


def load_blocklist(database_url: str) -> Blocklist:
    blocklist = Blocklist()
    by_kind = {
        URL: blocklist.urls,
        PAGE: blocklist.pages,
        DOMAIN: blocklist.domains,
        SHA256: blocklist.sha256s,
    }
    with session_scope(database_url) as session:
        for kind, value, phash, takedown_id in session.execute(
            select(BlockEntry.kind, BlockEntry.value, BlockEntry.phash, BlockEntry.takedown_id)
        ):
            if kind in by_kind:
                by_kind[kind][value] = takedown_id
            if kind == SHA256 and phash:
                blocklist.phashes[value] = phash
    return blocklist


def add_entries(session, takedown_id: int, entries: Iterable[tuple[str, str, str | None]]) -> int:
    """Add (kind, value, phash) entries; ones already there are kept as they are. Returns how many
    were new."""
    rows = [
        {"kind": kind, "value": value, "phash": phash, "takedown_id": takedown_id, "created_at": utcnow()}
        for kind, value, phash in {(k, v, p) for k, v, p in entries}
    ]
    return insert_ignore(session, BlockEntry, rows, ["kind", "value"])


def skip_blocked_candidates(database_url: str, run_id: str, blocklist: Blocklist | None = None) -> int:
    """Mark this run's pending candidates that the blocklist covers as skipped, with the reason,
    before the download stage claims them. Returns how many were skipped."""
    blocklist = load_blocklist(database_url) if blocklist is None else blocklist
    if not (blocklist.urls or blocklist.pages or blocklist.domains):
        return 0
    skipped = 0
    with session_scope(database_url) as session:
        pending = session.execute(
            select(Candidate.id, Candidate.url, Candidate.page_url, Candidate.variants).where(
                Candidate.run_id == run_id, Candidate.status == Status.PENDING
            )
        ).all()
        for row in pending:
            reason = blocklist.download_reason(row.url, row.page_url, row.variants)
            if reason:
                session.execute(
                    update(Candidate)
                    .where(Candidate.id == row.id)
                    .values(status=Status.SKIPPED, error=f"{row.url}: {reason}")
                )
                skipped += 1
    if skipped:
        log.info("blocklist: %d candidates of %s not downloaded (taken down earlier)", skipped, run_id)
    return skipped


def publish_refusals(
    database_url: str, sha256s: Iterable[str], blocklist: Blocklist | None = None, bits: int = NEAR_COPY_BITS
) -> dict[str, str]:
    """sha256 -> why it may not be published: it is a blocked image (by its own hash or its clean
    copy's), or a near copy of one by perceptual hash."""
    blocklist = load_blocklist(database_url) if blocklist is None else blocklist
    if not blocklist.sha256s:
        return {}
    index = HashIndex(bits)
    for blocked, phash in blocklist.phashes.items():
        index.add(parse(phash), blocked)
    refusals: dict[str, str] = {}
    wanted = sorted(set(sha256s))
    with session_scope(database_url) as session:
        for chunk in chunks(wanted, 500):
            for sha256, clean_sha256, phash in session.execute(
                select(Image.sha256, Image.clean_sha256, Image.phash).where(Image.sha256.in_(chunk))
            ):
                for own in (sha256, clean_sha256):
                    if own in blocklist.sha256s:
                        refusals[sha256] = f"taken down (takedown #{blocklist.sha256s[own]})"
                        break
                else:
                    near = index.nearest(parse(phash)) if phash else None
                    if near is not None:
                        blocked, distance = near
                        refusals[sha256] = (
                            f"taken down: near copy of removed image {blocked} (phash distance {distance}, "
                            f"takedown #{blocklist.sha256s[blocked]})"
                        )
    return refusals


def refusals_at_publish(database_url: str, destination: str, keepers: Iterable[str]) -> dict[str, str]:
    """:func:`publish_refusals` for a publish: this run's keepers and everything the destination holds
    now (an image published before its takedown, or by a run that raced it, is withdrawn)."""
    blocklist = load_blocklist(database_url)
    if not blocklist.sha256s:
        return {}
    with session_scope(database_url) as session:
        published = session.scalars(
            select(Publication.sha256)
            .where(Publication.destination == destination, Publication.withdrawn_at.is_(None))
            .distinct()
        ).all()
    return publish_refusals(database_url, [*keepers, *published], blocklist)
