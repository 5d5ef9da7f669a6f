"""Crash anywhere: each stage is SIGKILLed at random points while it works, then run again, as Airflow's
retry would; the run must end exactly where an uninterrupted run ends.

The site (tests/resilience/crash_site.py) gives every stage seconds of work. A clean run of the same
run id, in its own Postgres database and bucket, is the reference; the state before each of its stages
is kept, so a scenario starts from there, runs the stage as ``python -m harvest.cli stage ...`` and
kills it at the chosen points (requests served, rows committed, or seconds), runs it once more to the
end, runs the remaining stages, and compares: every state DB row (ids and clocks aside), every bucket
object with its bytes, the manifest, and the staging area (no temporary or orphaned file).

Kill points come from a seeded generator; the seed is printed. Repeat a run with HARVEST_CRASH_SEED=<seed>.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import shutil
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from conftest import _create_database, _drop_database
from helpers import DEFAULT_EXPORT_KEYS, bucket_objects, manifest_rows

from harvest.cli import run_stage
from harvest.demo_site import DEMO_LABELS
from harvest.settings.config import S3Options, build_config
from harvest.stages.publish import manifest_key
from harvest.state.db import session_scope
from harvest.storage import make_s3_client

from .crash_harness import COMMITTED, StageProcess, comparable, differences, restore, snapshot, staged_files
from .crash_site import crash_site

RUN_ID = "manual__crash-anywhere"
STAGES = ("prepare", "crawl", "extract", "download", "classify", "publish")
SHARDS = 2
BATCH = 8
KILLS = 3
SEED = int(os.environ.get("HARVEST_CRASH_SEED") or random.SystemRandom().randrange(1_000_000))


@dataclass
class World:
    """The site, the S3 server and the settings both the clean and the interrupted runs use."""

    site: object
    switch: object
    s3: S3Options
    staging: Path
    env: dict[str, str]

    def params(self, bucket: str) -> dict:
        return {
            "seeds": [f"{self.site.base}/index.html"],
            "labels": list(DEMO_LABELS),
            "destination": f"s3://{bucket}/dataset",
        }

    def config(self, bucket: str, database_url: str):
        return build_config(
            self.params(bucket), RUN_ID, env={**os.environ, **self.env}, database_url=database_url
        )

    def stage_process(self, bucket: str, database_url: str, logs: Path) -> StageProcess:
        args = [
            "--run-id",
            RUN_ID,
            "--database-url",
            database_url,
            "--params",
            json.dumps(self.params(bucket)),
        ]
        return StageProcess(args, {**os.environ, **self.env}, database_url, logs, self.switch)


@dataclass
class Clean:
    """The uninterrupted run: the state before each stage, the work each stage did, and the result."""

    before: dict[str, tuple[dict, Path]] = field(default_factory=dict)
    work: dict[str, list[float]] = field(default_factory=dict)
    rows: dict = field(default_factory=dict)
    staged: dict[str, str] = field(default_factory=dict)
    objects: dict[str, bytes] = field(default_factory=dict)


@pytest.fixture(scope="module")
def world(tmp_path_factory, s3_endpoint, site_root):
    s3 = S3Options(s3_endpoint, "test-access-key", "test-secret-key", "us-east-1")
    home = tmp_path_factory.mktemp("crash")
    staging = home / "staging"
    env = {
        "HARVEST_HOME": str(home / "harvest-home"),
        "HARVEST_LOCAL_ROOTS": str(home),
        "HARVEST_ALLOW_PRIVATE_NETWORKS": "1",
        "HARVEST_HOST_DELAY": "0.01",
        "HARVEST_STAGING": str(staging),
        "HARVEST_SHARDS": str(SHARDS),
        "HARVEST_MIN_SHARDS": str(SHARDS),
        "HARVEST_BATCH_SIZE": str(BATCH),
        "AWS_ACCESS_KEY_ID": s3.aws_access_key_id,
        "AWS_SECRET_ACCESS_KEY": s3.aws_secret_access_key,
        "AWS_DEFAULT_REGION": s3.region_name,
        "AWS_ENDPOINT_URL": s3.endpoint_url,
    }
    with crash_site(site_root) as (site, switch):
        yield World(site, switch, s3, staging, env)


@pytest.fixture(scope="module")
def clean(world, classifier, tmp_path_factory):
    """The reference run, in a database and a bucket of its own (same run id, same staging path)."""
    name = f"harvest_test_{uuid.uuid4().hex[:12]}"
    database_url = _create_database(name)
    bucket = f"harvest-{uuid.uuid4().hex[:10]}"
    make_s3_client(world.s3).create_bucket(Bucket=bucket)
    keep = tmp_path_factory.mktemp("clean")
    shutil.rmtree(world.staging, ignore_errors=True)
    world.staging.mkdir()
    result = Clean()

    def before(stage: str) -> None:
        copy = keep / f"before-{stage}"
        shutil.copytree(world.staging, copy)
        result.before[stage] = (snapshot(database_url) if stage != "prepare" else None, copy)

    before("prepare")
    prepared = world.stage_process(bucket, database_url, keep).run("prepare")
    assert prepared.returncode == 0, prepared.log.read_text()
    result.work["prepare"] = [float(re.search(r"finished in ([0-9.]+) s", prepared.log.read_text())[1])]
    cfg = world.config(bucket, database_url)
    for stage in STAGES[1:]:
        before(stage)
        if stage == "download":  # the requests of each shard: every shard is a task of its own
            result.work[stage] = [_requests(world, cfg, stage, shard)["image"] for shard in range(SHARDS)]
            continue
        served = _requests(world, cfg, stage, classifier=classifier)
        result.work[stage] = (
            [served.get("page", 0)] if stage == "crawl" else [_committed(database_url, stage)]
        )
    result.rows = snapshot(database_url)
    result.staged = staged_files(world.staging)
    result.objects = bucket_objects(world.s3, bucket, "dataset")
    yield result
    _drop_database(name)


@pytest.mark.parametrize("stage", STAGES)
def test_sigkill_at_random_points_then_rerun_ends_like_a_clean_run(
    stage, world, clean, classifier, postgres_url, bucket, tmp_path, capsys
):
    plan = kill_plan(stage, clean, random.Random(f"{SEED}:{stage}"))
    _report(
        capsys,
        f"crash seed {SEED} (repeat with HARVEST_CRASH_SEED={SEED}); {stage}: kill at {describe(plan)}",
    )
    state, staged = clean.before[stage]
    if state is not None:
        restore(state, postgres_url)
    shutil.rmtree(world.staging)
    shutil.copytree(staged, world.staging)
    process = world.stage_process(bucket, postgres_url, tmp_path)

    # the fault: SIGKILL at each point, then one more run that is left to finish (Airflow's retry)
    left_partial = 0  # temp files the kills left in the staging area, for the retry to clean up
    for extra, kills in plan:
        for kill in kills:
            attempt = process.run(stage, extra, kill)
            left_partial += sum(Path(name).name.startswith(".tmp-") for name in staged_files(world.staging))
            # prepare's later attempts may have less to do than its clean run timed; the others never
            assert attempt.killed or stage == "prepare", (
                f"{stage} {extra} was not killed at {kill}:\n{attempt.log.read_text()[-3000:]}"
            )
        retry = process.run(stage, extra)
        assert retry.returncode == 0, f"{stage} {extra} retry failed:\n{retry.log.read_text()[-5000:]}"
    cfg = world.config(bucket, postgres_url)
    for later in STAGES[STAGES.index(stage) + 1 :]:
        run_stage(cfg, later, classifier=classifier)

    # the result equals the clean run's: state rows, bucket objects, manifest, staging area
    rows = snapshot(postgres_url)
    found = differences(comparable(clean.rows), comparable(rows))
    objects = bucket_objects(world.s3, bucket, "dataset")
    manifest = manifest_rows(objects[manifest_key(RUN_ID)])
    staged = staged_files(world.staging)
    lost = sum(len(d["lost"]) for d in found.values()) + len(clean.objects.keys() - objects.keys())
    doubled = sum(len(d["extra"]) for d in found.values()) + len(objects.keys() - clean.objects.keys())
    checked = sum(len(r) for r in rows.values()) + len(objects) + len(staged)
    kills = sum(a.killed for a in process.attempts)
    _report(
        capsys,
        f"| crash anywhere: {stage} | {kills} SIGKILLs at {describe(plan)} ({left_partial} partial files "
        f"left) | {checked} | {lost} | {doubled} |",
    )

    assert kills, "no attempt was killed"
    assert not found, f"state DB differs from the clean run: {json.dumps(found, default=str)[:4000]}"
    assert objects == clean.objects
    assert manifest == manifest_rows(clean.objects[manifest_key(RUN_ID)])
    listed = {manifest_key(RUN_ID)} | {row["key"] for row in manifest} | DEFAULT_EXPORT_KEYS
    assert set(objects) == listed, "objects in the bucket that the manifest does not list (partial or stray)"
    for row in manifest:
        assert hashlib.sha256(objects[row["key"]]).hexdigest() == row["sha256"] == Path(row["key"]).stem
    assert not [name for name in staged if Path(name).name.startswith(".tmp-")], "temporary files left staged"
    assert set(staged) == _referenced(rows), "staged files that no row refers to (orphans), or missing"
    assert staged == clean.staged


def kill_plan(
    stage: str, clean: Clean, rng: random.Random
) -> list[tuple[list[str], list[tuple[str, float]]]]:
    """(extra CLI arguments, kill points) per process to crash: each shard of the download stage.

    Requests are counted per attempt (an attempt repeats the work its predecessor left unfinished), so
    points drawn over the clean run's requests become the distances between them; rows are counted in
    the database, in all; prepare is killed a random share of its clean duration after its work starts.
    """
    if stage == "prepare":
        [seconds] = clean.work[stage]
        return [([], [("seconds", round(rng.uniform(0.05, 0.7) * seconds, 3)) for _ in range(KILLS)])]
    if stage in ("crawl", "download"):
        kind = "page request" if stage == "crawl" else "image request"
        totals = clean.work[stage]
        points = sorted(
            rng.sample([(s, n) for s, total in enumerate(totals) for n in range(1, total)], KILLS)
        )
        plans = []
        for shard in range(len(totals)):
            mine = [n for s, n in points if s == shard]
            steps = [b - a for a, b in zip([0, *mine], mine, strict=False)]
            plans.append(([f"--shard={shard}"] if stage == "download" else [], [(kind, n) for n in steps]))
        return plans
    [total] = clean.work[stage]
    margin = 2 * BATCH if stage == "classify" else 2  # room for the last kill before the stage ends
    kills = KILLS - 1 if stage == "classify" else KILLS  # each classify attempt loads TensorFlow again
    return [([], [("rows", n) for n in sorted(rng.sample(range(1, total - margin), kills))])]


def describe(plan: list[tuple[list[str], list[tuple[str, float]]]]) -> str:
    """ "--shard=0: image request 12, then 30 | --shard=1: none" and the like."""
    parts = []
    for extra, kills in plan:
        points = ", then ".join(f"{n:g}" for _, n in kills) or "none"
        kind = f"{kills[0][0]} " if kills else ""
        parts.append(f"{' '.join(extra) + ': ' if extra else ''}{kind}{points}")
    return " | ".join(parts)


def _requests(world: World, cfg, stage: str, shard: int | None = None, classifier=None) -> dict[str, int]:
    """Run a stage of the clean run in this process, counting the requests the site served it."""
    world.switch.count()
    try:
        run_stage(cfg, stage, shard, classifier)
    finally:
        served = world.switch.disarm()
    return served


def _committed(database_url: str, stage: str) -> int:
    if stage not in COMMITTED:
        return 0
    with session_scope(database_url) as session:
        return session.execute(COMMITTED[stage]).scalar_one()


def _referenced(rows: dict[str, list[dict]]) -> set[str]:
    keys = {page["content_key"] for page in rows["pages"] if page["content_key"]}
    for image in rows["images"]:
        keys |= {image["storage_key"], *([image["clean_key"]] if image["clean_key"] else [])}
    return keys


def _report(capsys, line: str) -> None:
    """Shown in the pytest output even when the test passes (the seed and kill points matter then too)."""
    with capsys.disabled():
        print(f"\n{line}", flush=True)
