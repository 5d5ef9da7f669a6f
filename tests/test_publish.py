"""Publishing is exact: private metadata never leaves, keys name the bytes, large objects go up in
verified parts. S3 is moto's server over loopback."""

from __future__ import annotations

import base64
import hashlib
import io
import os
import tempfile

import pytest
from fixed_server import Response, serve
from helpers import bucket_objects, is_image_key, manifest_rows
from PIL import Image
from sqlalchemy import select
from stage_setup import make_config, record_answers, seed_candidates
from test_hostile_downloads import gps_jpeg

from harvest.dataset.layout import manifest_key
from harvest.images.exif import read_exif
from harvest.stages.download import run_download
from harvest.stages.publish import run_publish
from harvest.state.db import session_scope
from harvest.state.models import Image as ImageRow
from harvest.storage import MULTIPART_THRESHOLD, PART_SIZE, WRITING, WRITING_MARKER, S3Store, make_s3_client


def test_gps_photo_is_published_without_private_fields(postgres_url, s3, bucket):
    original = gps_jpeg()
    with serve({"/gps.jpg": Response(original)}) as base:
        cfg = make_config(
            postgres_url, "manual__privacy", f"s3://{bucket}/ds", s3=s3, HARVEST_EXPORTS="parquet"
        )
        seed_candidates(cfg, [base + "/gps.jpg"])
        run_download(cfg, 0)
        with session_scope(cfg.database_url) as session:
            image = session.scalars(select(ImageRow)).one()
        record_answers(cfg, {image.sha256: "egyptian_cat"})
        assert run_publish(cfg).done == 1
    objects = bucket_objects(s3, bucket, "ds")
    published = {k: v for k, v in objects.items() if is_image_key(k)}
    ((key, body),) = published.items()
    clean_sha = hashlib.sha256(body).hexdigest()
    assert key == f"images/egyptian_cat/{clean_sha}.jpg" and clean_sha == image.clean_sha256
    assert body != original and b"SN-0042" not in body and b"Jane Doe" not in body
    with Image.open(io.BytesIO(body)) as published_image:
        assert read_exif(published_image)[1] == {}
    (row,) = manifest_rows(objects[manifest_key(cfg.run_id)])
    assert row["sha256"] == clean_sha and row["source_sha256"] == image.sha256
    # the EXIF Copyright says CC BY 4.0: a licence that requires crediting the Artist, so the name
    # is the row's author (docs/consent-and-licences.md); no other private field is in the row
    assert row["license"] == "CC-BY-4.0" and row["author"] == "Jane Doe"
    rest = str({name: value for name, value in row.items() if name != "author"})
    assert "52.375" not in rest and "Jane" not in rest and "SN-0042" not in rest

    import pyarrow.parquet as pq

    table = pq.read_table(io.BytesIO(objects["manifests/dataset.parquet"]))
    assert table.column("sha256").to_pylist() == [clean_sha]
    assert table.column("exif_make").to_pylist() == ["Canon"]
    assert "52.375" not in str(table.to_pylist()) and "SN-0042" not in str(table.to_pylist())


def test_large_objects_go_up_in_checked_parts(s3, bucket):
    store = S3Store(f"s3://{bucket}/big", s3)
    data = os.urandom(MULTIPART_THRESHOLD + 3 * 1024 * 1024)
    store.put("images/x/large.bin", data)
    client = make_s3_client(s3)
    head = client.head_object(Bucket=bucket, Key="big/images/x/large.bin", ChecksumMode="ENABLED")
    assert head["ContentLength"] == len(data)
    parts = [data[i : i + PART_SIZE] for i in range(0, len(data), PART_SIZE)]
    composite = hashlib.sha256(b"".join(hashlib.sha256(p).digest() for p in parts)).digest()
    assert len(parts) == 3
    # the server verified each part's SHA-256 and keeps the checksum of the part checksums
    assert head["ChecksumSHA256"].split("-")[0] == base64.b64encode(composite).decode()
    assert store.get("images/x/large.bin") == data
    assert store.sha256_of("images/x/large.bin") == hashlib.sha256(data).hexdigest()
    assert not client.list_multipart_uploads(Bucket=bucket).get("Uploads")


