"""The harvest on a real multi-process Airflow: scheduler, DAG processor, API server, two Celery workers.

Proves what a multi-machine deployment relies on: mapped download, classify and publish shards spread
over workers (each image scored once whichever worker claims it), bytes
between stages go through the object store (S3 staging), the result equals a single-process run, and a
backfill of a past date re-classifies and re-publishes that date's images without downloading them again.
"""

from __future__ import annotations

import json
import time
import uuid

import pytest
from airflow_cluster import celery_cluster
from conftest import _create_database, _drop_database, free_port
from helpers import bucket_objects, comparable_across_runs, manifest_rows, without_run_ids
from sqlalchemy import func, select

from harvest.dataset.layout import manifest_key
from harvest.demo_site import DEMO_LABELS
from harvest.pipeline import run_all
from harvest.settings.config import build_config
from harvest.state.db import session_scope
from harvest.state.models import Candidate, Page, Run

pytestmark = pytest.mark.slow

SHARDS = 6


@pytest.fixture(scope="module")
def cluster_env(tmp_path_factory, s3_endpoint, site):
    """Databases, bucket and settings shared by the cluster and the comparison run."""
    from harvest.settings.config import S3Options
    from harvest.storage import make_s3_client

    s3 = S3Options(s3_endpoint, "test-access-key", "test-secret-key", "us-east-1")
    bucket = f"cluster-{uuid.uuid4().hex[:8]}"
    make_s3_client(s3).create_bucket(Bucket=bucket)
    names = {role: f"harvest_cluster_{role}_{uuid.uuid4().hex[:8]}" for role in ("meta", "state")}
    urls = {role: _create_database(name) for role, name in names.items()}
    yield {"s3": s3, "bucket": bucket, "metadata_url": urls["meta"], "state_url": urls["state"]}
    for name in names.values():
        _drop_database(name)


@pytest.fixture(scope="module")
def cluster(cluster_env, tmp_path_factory, models_dir):
    s3 = cluster_env["s3"]
    aws = {
        "conn_type": "aws",
        "login": s3.aws_access_key_id,
        "password": s3.aws_secret_access_key,
        "extra": {"endpoint_url": s3.endpoint_url, "region_name": s3.region_name},
    }
    env = {
        "AIRFLOW_CONN_AWS_DEFAULT": json.dumps(aws),
        "AIRFLOW_CONN_HARVEST_DB": cluster_env["state_url"].replace("+psycopg2", ""),
        "HARVEST_ALLOW_PRIVATE_NETWORKS": "1",
        "HARVEST_SHARDS": str(SHARDS),
        "HARVEST_MIN_SHARDS": str(SHARDS),  # the demo site's few candidates would make one shard
        "HARVEST_DOWNLOAD_THREADS": "1",
        "HARVEST_HOME": str(tmp_path_factory.mktemp("cluster-home")),
    }
    workdir = tmp_path_factory.mktemp("cluster")
    broker = f"redis://127.0.0.1:6379/{9 + uuid.uuid4().int % 6}"
    ports = [free_port() for _ in range(3)]
    with celery_cluster(workdir, cluster_env["metadata_url"], broker, ports, workers=2, env=env) as running:
        running.wait_for_dag("image_harvest")
        running.cli("dags", "unpause", "image_harvest")
        yield running


