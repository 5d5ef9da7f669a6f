"""SQLAlchemy models for the state DB.

Rows are scoped to a run (pages, candidates) or global and content-addressed (images, predictions),
so a re-run of a stage finds its own unfinished rows and identical bytes are stored once.
"""

from __future__ import annotations

from datetime import datetime, timezone

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class Base(DeclarativeBase):
    pass


class Status:
    PENDING = "pending"
    DONE = "done"
    FAILED = "failed"
    SKIPPED = "skipped"


class Run(Base):
    __tablename__ = "runs"

    run_id: Mapped[str] = mapped_column(String(250), primary_key=True)
    params: Mapped[dict] = mapped_column(JSON, default=dict)
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    counters: Mapped[dict] = mapped_column(JSON, default=dict)
    #: how many shards the run's download, classify and publish tasks are split into, fixed when its
    #: candidates are known (harvest.state.shards.plan_shards) so every task of the run agrees
    shards: Mapped[int | None] = mapped_column(Integer)


class Page(Base):
    __tablename__ = "pages"
    __table_args__ = (
        UniqueConstraint("run_id", "url", name="uq_pages_run_url"),
        Index("ix_pages_run_status", "run_id", "status"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    run_id: Mapped[str] = mapped_column(String(250), ForeignKey("runs.run_id"))
    url: Mapped[str] = mapped_column(Text)
    seed_url: Mapped[str] = mapped_column(Text)
    depth: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16), default=Status.PENDING)
    http_status: Mapped[int | None] = mapped_column(Integer)
    final_url: Mapped[str | None] = mapped_column(Text)
    content_key: Mapped[str | None] = mapped_column(Text)
    extract_status: Mapped[str] = mapped_column(String(16), default=Status.PENDING)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    error: Mapped[str | None] = mapped_column(Text)
    fetched_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    #: the validators the server sent, for a conditional GET by a later run
    etag: Mapped[str | None] = mapped_column(Text)
    last_modified: Mapped[str | None] = mapped_column(Text)
    #: "not_modified" (304 to a conditional GET) or "unchanged" (200 with the earlier content hash)
    revalidation: Mapped[str | None] = mapped_column(String(16))
    #: the opt-out the page's response or markup declared for its images (harvest.web.optout):
    #: {"directive": ..., "found": ...}; its images are skipped with it
    optout: Mapped[dict | None] = mapped_column(JSON)


class Candidate(Base):
    __tablename__ = "candidates"
    __table_args__ = (
        UniqueConstraint("run_id", "url", name="uq_candidates_run_url"),
        Index("ix_candidates_run_shard_status", "run_id", "shard", "status"),
        Index("ix_candidates_run_sha256", "run_id", "sha256"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    run_id: Mapped[str] = mapped_column(String(250), ForeignKey("runs.run_id"))
    url: Mapped[str] = mapped_column(Text)
    page_url: Mapped[str] = mapped_column(Text)
    source: Mapped[str] = mapped_column(String(32))
    #: the label a URL list gave this image; quotas count downloads per label hint
    label_hint: Mapped[str | None] = mapped_column(Text)
    #: higher downloads first (the text pre-filter promotes candidates whose text names a target)
    priority: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    #: how long the download took, for per-domain statistics
    elapsed_ms: Mapped[int | None] = mapped_column(Integer)
    alt: Mapped[str | None] = mapped_column(Text)
    title: Mapped[str | None] = mapped_column(Text)
    #: the other URLs of the same image (srcset entries, <picture> sources, the linked thumbnail):
    #: [{"url": ..., "descriptor": "300w" | "2x" | "thumbnail" | "image/avif" | None}, ...]
    variants: Mapped[list | None] = mapped_column(JSON)
    caption: Mapped[str | None] = mapped_column(Text)
    nearby_text: Mapped[str | None] = mapped_column(Text)
    #: metadata a site profile extracted from the page (e.g. {"title": ..., "date": ...})
    page_fields: Mapped[dict | None] = mapped_column(JSON)
    #: the URL's bucket (harvest.state.shards.bucket_of); shard k of n holds the buckets b with b % n == k
    shard: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16), default=Status.PENDING)
    sha256: Mapped[str | None] = mapped_column(String(64), ForeignKey("images.sha256"))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    error: Mapped[str | None] = mapped_column(Text)
    updated_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), onupdate=utcnow)
    #: "not_modified" when an earlier run's download of the URL was confirmed by a 304
    revalidation: Mapped[str | None] = mapped_column(String(16))
    #: the rendition (``url`` or one of ``variants``) whose bytes were stored
    rendition_url: Mapped[str | None] = mapped_column(Text)
    #: the renditions tried that served no image: [{"url": ..., "reason": ...}, ...] in the order tried
    renditions_failed: Mapped[list | None] = mapped_column(JSON)
    #: the opt-out that stopped this image: {"directive": "noai", "found": "X-Robots-Tag header ..."}
    optout: Mapped[dict | None] = mapped_column(JSON)
    #: SPDX id of the image's licence (harvest.pages.licences), or "unknown"
    license: Mapped[str | None] = mapped_column(String(64))
    #: where the licence was read: {"url": evidence URL, "found": "rel=license in the figure", ...}
    license_evidence: Mapped[dict | None] = mapped_column(JSON)
    #: the author to credit, in clear only when the page names them or the licence requires attribution
    author: Mapped[str | None] = mapped_column(Text)
    #: what a search API said about the image (harvest.sources): api, id, title, licence name and
    #: URL, author, the file page; None for crawled and listed images
    source_record: Mapped[dict | None] = mapped_column(JSON)
    #: how a rendered page showed the image (pages/script_fed.py): {"how": "script-json" |
    #: "script-blob" | "rendered-dom", "response": ..., "path"/"sha256": ...}; None: the HTML as sent
    found_by: Mapped[dict | None] = mapped_column(JSON)


