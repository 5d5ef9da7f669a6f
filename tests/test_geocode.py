"""Offline reverse geocoding: a photo's GPS position gives its country (published) and nearest town
(private), from the GeoNames table shipped in the package; nothing is fetched."""

from __future__ import annotations

import io

import pytest
from cryptography.fernet import Fernet
from fixed_server import Response, serve
from helpers import bucket_objects, manifest_rows
from sqlalchemy import select
from stage_setup import make_config, record_answers, seed_candidates
from test_hostile_downloads import gps_jpeg

from harvest.dataset.layout import manifest_key
from harvest.images.geocode import place_of
from harvest.images.privacy import decrypt_private
from harvest.stages.download import run_download
from harvest.stages.publish import run_publish
from harvest.state.db import session_scope
from harvest.state.models import Image as ImageRow


def test_a_position_in_a_city_names_its_country_and_town():
    place = place_of(52.375, 4.883)  # central Amsterdam
    assert (place.country_code, place.country, place.town) == ("NL", "Netherlands", "Amsterdam")
    assert place.distance_km < 5


@pytest.mark.parametrize(
    ("latitude", "longitude"),
    [(0.0, -30.0), (None, 4.0), (52.0, None), (91.0, 0.0), (0.0, 181.0)],
    ids=["open sea", "no latitude", "no longitude", "latitude out of range", "longitude out of range"],
)
def test_no_place_without_a_town_nearby_or_a_valid_position(latitude, longitude):
    assert place_of(latitude, longitude) is None


def test_off_by_default(postgres_url, tmp_path):
    with serve({"/gps.jpg": Response(gps_jpeg())}) as base:
        cfg = make_config(postgres_url, "manual__nogeo", str(tmp_path / "ds"), HARVEST_METADATA_KEY="")
        assert not cfg.reverse_geocode
        seed_candidates(cfg, [base + "/gps.jpg"])
        assert run_download(cfg, 0).done == 1
    with session_scope(cfg.database_url) as session:
        row = session.scalars(select(ImageRow)).one()
    assert "country" not in row.exif and "place" not in row.private_fields


def test_country_is_published_and_the_town_kept_private(postgres_url, s3, bucket):
    key = Fernet.generate_key().decode()
    with serve({"/gps.jpg": Response(gps_jpeg())}) as base:
        cfg = make_config(
            postgres_url,
            "manual__geo",
            f"s3://{bucket}/ds",
            s3=s3,
            HARVEST_REVERSE_GEOCODE="1",
            HARVEST_METADATA_KEY=key,
            HARVEST_EXPORTS="parquet",
        )
        seed_candidates(cfg, [base + "/gps.jpg"])
        assert run_download(cfg, 0).done == 1
        with session_scope(cfg.database_url) as session:
            image = session.scalars(select(ImageRow)).one()
        record_answers(cfg, {image.sha256: "egyptian_cat"})
        assert run_publish(cfg).done == 1

    assert image.exif["country"] == "Netherlands" and image.exif["country_code"] == "NL"
    assert "place" in image.private_fields and "Amsterdam" not in str(image.exif)
    private = decrypt_private(image.exif_private, key)
    assert private["place"]["town"] == "Amsterdam" and private["gps"]["latitude"] == pytest.approx(52.375)

    import pyarrow.parquet as pq

    objects = bucket_objects(s3, bucket, "ds")
    table = pq.read_table(io.BytesIO(objects["manifests/dataset.parquet"]))
    assert table.column("exif_country").to_pylist() == ["Netherlands"]
    published = b"".join(body for k, body in objects.items() if k.startswith("images/"))
    assert b"Amsterdam" not in published and "Amsterdam" not in str(table.to_pylist())
    (row,) = manifest_rows(objects[manifest_key(cfg.run_id)])
    assert "Amsterdam" not in str(row) and "52.375" not in str(row)
