"""The near-duplicate grouping done in the state DB decides exactly as the in-memory one."""

from __future__ import annotations

import random

from sqlalchemy import select

from harvest.dataset.neardup_sql import group_near_duplicates
from harvest.images.neardup import Entry, group
from harvest.state.db import insert_ignore, migrate, session_scope
from harvest.state.models import Image


def _images(count: int, seed: int) -> list[dict]:
    """Random hashes with planted near copies (a few bits flipped), sizes that tie now and then."""
    rng = random.Random(seed)
    values = [rng.getrandbits(64) for _ in range(count)]
    for _ in range(count // 2):
        value = rng.choice(values)
        for bit in rng.sample(range(64), rng.randrange(0, 9)):
            value ^= 1 << bit
        values.append(value)
    rows = []
    for n, value in enumerate(values):
        width = rng.choice([100, 200, 200, 400])
        rows.append(
            {
                "sha256": f"{n:064x}",
                "staging": "/nowhere",
                "storage_key": f"k{n}",
                "format": "JPEG",
                "mime_type": "image/jpeg",
                "width": width,
                "height": width,
                "size_bytes": rng.choice([1000, 5000, 5000, 9000]),
                "first_url": f"http://example.test/{n}.jpg",
                "phash": f"{value:016x}",
            }
        )
    return rows


def test_grouping_in_the_database_equals_the_grouping_in_memory(database_url):
    migrate(database_url)
    rows = _images(1500, seed=3)
    with session_scope(database_url) as session:
        insert_ignore(session, Image, rows, ["sha256"])
    entries = [
        Entry(r["sha256"], int(r["phash"], 16), r["width"], r["height"], r["size_bytes"]) for r in rows
    ]
    for distance in (6, 9, 0):
        expected = group(entries, distance)
        assert expected, "the planted copies make near duplicates"
        found = group_near_duplicates(database_url, select(Image.sha256), distance)
        with session_scope(database_url) as session:
            stored = {
                sha256: (of, d)
                for sha256, of, d in session.execute(
                    select(Image.sha256, Image.duplicate_of, Image.duplicate_distance)
                ).all()
                if of is not None
            }
        assert stored == expected
        assert found == len(expected)