class Image(Base):
    __tablename__ = "images"

    sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    #: the staging store (folder or s3:// prefix) that holds the bytes, and the key inside it
    staging: Mapped[str] = mapped_column(Text)
    storage_key: Mapped[str] = mapped_column(Text)
    format: Mapped[str] = mapped_column(String(16))
    mime_type: Mapped[str] = mapped_column(String(64))
    width: Mapped[int] = mapped_column(Integer)
    height: Mapped[int] = mapped_column(Integer)
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    first_url: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    mode: Mapped[str | None] = mapped_column(String(16))
    has_alpha: Mapped[bool | None] = mapped_column(Boolean)
    #: 64-bit perceptual hash (imagehash.phash) as 16 hex digits; near duplicates differ in few bits
    phash: Mapped[str | None] = mapped_column(String(16), index=True)
    #: grey-level entropy in bits; near-uniform fills score close to 0
    entropy: Mapped[float | None] = mapped_column(Float)
    #: bits of detail beside the background (harvest.images.perceptual.detail_bits): a photo of an
    #: object on a plain background scores high, a flat logo or a fill low
    detail: Mapped[float | None] = mapped_column(Float)
    orientation: Mapped[int | None] = mapped_column(Integer)
    #: camera, dates, orientation, copyright: the EXIF fields that identify nobody
    exif: Mapped[dict | None] = mapped_column(JSON)
    #: names of the private fields found (GPS, owner, serials); their values only in exif_private
    private_fields: Mapped[list | None] = mapped_column(JSON)
    #: Fernet token of the private fields as JSON, when a metadata key is configured
    exif_private: Mapped[str | None] = mapped_column(Text)
    #: the copy that is published: the file up to its end, metadata by allow-list (harvest.images.sanitize);
    #: the download's own key and hash when nothing had to be removed
    clean_sha256: Mapped[str | None] = mapped_column(String(64))
    clean_key: Mapped[str | None] = mapped_column(Text)
    #: the metadata rule set (harvest.images.sanitize.POLICY) the copy and the private fields follow; rows
    #: made under another one are described again before they are published
    metadata_policy: Mapped[str | None] = mapped_column(String(32))
    #: why the image is never published (placeholder, low information, unstrippable metadata)
    excluded: Mapped[str | None] = mapped_column(Text)
    #: the better copy this image is a near duplicate of, and how many phash bits they differ in
    duplicate_of: Mapped[str | None] = mapped_column(String(64))
    duplicate_distance: Mapped[int | None] = mapped_column(Integer)
    #: the rights statements of the file's XMP/IPTC/EXIF, read before they are stripped
    #: (harvest.images.rights): licence URL, usage terms, copyright, credit; the creator only
    #: when the file's own licence requires attribution
    rights: Mapped[dict | None] = mapped_column(JSON)


