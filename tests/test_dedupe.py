"""Exact and near duplicates: one object per picture, the best copy kept, the others linked to it.

The stage tests record the classifier's answer for every image (stage_setup.record_answers) so
that only the duplicate rules decide what is published.
"""

from __future__ import annotations

import random

import numpy as np
import pytest
from fixed_server import Response, serve
from helpers import bucket_objects, is_image_key, manifest_rows
from PIL import Image
from skimage import data
from sqlalchemy import select
from stage_setup import encode, make_config, record_answers, seed_candidates

from harvest.dataset.layout import manifest_key
from harvest.images import neardup
from harvest.images.neardup import Entry, HashIndex, group, hamming
from harvest.stages.download import run_download
from harvest.stages.publish import run_publish
from harvest.state.db import session_scope
from harvest.state.models import Image as ImageRow
from harvest.state.models import ImageUrl, Publication


def test_index_finds_exactly_what_a_full_scan_finds():
    rng = random.Random(5)
    stored = [rng.getrandbits(64) for _ in range(5000)]
    # plant neighbours at every distance 0..12 from some stored hashes
    queries = [rng.getrandbits(64) for _ in range(200)]
    for d in range(13):
        base = stored[d * 7]
        flipped = base
        for bit in rng.sample(range(64), d):
            flipped ^= 1 << bit
        queries.append(flipped)
    for distance in (0, 3, 6, 10):
        index = HashIndex(distance)
        for i, value in enumerate(stored):
            index.add(value, i)
        for query in queries:
            best = min(hamming(query, value) for value in stored)
            found = index.nearest(query)
            if best <= distance:
                assert found is not None and found[1] == best
            else:
                assert found is None


def test_lookup_touches_a_small_part_of_the_index():
    rng = random.Random(9)
    index = HashIndex(6)
    for i in range(50_000):
        index.add(rng.getrandbits(64), i)
    assert len(index.candidates(rng.getrandbits(64))) < 500


def test_group_keeps_the_largest_then_least_compressed_copy():
    entries = [
        Entry("small", 0b1011, 400, 300, 40_000),
        Entry("big", 0b1010, 800, 600, 90_000),
        Entry("big-q60", 0b1000, 800, 600, 50_000),
        Entry("other", 0xFFFF_0000_FFFF_0000, 800, 600, 90_000),
    ]
    assert group(entries, 4) == {"small": ("big", 1), "big-q60": ("big", 1)}


def test_distance_out_of_range_is_refused():
    with pytest.raises(ValueError, match="between 0 and 24"):
        HashIndex(30)


def _sepia(array: np.ndarray) -> Image.Image:
    """Same palette for any photo: grey levels mapped onto one brown ramp."""
    grey = np.asarray(Image.fromarray(array).convert("L"), dtype=np.float32) / 255
    ramp = np.stack([grey * 230 + 20, grey * 170 + 30, grey * 110 + 20], axis=-1)
    return Image.fromarray(ramp.astype(np.uint8))


