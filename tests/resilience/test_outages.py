"""Dependency outages: Postgres restarted mid-stage, the S3 server failing (500, 503 SlowDown, dropped
connections) for a while, the crawled site timing out. Each stage either waits and goes on or fails
with an error that names what failed; a re-run finishes the work, and the end state equals a clean run.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import threading
import time
import traceback
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from flaky_proxy import flaky_s3_proxy
from helpers import is_image_key
from sqlalchemy.exc import OperationalError

from harvest.pipeline import collect_candidates, prepare_run, run_all
from harvest.settings.config import S3Options
from harvest.stages.classify import run_classify
from harvest.stages.crawl import run_crawl
from harvest.stages.download import run_download
from harvest.stages.publish import run_publish
from harvest.storage import StorageError

from .harvest_runs import (
    ADMIN_URL,
    EndState,
    candidate_states,
    demo_config,
    differences,
    end_state,
    is_image,
    manifest_of,
    new_bucket,
    page_states,
    scratch_database,
    stage_runners,
    via,
)

RUN_ID = "manual__outage"


@pytest.fixture(scope="module")
def clean(demo, s3_direct, classifier, tmp_path_factory) -> EndState:
    """The uninterrupted run every scenario must end up equal to."""
    bucket = new_bucket(s3_direct)
    with scratch_database() as database_url:
        cfg = demo_config(
            demo.base,
            RUN_ID,
            database_url,
            f"s3://{bucket}/dataset",
            s3_direct,
            tmp_path_factory.mktemp("clean"),
        )
        run_all(cfg, classifier)
        return end_state(cfg)


@contextmanager
def run_through_flaky_s3(demo, database_url: str, s3: S3Options, workdir) -> Iterator[tuple]:
    """(config, bucket, outage switch) of a demo run in a new bucket whose S3 requests go through
    the flaky proxy."""
    bucket = new_bucket(s3)
    with flaky_s3_proxy(s3.endpoint_url) as (endpoint, outage):
        cfg = demo_config(
            demo.base, RUN_ID, database_url, f"s3://{bucket}/dataset", via(endpoint, s3), workdir
        )
        yield cfg, bucket, outage


@pytest.mark.parametrize("fault", ["internal", "slowdown", "drop", "drop_mid_body"])
def test_short_s3_blips_are_ridden_out(fault, demo, clean, postgres_url, s3_direct, classifier, tmp_path):
    """Two failed requests at the start of every stage: the client's retries absorb them."""
    with run_through_flaky_s3(demo, postgres_url, s3_direct, tmp_path) as (cfg, _, outage):
        prepare_run(cfg)
        stages = stage_runners(cfg, classifier)
        for name, stage in stages.items():
            outage.start(fault, requests=2)
            stage()
            assert not outage.active, f"{name} made fewer than two S3 requests"

    assert outage.injected() == {fault: 2 * len(stages)}
    assert differences(end_state(cfg, s3_direct), clean) == []
    uploads = outage.stored("dataset/")
    assert uploads and set(uploads.values()) == {1}, f"uploaded more than once: {uploads}"


def test_long_s3_outage_fails_publish_clearly_then_rerun_completes(
    demo, clean, postgres_url, s3_direct, classifier, tmp_path
):
    with run_through_flaky_s3(demo, postgres_url, s3_direct, tmp_path) as (cfg, bucket, outage):
        prepare_run(cfg)
        run_crawl(cfg)
        collect_candidates(cfg)
        for shard in range(cfg.num_shards):
            run_download(cfg, shard)
        run_classify(cfg, classifier)

        outage.start("slowdown", methods={"PUT"}, after=2)  # two uploads get through, then S3 sheds load
        with pytest.raises(StorageError) as failure:
            run_publish(cfg)
        assert failure.value.location.startswith(f"s3://{bucket}/dataset/images/")
        assert "SlowDown" in failure.value.reason and failure.value.transient
        assert manifest_of(cfg, s3_direct) is None

        outage.heal()
        run_publish(cfg)

    assert differences(end_state(cfg, s3_direct), clean) == []
    images = outage.stored("dataset/images/")
    assert images.keys() == {f"dataset/{key}" for key in clean.objects if key.startswith("images/")}
    assert set(images.values()) == {1}, f"uploaded more than once: {images}"
    assert_manifests_only_name_stored_objects(outage.log, "dataset/")


