"""A stage that fails partway and is re-run ends exactly where a clean run ends: nothing lost or doubled."""

from __future__ import annotations

import pytest
from flaky_proxy import flaky_s3_proxy
from helpers import (
    DEFAULT_EXPORT_KEYS,
    bucket_objects,
    comparable_across_runs,
    is_image_key,
    manifest_rows,
    without_run_ids,
)
from sqlalchemy import func, select

from harvest.dataset.layout import manifest_key
from harvest.demo_site import DEMO_LABELS
from harvest.pipeline import prepare_run, run_all
from harvest.settings.config import S3Options, build_config
from harvest.stages.classify import run_classify
from harvest.stages.crawl import run_crawl
from harvest.stages.download import run_download
from harvest.stages.extract import run_extract
from harvest.stages.publish import run_publish
from harvest.state.db import session_scope
from harvest.state.models import Candidate, Image, Publication
from harvest.storage import LocalStore, StorageError


def _cfg(site, run_id, destination, database_url, s3):
    return build_config(
        {"seeds": [f"{site}/index.html"], "labels": list(DEMO_LABELS), "destination": destination},
        run_id,
        database_url=database_url,
        s3=s3,
    )


def _published(s3, bucket, prefix, run_id):
    objects = bucket_objects(s3, bucket, prefix)
    manifest = without_run_ids(manifest_rows(objects.pop(manifest_key(run_id))))
    return objects, manifest


def test_publish_resumes_after_s3_outage(postgres_url, s3, bucket, site, classifier):
    clean = _cfg(site, "manual__clean", f"s3://{bucket}/clean", postgres_url, s3)
    run_all(clean, classifier)
    clean_objects, clean_manifest = _published(s3, bucket, "clean", clean.run_id)

    with flaky_s3_proxy(s3.endpoint_url) as (endpoint, outage):
        via_proxy = S3Options(endpoint, s3.aws_access_key_id, s3.aws_secret_access_key, s3.region_name)
        cfg = _cfg(site, "manual__outage", f"s3://{bucket}/outage", postgres_url, via_proxy)
        prepare_run(cfg)
        run_crawl(cfg)
        run_extract(cfg)
        for shard in range(cfg.num_shards):
            run_download(cfg, shard)
        run_classify(cfg, classifier)

        outage.allowed_puts = 2  # two uploads get through, then S3 answers 503
        with pytest.raises(StorageError, match="ServiceUnavailable|503"):
            run_publish(cfg)
        partial = bucket_objects(s3, bucket, "outage")
        assert len(partial) == 2 and not any(k.startswith("manifests/") for k in partial)
        assert outage.refused >= 1

        outage.heal()
        report = run_publish(cfg)
    assert report.done == 2 and report.skipped == 2

    objects, manifest = _published(s3, bucket, "outage", cfg.run_id)
    assert set(objects) >= DEFAULT_EXPORT_KEYS
    assert comparable_across_runs(objects) == comparable_across_runs(clean_objects)
    assert manifest == clean_manifest
    with session_scope(postgres_url) as session:
        keys = session.scalars(
            select(Publication.key).where(Publication.destination == cfg.destination)
        ).all()
    assert sorted(keys) == sorted(k for k in objects if is_image_key(k))


def test_download_shard_crash_then_retry(database_url, site, classifier, tmp_path, monkeypatch):
    cfg = _cfg(site, "manual__crash", str(tmp_path / "crash"), database_url, None)
    cfg = cfg.with_(staging=str(tmp_path / "staging-crash"), num_shards=1)
    prepare_run(cfg)
    run_crawl(cfg)
    run_extract(cfg)

    real_put = LocalStore.put
    writes = {"n": 0}

    def put_then_fail(self, key, data, content_type="application/octet-stream"):
        writes["n"] += 1
        if writes["n"] > 3:  # the disk fills up after three images
            raise StorageError(str(self.root / key), "cannot write: No space left on device")
        real_put(self, key, data, content_type)

    monkeypatch.setattr(LocalStore, "put", put_then_fail)
    with pytest.raises(StorageError, match="No space left"):
        run_download(cfg, 0)
    with session_scope(database_url) as session:
        done = session.scalar(
            select(func.count()).where(Candidate.run_id == cfg.run_id, Candidate.status == "done")
        )
    assert done == 0  # the failed chunk rolled back: no row points at bytes that may be missing

    monkeypatch.setattr(LocalStore, "put", real_put)
    run_download(cfg, 0)
    run_classify(cfg, classifier)
    run_publish(cfg)

    clean = _cfg(site, "manual__clean", str(tmp_path / "clean"), database_url, None)
    run_all(clean, classifier)

    def outcome(run_id):
        with session_scope(database_url) as session:
            rows = session.execute(
                select(Candidate.url, Candidate.status, Candidate.sha256).where(Candidate.run_id == run_id)
            ).all()
        return sorted(rows)

    assert outcome(cfg.run_id) == outcome(clean.run_id)
    clean_manifest = (tmp_path / "clean" / manifest_key(clean.run_id)).read_text()
    crash_manifest = (tmp_path / "crash" / manifest_key(cfg.run_id)).read_text()
    assert without_run_ids(manifest_rows(crash_manifest.encode())) == without_run_ids(
        manifest_rows(clean_manifest.encode())
    )
    with session_scope(database_url) as session:
        assert session.scalar(select(func.count()).select_from(Image)) == 8