def test_copies_resizes_and_recompressions_are_published_once(postgres_url, s3, bucket):
    cat = Image.fromarray(data.chelsea())
    original = encode(cat, "JPEG", quality=92)
    smaller = encode(cat.resize((int(cat.width * 0.9), int(cat.height * 0.9))), "JPEG", quality=92)
    recompressed = encode(cat, "JPEG", quality=60)
    coffee, rocket = _sepia(data.coffee()), _sepia(data.rocket())
    routes = {
        "/a/cat.jpg": Response(original),
        "/b/cat.jpg": Response(original),
        "/c/cat.jpg": Response(original),
        "/cat-90.jpg": Response(smaller),
        "/cat-q60.jpg": Response(recompressed),
        "/coffee.jpg": Response(encode(coffee, "JPEG", quality=90)),
        "/rocket.jpg": Response(encode(rocket, "JPEG", quality=90)),
    }
    with serve(routes) as base:
        cfg = make_config(postgres_url, "manual__dups", f"s3://{bucket}/ds", s3=s3)
        seed_candidates(cfg, [base + path for path in routes])
        assert run_download(cfg, 0).done == len(routes)
    with session_scope(cfg.database_url) as session:
        images = {row.first_url.removeprefix(base): row for row in session.scalars(select(ImageRow))}
        served_by = session.execute(select(ImageUrl.sha256, ImageUrl.url)).all()
    assert len(images) == 5  # three URLs, one stored object
    cat_sha = images["/a/cat.jpg"].sha256
    assert sorted(url.removeprefix(base) for sha, url in served_by if sha == cat_sha) == [
        "/a/cat.jpg",
        "/b/cat.jpg",
        "/c/cat.jpg",
    ]
    record_answers(
        cfg,
        {
            cat_sha: "egyptian_cat",
            images["/cat-90.jpg"].sha256: "egyptian_cat",
            images["/cat-q60.jpg"].sha256: "egyptian_cat",
            images["/coffee.jpg"].sha256: "espresso",
            images["/rocket.jpg"].sha256: "espresso",
        },
    )
    report = run_publish(cfg)
    assert report.done == 3 and report.reasons["near duplicate"] == 2

    objects = bucket_objects(s3, bucket, "ds")
    published = {key for key in objects if is_image_key(key)}
    assert published == {
        f"images/egyptian_cat/{cat_sha}.jpg",
        f"images/espresso/{images['/coffee.jpg'].sha256}.jpg",
        f"images/espresso/{images['/rocket.jpg'].sha256}.jpg",
    }
    with session_scope(cfg.database_url) as session:
        rows = {row.sha256: row for row in session.scalars(select(ImageRow))}
    for path in ("/cat-90.jpg", "/cat-q60.jpg"):
        assert rows[images[path].sha256].duplicate_of == cat_sha
    for path in ("/a/cat.jpg", "/coffee.jpg", "/rocket.jpg"):
        assert rows[images[path].sha256].duplicate_of is None
    rows_in_manifest = manifest_rows(objects[manifest_key(cfg.run_id)])
    assert len(rows_in_manifest) == 3


def test_a_better_copy_found_later_replaces_the_published_one(postgres_url, tmp_path):
    cat = Image.fromarray(data.chelsea())
    small = encode(cat.resize((int(cat.width * 0.9), int(cat.height * 0.9))), "JPEG", quality=90)
    large = encode(cat, "JPEG", quality=90)
    destination = tmp_path / "dataset"
    with serve({"/small.jpg": Response(small), "/large.jpg": Response(large)}) as base:
        first = make_config(postgres_url, "manual__first", str(destination))
        seed_candidates(first, [base + "/small.jpg"])
        run_download(first, 0)
        small_sha = _sha_of(first, base + "/small.jpg")
        record_answers(first, {small_sha: "egyptian_cat"})
        assert run_publish(first).done == 1

        second = make_config(postgres_url, "manual__second", str(destination))
        seed_candidates(second, [base + "/large.jpg"])
        run_download(second, 0)
        large_sha = _sha_of(second, base + "/large.jpg")
        record_answers(second, {large_sha: "egyptian_cat"})
        report = run_publish(second)
    assert report.done == 1 and report.extra["withdrawn"] == 1
    files = {p.relative_to(destination).as_posix() for p in (destination / "images").rglob("*.jpg")}
    assert files == {f"images/egyptian_cat/{large_sha}.jpg"}
    with session_scope(postgres_url) as session:
        old = session.scalars(select(Publication).where(Publication.sha256 == small_sha)).one()
    assert old.withdrawn_at is not None and large_sha in old.withdrawn_reason


def _sha_of(cfg, url: str) -> str:
    with session_scope(cfg.database_url) as session:
        return session.scalars(select(ImageUrl.sha256).where(ImageUrl.url == url)).one()


def test_index_answers_like_a_scan_while_it_grows(monkeypatch):
    """Lookups between additions, across every rebuild of the tables: the same answer as comparing
    with every stored hash, the first added of equally close ones."""
    monkeypatch.setattr(neardup, "REBUILD_EVERY", 50)
    rng = random.Random(11)
    for distance in (0, 5, 9, 24):
        index, stored = HashIndex(distance), []
        for i in range(1500 if distance < 24 else 300):
            if stored and rng.random() < 0.6:  # a near copy of a stored hash, or an exact one
                value = stored[rng.randrange(len(stored))]
                for bit in rng.sample(range(64), rng.randint(0, 10)):
                    value ^= 1 << bit
            else:
                value = rng.getrandbits(64)
            if stored and i % 2:
                best = min((hamming(value, s), slot) for slot, s in enumerate(stored))
                expected = (best[1], best[0]) if best[0] <= distance else None
                assert index.nearest(value) == expected, (distance, i)
            index.add(value, len(stored))
            stored.append(value)
        assert len(index) == len(stored)