def assert_manifests_only_name_stored_objects(log, prefix: str) -> None:
    """Every manifest, at the moment it was written, named only objects already uploaded."""
    import json

    stored: set[str] = set()
    for exchange in log:
        if exchange.stored and exchange.body is not None:
            rows = [json.loads(line) for line in exchange.body.decode().splitlines() if line.strip()]
            missing = {prefix + row["key"] for row in rows} - stored
            assert not missing, f"{exchange.key} named objects not uploaded yet: {sorted(missing)}"
        if exchange.stored:
            stored.add(exchange.key)


@pytest.mark.parametrize(("stage", "staged"), [("extract", "pages/"), ("classify", "images/")])
def test_s3_outage_while_reading_staged_bytes_fails_the_stage_then_rerun_completes(
    stage, staged, demo, clean, postgres_url, s3_direct, classifier, tmp_path
):
    """Staged pages or images cannot be read: that is the store's failure, not a broken page or an
    undecodable image, so the stage stops with the key and the reason, and a re-run reads them."""
    with run_through_flaky_s3(demo, postgres_url, s3_direct, tmp_path) as (cfg, bucket, outage):
        prepare_run(cfg)
        stages = stage_runners(cfg, classifier)
        for name, run in stages.items():
            if name == stage:
                outage.start("internal", methods={"GET"}, seconds=600)  # outlasts every retry
                with pytest.raises(StorageError) as failure:
                    run()
                assert failure.value.location.startswith(f"s3://{bucket}/dataset/_staging/{staged}")
                assert "InternalError" in failure.value.reason and failure.value.transient
                outage.heal()  # S3 is back
            run()

    assert differences(end_state(cfg, s3_direct), clean) == []


def test_site_timing_out_is_recorded_and_a_rerun_completes(
    demo, clean, postgres_url, s3_direct, classifier, tmp_path
):
    """The gallery page and every image hang past the read timeout: each is recorded as failed with
    its URL and the reason, the run goes on; once the site answers again a re-run completes."""
    bucket = new_bucket(s3_direct)
    cfg = demo_config(demo.base, RUN_ID, postgres_url, f"s3://{bucket}/dataset", s3_direct, tmp_path)
    cfg = cfg.with_(connect_timeout=1.0, read_timeout=0.5, total_timeout=3.0)

    demo.stall.start(2.0, lambda path: path == "/gallery.html" or is_image(path))
    try:
        run_all(cfg, classifier)
    finally:
        demo.stall.stop()
    pages = page_states(postgres_url, RUN_ID)
    gallery = f"{demo.base}/gallery.html"
    assert pages[gallery][0] == "failed" and pages[gallery][1] == f"{gallery}: timed out"
    candidates = candidate_states(postgres_url, RUN_ID)
    assert not any(status == "done" for status, _ in candidates.values())
    failed = {url: error for url, (status, error) in candidates.items() if status == "failed"}
    # timed out reading, or past the request's total deadline while queued for the host's slots
    timeouts = ("timed out", "exceeded total deadline")
    assert failed and all(url in error and any(t in error for t in timeouts) for url, error in failed.items())

    run_all(cfg, classifier)  # the site answers again: the re-run retries what timed out
    assert differences(end_state(cfg), clean) == []


def _cluster() -> str | None:
    """This machine's Postgres cluster version, if the tests may restart it (root, pg_ctlcluster)."""
    if os.geteuid() != 0 or shutil.which("pg_ctlcluster") is None or not os.path.isdir("/etc/postgresql"):
        return None
    if "@127.0.0.1" not in ADMIN_URL and "@localhost" not in ADMIN_URL:
        return None
    versions = sorted(os.listdir("/etc/postgresql"))
    return versions[0] if versions else None