@pytest.mark.parametrize("size", [5, MULTIPART_THRESHOLD + 1024 * 1024], ids=["small", "multipart"])
def test_put_file_uploads_from_an_open_file_with_its_checksum(s3, bucket, tmp_path, size):
    from harvest.storage import LocalStore

    data = os.urandom(size)
    client = make_s3_client(s3)
    for store in (S3Store(f"s3://{bucket}/f", s3), LocalStore(tmp_path / "f")):
        with tempfile.TemporaryFile() as source:
            source.write(data)  # left at its end: put_file starts from the beginning
            store.put_file("manifests/m.bin", source, "application/octet-stream")
        assert store.get("manifests/m.bin") == data
        assert store.sha256_of("manifests/m.bin") == hashlib.sha256(data).hexdigest()
    head = client.head_object(Bucket=bucket, Key="f/manifests/m.bin", ChecksumMode="ENABLED")
    assert head["ContentLength"] == size and head["Metadata"]["sha256"] == hashlib.sha256(data).hexdigest()
    assert not client.list_multipart_uploads(Bucket=bucket).get("Uploads")
    assert [p.name for p in (tmp_path / "f" / WRITING).iterdir()] == [WRITING_MARKER]


def test_delete_removes_the_object(s3, bucket, tmp_path):
    from harvest.storage import LocalStore

    for store in (S3Store(f"s3://{bucket}/d", s3), LocalStore(tmp_path / "d")):
        store.put("a/b.txt", b"x")
        store.delete("a/b.txt")
        assert not store.exists("a/b.txt")
        store.delete("a/b.txt")  # already gone: nothing to do


def test_images_stored_before_descriptions_are_described_and_leaks_withdrawn(postgres_url, tmp_path):
    """An image downloaded and published by an older version (no hash, no EXIF record, original
    bytes published with GPS) is described at the next publish and replaced by its stripped copy."""
    from harvest.dataset.curate import DESCRIPTION
    from harvest.state.models import Publication, utcnow
    from harvest.storage import LocalStore

    original = gps_jpeg()
    destination = tmp_path / "dataset"
    with serve({"/gps.jpg": Response(original)}) as base:
        cfg = make_config(postgres_url, "manual__old", str(destination))
        seed_candidates(cfg, [base + "/gps.jpg"])
        run_download(cfg, 0)
    with session_scope(cfg.database_url) as session:
        image = session.scalars(select(ImageRow)).one()
        for column in DESCRIPTION:
            setattr(image, column, None)
        sha = image.sha256
        leaked_key = f"images/egyptian_cat/{sha}.jpg"
        session.add(
            Publication(
                destination=cfg.destination,
                key=leaked_key,
                sha256=sha,
                run_id=cfg.run_id,
                created_at=utcnow(),
            )
        )
    LocalStore(destination).put(leaked_key, original)
    record_answers(cfg, {sha: "egyptian_cat"})

    report = run_publish(cfg)
    assert report.done == 1 and report.extra["withdrawn"] == 1
    with session_scope(cfg.database_url) as session:
        image = session.get(ImageRow, sha)
        old = session.scalars(select(Publication).where(Publication.key == leaked_key)).one()
    assert image.phash and "gps" in image.private_fields and image.clean_sha256
    assert (
        old.withdrawn_reason == "published with metadata outside the allow-list; replaced by the clean copy"
    )
    files = {p.relative_to(destination).as_posix(): p.read_bytes() for p in destination.rglob("images/*/*")}
    assert list(files) == [f"images/egyptian_cat/{image.clean_sha256}.jpg"]
    assert b"SN-0042" not in next(iter(files.values()))