def test_two_workers_share_the_shards_and_match_a_single_process_run(cluster, cluster_env, site, classifier):
    bucket = cluster_env["bucket"]
    conf = {
        "seeds": [f"{site}/index.html"],
        "labels": list(DEMO_LABELS),
        "destination": f"s3://{bucket}/cluster",
    }
    started = time.monotonic()
    run_id = cluster.trigger("image_harvest", conf)
    assert cluster.wait_for_run("image_harvest", run_id) == "success", cluster.logs()
    wall = time.monotonic() - started

    for task_id in ("download_images", "classify_images", "select_keepers", "upload_images"):
        shards = cluster.query(
            "SELECT map_index, hostname, state FROM task_instance "
            "WHERE dag_id = 'image_harvest' AND run_id = :r AND task_id = :t",
            r=run_id,
            t=task_id,
        )
        assert sorted(index for index, _, _ in shards) == list(range(SHARDS)), task_id
        assert {state for _, _, state in shards} == {"success"}, task_id
        per_worker = {host: sum(1 for _, h, _ in shards if h == host) for _, host, _ in shards}
        print(f"\ncluster run {wall:.1f} s; {task_id} shards per worker: {per_worker}")
        if task_id in ("download_images", "classify_images"):
            assert set(per_worker) == {"worker1", "worker2"}, task_id
    # a shard is scored once its own download ends, while other shards still download
    ((first_scored, last_downloaded),) = cluster.query(
        "SELECT (SELECT min(start_date) FROM task_instance WHERE dag_id = 'image_harvest' AND run_id = :r "
        "AND task_id = 'classify_images'), (SELECT max(end_date) FROM task_instance "
        "WHERE dag_id = 'image_harvest' AND run_id = :r AND task_id = 'download_images')",
        r=run_id,
    )
    assert first_scored < last_downloaded
    # the classify shards together scored each downloaded image once
    with session_scope(cluster_env["state_url"]) as session:
        scope, counters = session.execute(
            select(Run.run_id, Run.counters).order_by(Run.started_at.desc()).limit(1)
        ).one()
        images = session.scalar(
            select(func.count(func.distinct(Candidate.sha256))).where(
                Candidate.run_id == scope, Candidate.status == "done"
            )
        )
    assert sum(counters[f"classify[{k}]"]["done"] for k in range(SHARDS)) == images > 0

    objects = bucket_objects(cluster_env["s3"], bucket, "cluster")
    assert any(key.startswith("images/") for key in objects)
    # staging went through the object store, not a worker's disk
    staged = bucket_objects(cluster_env["s3"], bucket, "cluster/_staging")
    assert any(key.startswith("images/") for key in staged)

    single = build_config(
        {**conf, "destination": f"s3://{bucket}/single"}, "manual__single", s3=cluster_env["s3"]
    )
    single = single.with_(database_url=f"sqlite:///{cluster.workdir / 'single.db'}")
    started = time.monotonic()
    run_all(single, classifier)
    print(f"single-process run {time.monotonic() - started:.1f} s")
    reference = bucket_objects(cluster_env["s3"], bucket, "single")
    cluster_manifest = manifest_rows(objects.pop(manifest_key(run_id)))
    single_manifest = manifest_rows(reference.pop("manifests/manual__single.jsonl"))
    assert comparable_across_runs(objects) == comparable_across_runs(reference)
    assert without_run_ids(cluster_manifest) == without_run_ids(single_manifest)


def test_backfill_reclassifies_a_past_date_without_downloading_again(cluster, cluster_env, site):
    bucket = cluster_env["bucket"]
    conf = {
        "seeds": [f"{site}/index.html"],
        "labels": list(DEMO_LABELS),
        "destination": f"s3://{bucket}/daily",
    }
    day = "2026-11-01"

    def backfill(reprocess: str, **overrides) -> tuple[str, dict]:
        done = len(cluster.query("SELECT id FROM backfill WHERE completed_at IS NOT NULL"))
        cluster.cli(
            "backfill",
            "create",
            "--dag-id",
            "image_harvest",
            "--from-date",
            day,
            "--to-date",
            day,
            "--reprocess-behavior",
            reprocess,
            "--dag-run-conf",
            json.dumps({**conf, **overrides}),
        )
        cluster.wait_for(
            "the backfill to complete",
            lambda: len(cluster.query("SELECT id FROM backfill WHERE completed_at IS NOT NULL")) > done,
            timeout=300,
        )
        ((run_id, state, run_conf),) = cluster.query(
            "SELECT dag_run.run_id, dag_run.state, dag_run.conf FROM dag_run "
            "JOIN backfill_dag_run ON backfill_dag_run.dag_run_id = dag_run.id "
            "WHERE backfill_dag_run.backfill_id = (SELECT max(id) FROM backfill)"
        )
        assert state == "success", cluster.logs()
        return run_id, run_conf

    first, _ = backfill("none")
    manifest = manifest_key(first)
    before = bucket_objects(cluster_env["s3"], bucket, "daily")
    assert len(manifest_rows(before[manifest])) == 4

    # re-processing the date re-runs that date's DAG run (same run id) with the backfill's conf
    second, second_conf = backfill("completed", threshold=0.9)
    assert second == first and second_conf["threshold"] == 0.9
    after = bucket_objects(cluster_env["s3"], bucket, "daily")
    assert [row["label"] for row in manifest_rows(after[manifest])] == ["espresso"]

    scope = f"interval__{day}T00:00:00+00:00"
    with session_scope(cluster_env["state_url"]) as session:
        pages = session.scalar(select(func.max(Page.attempts)).where(Page.run_id == scope))
        downloads = session.scalar(select(func.max(Candidate.attempts)).where(Candidate.run_id == scope))
    assert pages == 1 and downloads == 1, "the second run of the date fetched again"