def postgres_ready(timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if subprocess.run(["pg_isready", "-q", "-h", "127.0.0.1", "-p", "5432"]).returncode == 0:
            return True
        time.sleep(0.2)
    return False


@contextmanager
def postgres_restarting(version: str):
    """Restart this machine's Postgres (every connection is cut) and, whatever happens, leave it up."""
    try:
        yield lambda: subprocess.run(
            ["pg_ctlcluster", "--skip-systemctl-redirect", version, "main", "restart"],
            check=True,
            capture_output=True,
            timeout=120,
        )
    finally:
        if not postgres_ready(60):
            subprocess.run(
                ["pg_ctlcluster", "--skip-systemctl-redirect", version, "main", "start"], timeout=120
            )
            assert postgres_ready(60), "Postgres did not come back after the restart"


def test_postgres_restart_mid_download_then_rerun_completes(
    demo, clean, postgres_url, s3_direct, classifier, tmp_path
):
    """Postgres restarts while the download holds claimed rows: the stage fails with the database's
    own error (or finishes), the same process re-runs it, and the end state equals a clean run."""
    version = _cluster()
    if version is None:
        pytest.skip("restarting Postgres needs root, pg_ctlcluster and the local cluster")
    bucket = new_bucket(s3_direct)
    agent = "harvester-restart/1.0"
    cfg = demo_config(
        demo.base,
        RUN_ID,
        postgres_url,
        f"s3://{bucket}/dataset",
        s3_direct,
        tmp_path,
        env={"HARVEST_USER_AGENT": agent},
    )
    prepare_run(cfg)
    run_crawl(cfg)
    collect_candidates(cfg)

    outcome: dict[str, BaseException] = {}

    def download() -> None:
        try:
            for shard in range(cfg.num_shards):
                run_download(cfg, shard)
        except Exception as exc:  # noqa: BLE001 - the test judges it
            outcome["error"] = exc

    demo.stall.start(0.3, is_image)  # slow images: the download takes a few seconds
    worker = threading.Thread(target=download)
    try:
        with postgres_restarting(version) as restart:
            worker.start()
            deadline = time.monotonic() + 30
            while not any(is_image(path) for path in demo.fetches(agent)) and time.monotonic() < deadline:
                time.sleep(0.02)
            assert worker.is_alive(), "the download ended before Postgres could be restarted"
            restart()
        worker.join(timeout=120)
    finally:
        demo.stall.stop()
    assert not worker.is_alive()
    error = outcome.get("error")
    if error is not None:  # the database's own words, and which database
        assert isinstance(error, OperationalError), error
        message = "".join(traceback.format_exception_only(error))
        assert re.search(r"server closed the connection|terminating connection|Connection refused", message)
        assert f"while using the state DB {postgres_url}" in message

    for shard in range(cfg.num_shards):  # the re-run, in the process that saw the restart
        run_download(cfg, shard)
    run_classify(cfg, classifier)
    run_publish(cfg)
    assert differences(end_state(cfg), clean) == []


def test_a_failed_reprocess_leaves_the_earlier_manifest_and_images(
    demo, postgres_url, s3_direct, classifier, tmp_path
):
    """A date reprocessed with a stricter threshold, its publish failing on an S3 outage: the date's
    manifest and images stay as the successful run left them until a complete new manifest replaces
    them; the healed re-run then writes the manifest of what the stricter threshold keeps."""
    with run_through_flaky_s3(demo, postgres_url, s3_direct, tmp_path) as (cfg, bucket, outage):
        run_all(cfg, classifier)
        before = manifest_of(cfg, s3_direct)
        images_before = {k for k in outage_keys(s3_direct, bucket, "dataset/images/") if _is_image(k)}
        assert before and len(images_before) == len(before)

        strict = cfg.with_(threshold=0.9)  # the reprocess's settings: the same date, one key changed
        prepare_run(strict)
        outage.start("slowdown", methods={"PUT"})
        with pytest.raises(StorageError):
            run_publish(strict)
        assert manifest_of(cfg, s3_direct) == before
        assert {k for k in outage_keys(s3_direct, bucket, "dataset/images/") if _is_image(k)} == images_before

        outage.heal()
        run_publish(strict)
    after = manifest_of(cfg, s3_direct)
    assert after is not None and 0 < len(after) < len(before)
    # images are shared by every run of the destination: a stricter threshold drops them from this
    # date's manifest, it does not delete them
    assert {f"dataset/{row['key']}" for row in after} < images_before


def _is_image(key: str) -> bool:
    return is_image_key(key.removeprefix("dataset/"))


def outage_keys(s3: S3Options, bucket: str, prefix: str) -> list[str]:
    from harvest.storage import make_s3_client

    pages = make_s3_client(s3).get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    return [item["Key"] for page in pages for item in page.get("Contents", [])]
