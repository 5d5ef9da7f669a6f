"""Races: two runs of the DAG at once (same seeds, overlapping seeds) against one state DB and one S3
destination, and two workers on the same download shards and classify stage of one run. No row is
processed twice (claims lock what they take), no object is uploaded twice, no manifest loses a row.

The racers are two worker processes; the site server counts requests per User-Agent (each run has
its own) and the S3 proxy counts the uploads S3 accepted per key.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import replace

import pytest
from flaky_proxy import flaky_s3_proxy
from helpers import DEFAULT_EXPORT_KEYS, without_run_ids
from sqlalchemy import func, select

from harvest.pipeline import collect_candidates, prepare_run, run_all
from harvest.settings.config import S3Options
from harvest.stages.crawl import run_crawl
from harvest.stages.publish import run_publish
from harvest.state.db import session_scope
from harvest.state.models import Candidate, Image, Prediction

from .harvest_runs import (
    EndState,
    demo_config,
    demo_params,
    differences,
    end_state,
    harvest_env,
    is_image,
    manifest_of,
    new_bucket,
    published_objects,
    scratch_database,
    state_counts,
    via,
)
from .racing import Job, racers

SEEDS = ("index.html",)
#: two runs whose pages overlap (the gallery) but are not the same: each crawls only its seeds
SEEDS_A = ("index.html", "gallery.html")
SEEDS_B = ("gallery.html", "blog/coffee.html")
#: the tables whose rows are shared by runs (content-addressed): a second run must not add to them
SHARED = ("images", "image_urls", "predictions/scored", "predictions/failed")


@pytest.fixture(scope="module")
def workers(models_dir):
    with racers(models_dir) as pair:
        yield pair


@pytest.fixture(scope="module")
def solo(demo, workers, s3_direct, classifier, tmp_path_factory) -> Callable[..., EndState]:
    """What a run of some seeds publishes and records when it runs alone (computed once per seeds)."""
    done: dict[tuple, EndState] = {}
    with ExitStack() as stack:

        def reference(seeds: tuple[str, ...], **params) -> EndState:
            key = (seeds, tuple(sorted(params.items())))
            if key not in done:
                database_url = stack.enter_context(scratch_database())
                destination = f"s3://{new_bucket(s3_direct)}/shared"
                home = tmp_path_factory.mktemp("solo")
                cfg = demo_config(
                    demo.base, "manual__solo", database_url, destination, s3_direct, home, seeds, **params
                )
                run_all(cfg, classifier)
                done[key] = end_state(cfg)
            return done[key]

        yield reference


def job(
    demo, run_id: str, seeds, database_url: str, s3: S3Options, destination: str, agent: str, home, **params
) -> Job:
    """One racer's run of the demo site from ``seeds``, known to the site by its own User-Agent."""
    return Job(
        params=demo_params(demo.base, destination, seeds, **params),
        run_id=run_id,
        database_url=database_url,
        s3=s3,
        env=harvest_env(home, HARVEST_USER_AGENT=agent),
    )


def processed(reports: list[dict], stage: str) -> int:
    """Rows a stage went through, summed over its reports in both racers."""
    return sum(r["done"] + r["failed"] + r["skipped"] for racer in reports for r in racer[stage])


def shared_counts(counts: dict[str, int]) -> dict[str, int]:
    return {key: counts.get(key, 0) for key in SHARED}


def content_addressed(objects: dict, prefix: str = "") -> dict:
    """``objects`` without the dataset-wide Parquet manifest and card: views of the whole destination
    that every publish rewrites, unlike the objects that are written once."""
    return {
        key: value for key, value in objects.items() if key.removeprefix(prefix) not in DEFAULT_EXPORT_KEYS
    }


def _racing(rows: list[dict] | None) -> list[dict]:
    """Manifest rows as two runs racing for one destination must agree on them: without the run id
    each row names, the class index (``classes.json`` numbers labels in the order they first reached
    the destination, which a race decides) and ``urls_seen`` (the URLs the whole state DB has seen
    serve the image, which the other run adds to)."""
    volatile = {"label_index", "urls_seen"}
    return [{k: v for k, v in row.items() if k not in volatile} for row in without_run_ids(rows or [])]


def run_counts(counts: dict[str, int]) -> dict[str, int]:
    return {key: n for key, n in counts.items() if key.startswith(("pages/", "candidates/"))}


