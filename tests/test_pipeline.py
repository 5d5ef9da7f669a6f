"""The five stages end to end without Airflow: demo site -> state DB -> real classifier -> S3 / folder."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from helpers import (
    DEFAULT_EXPORT_KEYS,
    EXPECTED_KEPT,
    bucket_objects,
    candidate_states,
    expected_image_keys,
    is_image_key,
    manifest_rows,
)
from sqlalchemy import func, select

from harvest.dataset.layout import manifest_key
from harvest.demo_site import DEMO_LABELS
from harvest.pipeline import prepare_run, run_all
from harvest.settings.config import ConfigError, build_config
from harvest.state.db import session_scope
from harvest.state.models import Image, Page, Publication, Run

MANIFEST_FIELDS = {"url", "page_url", "sha256", "width", "height", "format", "label", "score", "alt"}


def _config(site: str, run_id: str, **params):
    return build_config(
        {"seeds": [f"{site}/index.html"], "labels": list(DEMO_LABELS), **params},
        run_id,
        database_url=params.pop("database_url", None),
        s3=params.pop("s3", None),
    )


def test_demo_site_harvest_to_s3(database_url, s3, bucket, site, site_root, classifier):
    cfg = build_config(
        {
            "seeds": [f"{site}/index.html"],
            "labels": list(DEMO_LABELS),
            "destination": f"s3://{bucket}/dataset",
        },
        "scheduled__2026-11-22T00:00:00+00:00",
        database_url=database_url,
        s3=s3,
    )
    run_all(cfg, classifier)

    objects = bucket_objects(s3, bucket, "dataset")
    run_manifest = manifest_key(cfg.run_id)
    assert set(objects) == expected_image_keys(site_root) | {run_manifest} | DEFAULT_EXPORT_KEYS
    for key, body in objects.items():
        if is_image_key(key):
            assert key.split("/")[-1].split(".")[0] == hashlib.sha256(body).hexdigest()

    rows = manifest_rows(objects[run_manifest])
    assert len(rows) == len(EXPECTED_KEPT)
    assert {row["url"]: row["label"] for row in rows} == {
        f"{site}/{name}": label for name, label in EXPECTED_KEPT.items()
    }
    for row in rows:
        assert set(row) >= MANIFEST_FIELDS
        assert row["score"] >= cfg.threshold
        assert row["format"] == "JPEG" and row["width"] >= 64 and row["height"] >= 64
        assert objects[f"images/{row['label']}/{row['sha256']}.jpg"]
    by_url = {row["url"]: row for row in rows}
    assert by_url[f"{site}/photos/coffee-large.jpg"]["alt"] == "An espresso on a saucer"
    assert by_url[f"{site}/photos/coffee-large.jpg"]["page_url"] == f"{site}/blog/coffee.html"

    states = candidate_states(database_url, cfg.run_id, site)
    assert states["photos/missing.jpg"][0] == "failed" and "HTTP 404" in states["photos/missing.jpg"][1]
    assert (
        states["photos/broken.jpg"][0] == "skipped"
        and "not a decodable image" in states["photos/broken.jpg"][1]
    )
    assert states["static/pixel.gif"][0] == "skipped" and "1x1" in states["static/pixel.gif"][1]
    assert states["static/logo.png"][0] == "skipped"
    assert states["photos/chelsea-copy.jpg"][0] == "done"  # same bytes as chelsea.jpg: stored once
    assert "thumbs/coffee-small.jpg" not in states  # srcset: only the largest variant is fetched
    assert "thumbs/grace-hopper-thumb.jpg" not in states  # the linked full-size image replaces it
    assert "photos/deep-cat.jpg" not in states  # depth 3 is beyond max_depth 2

    with session_scope(database_url) as session:
        assert session.scalar(select(func.count()).select_from(Image)) == 8  # 9 images, one served twice
        run = session.get(Run, cfg.run_id)
        assert run.finished_at is not None and run.counters["publish"]["kept"] == 4


def test_rerun_uploads_nothing_twice(database_url, s3, bucket, site, classifier):
    cfg = build_config(
        {"seeds": [f"{site}/index.html"], "labels": list(DEMO_LABELS), "destination": f"s3://{bucket}/ds"},
        "manual__rerun",
        database_url=database_url,
        s3=s3,
    )
    first = run_all(cfg, classifier)
    before = bucket_objects(s3, bucket, "ds")
    second = run_all(cfg, classifier)
    after = bucket_objects(s3, bucket, "ds")

    assert first[-1].done == 4
    assert second[-1].done == 0 and second[-1].reasons["already published"] == 4
    assert all(report.done == 0 for report in second[:-2]), [str(r) for r in second]
    assert after == before
    with session_scope(database_url) as session:
        assert session.scalar(select(func.count()).select_from(Publication)) == 4


def test_embedded_default_writes_local_folder_and_sqlite(site, site_root, classifier, tmp_path):
    cfg = _config(site, "manual__local")
    home = tmp_path / "harvest-home"
    assert cfg.database_url == f"sqlite:///{home / 'state.db'}"
    assert cfg.destination == str(home / "dataset")

    run_all(cfg, classifier)

    dataset = Path(cfg.destination)
    published = {p.relative_to(dataset).as_posix() for p in dataset.rglob("*") if p.is_file()}
    assert published == expected_image_keys(site_root) | {manifest_key(cfg.run_id)} | DEFAULT_EXPORT_KEYS
    assert not list(dataset.rglob(".tmp-*"))


def test_max_depth_zero_crawls_only_the_seed(site, classifier):
    cfg = _config(site, "manual__shallow", max_depth=0)
    run_all(cfg, classifier)
    with session_scope(cfg.database_url) as session:
        pages = session.scalars(select(Page.url).where(Page.run_id == cfg.run_id)).all()
    assert pages == [f"{site}/index.html"]
    rows = manifest_rows((Path(cfg.destination) / manifest_key(cfg.run_id)).read_bytes())
    assert [row["url"] for row in rows] == [f"{site}/photos/chelsea.jpg"]


def test_unknown_label_is_refused_before_any_work(site, tmp_path):
    cfg = build_config({"seeds": [f"{site}/index.html"], "labels": ["goldfish", "unicorn"]}, "manual__bad")
    with pytest.raises(ConfigError, match="unicorn"):
        prepare_run(cfg)
    assert not (tmp_path / "harvest-home" / "state.db").exists()