class ImageUrl(Base):
    """Every URL that served an image's bytes, so duplicates and placeholders are seen per host."""

    __tablename__ = "image_urls"
    __table_args__ = (
        UniqueConstraint("sha256", "url", name="uq_image_urls_sha256_url"),
        Index("ix_image_urls_host", "host"),
        Index("ix_image_urls_url", "url", postgresql_using="hash"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    sha256: Mapped[str] = mapped_column(String(64), ForeignKey("images.sha256"))
    url: Mapped[str] = mapped_column(Text)
    host: Mapped[str] = mapped_column(Text)
    run_id: Mapped[str] = mapped_column(String(250), ForeignKey("runs.run_id"))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Prediction(Base):
    __tablename__ = "predictions"
    __table_args__ = (UniqueConstraint("sha256", "model", name="uq_predictions_image_model"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    sha256: Mapped[str] = mapped_column(String(64), ForeignKey("images.sha256"))
    model: Mapped[str] = mapped_column(String(128))
    #: [{"wnid": ..., "name": ..., "score": ...}, ...] best first; None when the image failed to decode.
    top: Mapped[list | None] = mapped_column(JSON)
    #: every class probability in the model's output order, float16 little-endian (harvest.model.scores)
    scores: Mapped[bytes | None] = mapped_column(LargeBinary)
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Keeper(Base):
    """An image of a run that the model recognises as a target: the publish stage's keep decision,
    written per shard and read back a chunk at a time, so no task holds the run's keepers in memory."""

    __tablename__ = "keepers"
    __table_args__ = (Index("ix_keepers_run_bucket", "run_id", "bucket"),)

    run_id: Mapped[str] = mapped_column(String(250), ForeignKey("runs.run_id"), primary_key=True)
    sha256: Mapped[str] = mapped_column(String(64), ForeignKey("images.sha256"), primary_key=True)
    #: the first candidate of the run that found the image (its URL, page and alt text are published)
    candidate_id: Mapped[int] = mapped_column(Integer)
    #: that candidate's bucket: the shard that publishes the image
    bucket: Mapped[int] = mapped_column(Integer)
    label: Mapped[str] = mapped_column(Text)
    score: Mapped[float] = mapped_column(Float)


class Publication(Base):
    __tablename__ = "publications"
    __table_args__ = (
        UniqueConstraint("destination", "key", name="uq_publications_destination_key"),
        Index("ix_publications_destination_shard", "destination", "shard"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    destination: Mapped[str] = mapped_column(Text)
    key: Mapped[str] = mapped_column(Text)
    sha256: Mapped[str] = mapped_column(String(64), ForeignKey("images.sha256"))
    run_id: Mapped[str] = mapped_column(String(250), ForeignKey("runs.run_id"))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    label: Mapped[str | None] = mapped_column(Text)
    score: Mapped[float | None] = mapped_column(Float)
    #: sha256 of the published bytes when they differ from the download (private metadata removed)
    content_sha256: Mapped[str | None] = mapped_column(String(64))
    #: set when a later publish removed the object (found to be a placeholder or a duplicate)
    withdrawn_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    withdrawn_reason: Mapped[str | None] = mapped_column(Text)
    #: the WebDataset shard (``webdataset/<run slug>-<n>.tar``) holding the object, once it is in one
    shard: Mapped[str | None] = mapped_column(Text)


class Takedown(Base):
    """One takedown request and what it removed: the audit record (who, when, why, what, where)."""

    __tablename__ = "takedowns"
    __table_args__ = (UniqueConstraint("request_key", name="uq_takedowns_request_key"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    #: sha256 of the normalised request: the same request again finds this row and removes nothing
    request_key: Mapped[str] = mapped_column(String(64))
    #: {"image_urls": [...], "page_urls": [...], "domains": [...], "sha256s": [...]}
    request: Mapped[dict] = mapped_column(JSON)
    reason: Mapped[str] = mapped_column(Text)
    #: who asked (the claimant, as the operator typed it) and who ran it (the Airflow user or trigger)
    requested_by: Mapped[str | None] = mapped_column(Text)
    triggered_by: Mapped[str | None] = mapped_column(Text)
    run_id: Mapped[str | None] = mapped_column(String(250))
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    #: None until every destination has been cleaned: a crashed takedown is resumed by a re-run
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    #: [{"sha256": ..., "why": ...}, ...] the images the request matched
    images: Mapped[list | None] = mapped_column(JSON)
    #: {destination: {"deleted": [keys], "manifests": [keys rewritten], "exports": {...}}}
    removed: Mapped[dict | None] = mapped_column(JSON)
    #: {destination: {"before": objects, "after": objects}}
    counts: Mapped[dict | None] = mapped_column(JSON)


class BlockEntry(Base):
    """What no later run downloads (kind url, page, domain) or publishes (kind sha256, with the
    image's perceptual hash so a re-encoded copy is refused too)."""

    __tablename__ = "blocklist"
    __table_args__ = (UniqueConstraint("kind", "value", name="uq_blocklist_kind_value"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    kind: Mapped[str] = mapped_column(String(16))
    value: Mapped[str] = mapped_column(Text)
    phash: Mapped[str | None] = mapped_column(String(16))
    takedown_id: Mapped[int | None] = mapped_column(Integer, ForeignKey("takedowns.id"))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class HostBudget(Base):
    """One host's politeness budget, shared by every task and worker of a deployment
    (harvest.web.host_budget): its adaptive spacing, when the next request may start (on the
    database's clock, epoch seconds) and what its answers were."""

    __tablename__ = "host_budget"

    host: Mapped[str] = mapped_column(Text, primary_key=True)
    delay: Mapped[float] = mapped_column(Float)
    #: robots.txt Crawl-delay: the spacing never goes below it
    floor: Mapped[float] = mapped_column(Float, default=0.0)
    next_start: Mapped[float] = mapped_column(Float, default=0.0)
    held_until: Mapped[float] = mapped_column(Float, default=0.0)
    #: requests in flight (its leases in host_leases, less those expired and dropped)
    active: Mapped[int] = mapped_column(Integer, default=0)
    streak: Mapped[int] = mapped_column(Integer, default=0)
    pages: Mapped[int] = mapped_column(Integer, default=0)
    images: Mapped[int] = mapped_column(Integer, default=0)
    requests: Mapped[int] = mapped_column(Integer, default=0)
    throttled: Mapped[int] = mapped_column(Integer, default=0)
    errors: Mapped[int] = mapped_column(Integer, default=0)
    peak_rate: Mapped[float] = mapped_column(Float, default=0.0)
    updated_at: Mapped[float] = mapped_column(Float, default=0.0)


class HostLease(Base):
    """A request in flight at a host, counted against its concurrency by every worker; a lease of a
    worker that died expires instead of holding the slot for ever."""

    __tablename__ = "host_leases"
    __table_args__ = (Index("ix_host_leases_host", "host"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    host: Mapped[str] = mapped_column(Text)
    holder: Mapped[str] = mapped_column(Text)
    expires_at: Mapped[float] = mapped_column(Float)


class HostRate(Base):
    """The pace one host got in one run, per task summed: for the per-domain statistics."""

    __tablename__ = "host_rates"

    run_id: Mapped[str] = mapped_column(String(250), primary_key=True)
    host: Mapped[str] = mapped_column(Text, primary_key=True)
    kind: Mapped[str] = mapped_column(String(16), default="site")
    requests: Mapped[int] = mapped_column(Integer, default=0)
    throttled: Mapped[int] = mapped_column(Integer, default=0)
    errors: Mapped[int] = mapped_column(Integer, default=0)
    #: requests per second the budget allowed at the end of the run's last task, and at most
    rate: Mapped[float] = mapped_column(Float, default=0.0)
    peak_rate: Mapped[float] = mapped_column(Float, default=0.0)
