"""Near-duplicate grouping in the state DB, so its memory does not grow with the destination.

The same greedy rule as :func:`harvest.images.neardup.group`: images are visited best copy first
(more pixels, then more bytes per pixel, then sha256), and each one is a near duplicate of the
closest earlier *kept* image within the distance (of equally close ones, the best), else it is kept.
Only here the images, with their hash cut into four 16-bit blocks, are rows of a temporary table
indexed on each block; a chunk of images is looked up at once by a join that probes each block with
every variant of it within ``distance // 4`` flipped bits (the multi-index hashing of
:mod:`harvest.images.neardup`, pigeonhole included), and on Postgres the exact Hamming distance is
checked in the join too. The process holds one chunk and its matches, whatever the destination's size.
"""

from __future__ import annotations

import logging

from sqlalchemy import (
    BigInteger,
    Column,
    Float,
    Index,
    Integer,
    MetaData,
    Select,
    String,
    Table,
    bindparam,
    case,
    cast,
    func,
    insert,
    or_,
    select,
    text,
    true,
    union_all,
    update,
)

from harvest.images.neardup import BLOCK_BITS, BLOCKS, _flips, hamming, parse
from harvest.state.db import get_engine, session_scope
from harvest.state.models import Image

log = logging.getLogger(__name__)

#: images resolved per round trip
CHUNK = 256
#: rows inserted or written back per statement
WRITE = 2000
_MASK = (1 << BLOCK_BITS) - 1
_U64 = (1 << 64) - 1

_META = MetaData()
#: the images to group, numbered in visiting order, with the verdict they had and the one they get
_MEMBERS = Table(
    "neardup_members",
    _META,
    Column("seq", Integer, primary_key=True),
    Column("sha256", String(64), nullable=False),
    #: the 64-bit hash as a signed BIGINT (two's complement)
    Column("val", BigInteger, nullable=False),
    *(Column(f"b{i}", Integer, nullable=False) for i in range(BLOCKS)),
    Column("old_of", String(64)),
    Column("old_distance", Integer),
    Column("new_of", String(64)),
    Column("new_distance", Integer),
    prefixes=["TEMPORARY"],
)
#: the images kept so far (no near duplicate of an earlier one), indexed on each block; only ever
#: appended to, so it stays compact
_KEPT = Table(
    "neardup_kept",
    _META,
    Column("seq", Integer, primary_key=True),
    Column("sha256", String(64), nullable=False),
    Column("val", BigInteger, nullable=False),
    *(Column(f"b{i}", Integer, nullable=False) for i in range(BLOCKS)),
    prefixes=["TEMPORARY"],
)
for _i in range(BLOCKS):
    Index(f"ix_neardup_kept_b{_i}", _KEPT.c[f"b{_i}"])
_FLIPS = Table("neardup_flips", _META, Column("mask", Integer, primary_key=True), prefixes=["TEMPORARY"])


def _blocks(value: int) -> dict[str, int]:
    return {f"b{i}": (value >> (i * BLOCK_BITS)) & _MASK for i in range(BLOCKS)}


def _signed(value: int) -> int:
    return value - (1 << 64) if value >= 1 << 63 else value


def _quality_order() -> list:
    """Best copy first, as harvest.images.neardup.Entry.quality (reversed)."""
    pixels = cast(Image.width, BigInteger) * cast(Image.height, BigInteger)
    density = cast(Image.size_bytes, Float) / case((pixels > 0, pixels), else_=1)
    return [pixels.desc(), density.desc(), Image.sha256.desc()]


def group_near_duplicates(database_url: str, members: Select, distance: int) -> int:
    """Group the images among ``members`` (a select of sha256s) that no per-image rule excluded and
    that have a hash; write each one's ``duplicate_of`` and ``duplicate_distance`` (None for the kept
    ones) where they changed. Returns how many are near duplicates."""
    engine = get_engine(database_url)
    postgres = engine.dialect.name == "postgresql"
    with engine.connect() as conn:
        _META.drop_all(conn, checkfirst=True)  # left by an interrupted grouping on a pooled connection
        _META.create_all(conn)
        conn.commit()
        try:
            total = _fill(conn, database_url, members, distance)
            for start in range(1, total + 1, CHUNK):
                _resolve_chunk(conn, start, min(start + CHUNK - 1, total), distance, postgres)
                conn.commit()
            return _write_back(conn, database_url, total)
        finally:
            conn.rollback()
            _META.drop_all(conn, checkfirst=True)
            conn.commit()