def test_two_runs_of_the_same_seeds_at_once(demo, workers, solo, postgres_url, s3_direct, tmp_path):
    bucket = new_bucket(s3_direct)
    destination = f"s3://{bucket}/shared"
    agents = {"manual__a": "harvester-same-a/1.0", "manual__b": "harvester-same-b/1.0"}
    with flaky_s3_proxy(s3_direct.endpoint_url) as (endpoint, s3_log):
        jobs = [
            job(demo, run_id, SEEDS, postgres_url, via(endpoint, s3_direct), destination, agent, tmp_path)
            for run_id, agent in agents.items()
        ]
        reports = workers.race(*jobs)

    clean = solo(SEEDS)
    assert processed(reports, "classify") == clean.counts["predictions/scored"], "an image scored twice"
    for run_id, agent in agents.items():
        fetched = demo.fetches(agent)
        assert fetched and set(fetched.values()) == {1}, f"{run_id} fetched some URLs twice: {fetched}"
        cfg = demo_config(demo.base, run_id, postgres_url, destination, s3_direct, tmp_path, SEEDS)
        assert _racing(manifest_of(cfg)) == _racing(clean.manifest), (
            f"the manifest of {run_id} differs from a run alone"
        )
        counts = state_counts(postgres_url, run_id)
        assert run_counts(counts) == run_counts(clean.counts)
        assert shared_counts(counts) == shared_counts(clean.counts), "content-addressed rows doubled"
        assert counts["publications/active"] == clean.counts["publications/active"]
    # the dataset-wide views (Parquet, metadata.jsonl, card, classes.json) name each run and the order
    # labels first reached the destination: compared through the manifests above
    assert content_addressed(published_objects(cfg)) == content_addressed(clean.objects)
    uploads = content_addressed(s3_log.stored("shared/"), "shared/")
    assert uploads and set(uploads.values()) == {1}, f"uploaded more than once: {uploads}"


def test_two_runs_of_overlapping_seeds_at_once(demo, workers, solo, postgres_url, s3_direct, tmp_path):
    bucket = new_bucket(s3_direct)
    destination = f"s3://{bucket}/shared"
    runs = {
        "manual__a": (SEEDS_A, "harvester-overlap-a/1.0"),
        "manual__b": (SEEDS_B, "harvester-overlap-b/1.0"),
    }
    with flaky_s3_proxy(s3_direct.endpoint_url) as (endpoint, s3_log):
        jobs = [
            job(
                demo,
                run_id,
                seeds,
                postgres_url,
                via(endpoint, s3_direct),
                destination,
                agent,
                tmp_path,
                max_depth=0,
            )
            for run_id, (seeds, agent) in runs.items()
        ]
        workers.race(*jobs)

    union: dict[str, bytes] = {}
    for run_id, (seeds, agent) in runs.items():
        alone = solo(seeds, max_depth=0)
        union |= alone.objects
        fetched = demo.fetches(agent)
        assert fetched and set(fetched.values()) == {1}, f"{run_id} fetched some URLs twice: {fetched}"
        cfg = demo_config(
            demo.base, run_id, postgres_url, destination, s3_direct, tmp_path, seeds, max_depth=0
        )
        assert _racing(manifest_of(cfg)) == _racing(alone.manifest), (
            f"the manifest of {run_id} differs from a run alone"
        )
        assert run_counts(state_counts(postgres_url, run_id)) == run_counts(alone.counts)
    assert solo(SEEDS_A, max_depth=0).objects.keys() != solo(SEEDS_B, max_depth=0).objects.keys()
    assert content_addressed(published_objects(cfg)) == content_addressed(union)
    uploads = content_addressed(s3_log.stored("shared/"), "shared/")
    assert uploads and set(uploads.values()) == {1}, f"uploaded more than once: {uploads}"


def test_two_workers_on_the_same_shards_and_classify(demo, workers, solo, postgres_url, s3_direct, tmp_path):
    """Both workers run every download shard and then classify, for one run: the rows each takes
    are locked from the other, so every image is fetched, stored and scored exactly once."""
    bucket = new_bucket(s3_direct)
    destination = f"s3://{bucket}/shared"
    agent = "harvester-shards/1.0"
    run_id = "manual__shards"
    with flaky_s3_proxy(s3_direct.endpoint_url) as (endpoint, s3_log):
        proxied = via(endpoint, s3_direct)
        cfg = demo_config(
            demo.base,
            run_id,
            postgres_url,
            destination,
            proxied,
            tmp_path,
            SEEDS,
            {"HARVEST_USER_AGENT": agent},
        )
        prepare_run(cfg)
        run_crawl(cfg)
        collect_candidates(cfg)
        racer = job(demo, run_id, SEEDS, postgres_url, proxied, destination, agent, tmp_path)
        racer.stages = ("download", "classify")
        reports = workers.race(racer, replace(racer))
        run_publish(cfg)

    images = {path: n for path, n in demo.fetches(agent).items() if is_image(path)}
    assert images and set(images.values()) == {1}, f"images fetched more than once: {images}"
    with session_scope(postgres_url) as session:
        attempts = session.execute(
            select(Candidate.url, Candidate.attempts).where(
                Candidate.run_id == run_id, Candidate.attempts > 0
            )
        ).all()
        scored = session.scalar(select(func.count()).select_from(Prediction))
        downloaded = session.scalar(select(func.count()).select_from(Image))
    assert attempts and {n for _, n in attempts} == {1}, f"candidates processed twice: {attempts}"
    assert processed(reports, "download") == len(attempts)
    assert processed(reports, "classify") == scored
    assert scored == downloaded
    assert differences(end_state(cfg, s3_direct), solo(SEEDS)) == []
    uploads = content_addressed(s3_log.stored("shared/"), "shared/")
    assert uploads and set(uploads.values()) == {1}, f"uploaded more than once: {uploads}"