def _fill(conn, database_url: str, members: Select, distance: int) -> int:
    """The eligible images in visiting order, numbered from 1; and the block variants to probe."""
    query = (
        select(Image.sha256, Image.phash, Image.duplicate_of, Image.duplicate_distance)
        .where(Image.sha256.in_(members), Image.excluded.is_(None), Image.phash.is_not(None))
        .order_by(*_quality_order())
        .execution_options(yield_per=WRITE)
    )
    seq = 0
    batch: list[dict] = []
    with session_scope(database_url) as session:
        for row in session.execute(query):
            seq += 1
            value = parse(row.phash)
            batch.append(
                {
                    "seq": seq,
                    "sha256": row.sha256,
                    "val": _signed(value),
                    **_blocks(value),
                    "old_of": row.duplicate_of,
                    "old_distance": row.duplicate_distance,
                }
            )
            if len(batch) >= WRITE:
                conn.execute(insert(_MEMBERS), batch)
                batch = []
    if batch:
        conn.execute(insert(_MEMBERS), batch)
    conn.execute(insert(_FLIPS), [{"mask": mask} for mask in _flips(distance // BLOCKS)])
    conn.commit()
    return seq


def _earlier_matches(conn, start: int, end: int, distance: int, postgres: bool) -> dict[int, list]:
    """For each image of the chunk, the images kept before the chunk that share a block within the
    radius (on Postgres: only those within the distance): {seq: [(distance, seq, sha256), ...]}."""
    chunk = _MEMBERS.alias("q")
    selects = []
    for i in range(BLOCKS):
        block = chunk.c[f"b{i}"]
        variant = block.op("|")(_FLIPS.c.mask) - block.op("&")(_FLIPS.c.mask)  # XOR, in any SQL
        statement = (
            select(
                chunk.c.seq.label("row"),
                chunk.c.val.label("row_val"),
                _KEPT.c.seq,
                _KEPT.c.sha256,
                _KEPT.c.val,
            )
            .select_from(chunk.join(_FLIPS, true()).join(_KEPT, _KEPT.c[f"b{i}"] == variant))
            .where(chunk.c.seq.between(start, end))
        )
        if postgres:
            from sqlalchemy.dialects.postgresql import BIT

            statement = statement.where(
                func.bit_count(cast(chunk.c.val.op("#")(_KEPT.c.val), BIT(64))) <= distance
            )
        selects.append(statement)
    if postgres:
        # the temporary tables have no statistics: without this the planner may hash the whole
        # kept table for every chunk (quadratic in the images) instead of probing its block
        # indexes; and a query this short gains nothing from being compiled (JIT) first
        for setting in ("enable_hashjoin", "enable_mergejoin", "jit"):
            conn.execute(text(f"SET LOCAL {setting} = off"))
    found: dict[int, dict[int, tuple]] = {}
    for row, row_val, seq, sha256, val in conn.execute(union_all(*selects)):
        d = hamming(row_val & _U64, val & _U64)
        if d <= distance:
            found.setdefault(row, {})[seq] = (d, seq, sha256)
    return {row: list(matches.values()) for row, matches in found.items()}


def _resolve_chunk(conn, start: int, end: int, distance: int, postgres: bool) -> None:
    """Visit the chunk's images in order: each is a near duplicate of the closest kept image (earlier
    chunks from the DB, this chunk's from memory), else kept itself."""
    rows = conn.execute(
        select(_MEMBERS.c.seq, _MEMBERS.c.sha256, _MEMBERS.c.val)
        .where(_MEMBERS.c.seq.between(start, end))
        .order_by(_MEMBERS.c.seq)
    ).all()
    earlier = _earlier_matches(conn, start, end, distance, postgres)
    kept_here: list[tuple[int, str, int]] = []
    duplicates: list[dict] = []
    for seq, sha256, val in rows:
        value = val & _U64
        options = list(earlier.get(seq, []))
        for kept_seq, kept_sha256, kept_value in kept_here:
            d = hamming(value, kept_value)
            if d <= distance:
                options.append((d, kept_seq, kept_sha256))
        if options:
            d, _, best = min(options)
            duplicates.append({"s": seq, "of": best, "d": d})
        else:
            kept_here.append((seq, sha256, value))
    if kept_here:
        conn.execute(
            insert(_KEPT),
            [
                {"seq": seq, "sha256": sha256, "val": _signed(value), **_blocks(value)}
                for seq, sha256, value in kept_here
            ],
        )
    if duplicates:
        conn.execute(
            update(_MEMBERS)
            .where(_MEMBERS.c.seq == bindparam("s"))
            .values(new_of=bindparam("of"), new_distance=bindparam("d")),
            duplicates,
        )


def _write_back(conn, database_url: str, total: int) -> int:
    """Write the rows whose grouping changed to the images, a range at a time; how many are near
    duplicates now."""
    changed = duplicates = 0
    for start in range(1, total + 1, WRITE):
        rows = conn.execute(
            select(_MEMBERS.c.sha256, _MEMBERS.c.new_of, _MEMBERS.c.new_distance).where(
                _MEMBERS.c.seq.between(start, start + WRITE - 1),
                or_(
                    _MEMBERS.c.new_of.is_distinct_from(_MEMBERS.c.old_of),
                    _MEMBERS.c.new_distance.is_distinct_from(_MEMBERS.c.old_distance),
                ),
            )
        ).all()
        if rows:
            with session_scope(database_url) as session:
                session.connection().execute(
                    update(Image.__table__)
                    .where(Image.__table__.c.sha256 == bindparam("key"))
                    .values(duplicate_of=bindparam("of"), duplicate_distance=bindparam("d")),
                    [{"key": sha, "of": of, "d": d} for sha, of, d in rows],
                )
        changed += len(rows)
    duplicates = conn.execute(
        select(func.count()).select_from(_MEMBERS).where(_MEMBERS.c.new_of.is_not(None))
    ).scalar_one()
    log.info("near duplicates: %d of %d images, %d rows changed", duplicates, total, changed)
    return duplicates
