"""Work spread over workers: shards sized by the run, classify shards scored once each image by
whichever worker claims it, and a publish split into per-shard steps equal to a single one.

Real Postgres (row locks are what keep two workers apart), the real classifier, real photos."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
from helpers import manifest_rows, without_run_ids
from PIL import ImageOps
from sqlalchemy import func, select
from staged import jpeg, sample_photos, stage, staged_config

from harvest.pipeline import record_report
from harvest.stages.classify import run_classify
from harvest.stages.publish import (
    curate_keepers,
    finish_publish,
    manifest_key,
    run_publish,
    select_keepers,
    upload_keepers,
)
from harvest.state.db import insert_ignore, migrate, session_scope
from harvest.state.models import Candidate, Prediction, Run, Status
from harvest.state.shards import BUCKETS, buckets, plan_shards, run_shards, shard_count


class CountingClassifier:
    """The real classifier, counting the images each worker hands it. Inference is serialised (one
    model object shared by two threads); the claims, queries and writes of the workers are not."""

    def __init__(self, classifier, fail_after: int | None = None, hold: threading.Event | None = None):
        self._classifier = classifier
        self._lock = threading.Lock()
        self.scored = 0
        self.fail_after = fail_after
        #: set when the worker has its first batch in hand; it then waits for ``hold`` to be set
        self.entered = threading.Event()
        self.hold = hold

    def __getattr__(self, name):
        return getattr(self._classifier, name)

    def predict(self, batch):
        self.entered.set()
        if self.hold is not None:
            self.hold.wait(timeout=300)
        with self._lock:
            if self.fail_after is not None and self.scored >= self.fail_after:
                raise RuntimeError("worker lost mid-run")
            self.scored += len(batch)
            return self._classifier.predict(batch)


def _photos(count: int) -> dict[str, bytes]:
    """``count`` distinct real photos: the sample photos, cropped and mirrored in turn."""
    photos = sample_photos()
    files: dict[str, bytes] = {}
    n = 0
    while len(files) < count:
        for name, photo in photos.items():
            width, height = photo.size
            cut = 1 + n % 9
            variant = photo.crop((cut * 4, cut * 3, width - cut * 2, height - cut * 5))
            if n % 2:
                variant = ImageOps.mirror(variant)
            files[f"{name}-{n}"] = jpeg(variant.resize((240, 180)))
            if len(files) == count:
                break
        n += 1
    return files


def _run_with(postgres_url, tmp_path, count: int, shared: int = 0):
    """A run of ``count`` downloaded photos in buckets 0..count-1, ``shared`` of them also found by a
    second URL in a bucket of the other shard (of two), so both shards' tasks may claim them."""
    cfg = staged_config(postgres_url, tmp_path, ["tabby", "espresso"], threshold=0.05).with_(batch_size=4)
    shas = stage(cfg, _photos(count))
    extra = [
        {
            "run_id": cfg.run_id,
            "url": f"http://mirror.example/{index}.jpg",
            "page_url": "http://mirror.example/",
            "source": "img",
            "shard": (index + 1) % 2,
            "status": Status.DONE,
            "sha256": sha,
            "attempts": 1,
        }
        for index, sha in enumerate(list(shas.values())[:shared])
    ]
    with session_scope(cfg.database_url) as session:
        insert_ignore(session, Candidate, extra, ["run_id", "url"])
    return cfg, shas


def _scored(cfg) -> int:
    with session_scope(cfg.database_url) as session:
        return session.scalar(select(func.count()).select_from(Prediction))


def test_shard_count_follows_the_candidate_count():
    assert shard_count(10, 1000, 1, 32) == 1
    assert shard_count(0, 1000, 1, 32) == 1
    assert shard_count(1000, 1000, 1, 32) == 1
    assert shard_count(1001, 1000, 1, 32) == 2
    assert shard_count(25_000, 1000, 1, 32) == 25
    assert shard_count(1_000_000, 1000, 1, 32) == 32  # the cap
    assert shard_count(10, 1000, 4, 32) == 4  # the floor
    # every bucket is in exactly one shard, whatever the count
    for shards in (1, 2, 3, 7, 32, 256):
        split = [buckets(k, shards) for k in range(shards)]
        assert sorted(b for part in split for b in part) == list(range(BUCKETS))
    assert buckets(5, 3) == []


def test_a_run_records_as_many_shards_as_its_candidates_call_for(postgres_url, tmp_path):
    migrate(postgres_url)
    for count, expected in ((10, 1), (2_500, 3), (40_000, 8)):
        cfg = staged_config(postgres_url, tmp_path, ["tabby"], run_id=f"manual__{count}").with_(
            shard_size=1000, num_shards=8
        )
        with session_scope(postgres_url) as session:
            session.add(Run(run_id=cfg.run_id, params={}, counters={}))
        with session_scope(postgres_url) as session:
            insert_ignore(
                session,
                Candidate,
                [
                    {
                        "run_id": cfg.run_id,
                        "url": f"http://example.test/{n}.jpg",
                        "page_url": "http://example.test/",
                        "source": "img",
                        "shard": n % BUCKETS,
                        "status": Status.PENDING,
                    }
                    for n in range(count)
                ],
                ["run_id", "url"],
            )
        assert plan_shards(cfg) == expected
        # later tasks, in other processes, read the recorded count, not the settings
        assert run_shards(cfg.with_(shard_size=1)) == expected


def test_two_workers_score_disjoint_halves_and_each_image_once(postgres_url, tmp_path, classifier):
    cfg, shas = _run_with(postgres_url, tmp_path, 24, shared=4)
    workers = [CountingClassifier(classifier), CountingClassifier(classifier)]
    with ThreadPoolExecutor(2) as pool:
        reports = list(pool.map(lambda k: run_classify(cfg, workers[k], shard=k, shards=2), range(2)))
    assert _scored(cfg) == len(shas)
    assert sum(w.scored for w in workers) == len(shas), "an image was scored twice"
    assert [r.done for r in reports] == [w.scored for w in workers]
    # each worker scored its own half: 10 images only in shard 0, 10 only in shard 1, 4 in both
    assert all(10 <= w.scored <= 14 for w in workers)
    assert {r.extra["shard"] for r in reports} == {0, 1}


def test_overlapping_workers_and_a_retry_score_each_image_once(postgres_url, tmp_path, classifier):
    cfg, shas = _run_with(postgres_url, tmp_path, 30)
    cfg = cfg.with_(batch_size=1)  # claims of 8 images, so the 22 left make three pages
    # a worker is lost mid-shard: the images it had claimed but not scored go back to the pool
    lost = CountingClassifier(classifier, fail_after=8)
    with pytest.raises(RuntimeError, match="worker lost"):
        run_classify(cfg, lost, shard=0, shards=1)
    assert _scored(cfg) == lost.scored == 8
    # its retry and a second worker are given the same (whole-run) shard at once: the retry holds
    # its first claimed page while the other worker goes through the run, which skips that page
    release = threading.Event()
    retry, other = CountingClassifier(classifier, hold=release), CountingClassifier(classifier)
    with ThreadPoolExecutor(1) as pool:
        retried = pool.submit(run_classify, cfg, retry, shard=0, shards=1)
        assert retry.entered.wait(timeout=300)
        second = run_classify(cfg, other, shard=0, shards=1)
        release.set()
        first = retried.result()
    page = cfg.batch_size * 8
    assert (retry.scored, other.scored) == (page, len(shas) - 8 - page)
    assert (first.done, second.done) == (retry.scored, other.scored)
    assert _scored(cfg) == len(shas)
    assert lost.scored + retry.scored + other.scored == len(shas), "an image was scored twice"


def test_a_publish_split_over_shards_equals_a_single_one(postgres_url, tmp_path, classifier):
    photos = _photos(18)
    # a smaller copy of a photo: a near duplicate, published once, as the larger copy
    photos["chelsea-small"] = jpeg(sample_photos()["chelsea"].resize((120, 90)))
    photos["chelsea-large"] = jpeg(sample_photos()["chelsea"].resize((480, 360)))
    cfg = staged_config(postgres_url, tmp_path, ["tabby", "tiger_cat", "espresso"], threshold=0.05)
    stage(cfg, photos)
    run_classify(cfg, classifier)

    single = cfg.with_(destination=str(tmp_path / "single"), manifest_id="single")
    single_report = run_publish(single)

    split = cfg.with_(destination=str(tmp_path / "split"), manifest_id="split")
    shards = 3
    selected = [select_keepers(split, k, shards) for k in range(shards)]
    assert sum(1 for r in selected if r.done) >= 2, "the keepers are spread over the shards"
    curate_keepers(split)
    uploads = [upload_keepers(split, k, shards) for k in range(shards)]
    for report in uploads:
        record_report(split, report)
    split_report = finish_publish(split, uploads)

    def files(root):
        return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())

    single_files = [f for f in files(tmp_path / "single") if not f.startswith("manifests/")]
    split_files = [f for f in files(tmp_path / "split") if not f.startswith("manifests/")]
    assert single_files == split_files
    assert len({f.split("/")[1] for f in single_files if f.startswith("images/")}) >= 2  # labels
    single_rows = manifest_rows((tmp_path / "single" / manifest_key("single")).read_bytes())
    split_rows = manifest_rows((tmp_path / "split" / manifest_key("split")).read_bytes())
    assert without_run_ids(single_rows) == without_run_ids(split_rows)  # each row names its own run
    assert split_report.extra["kept"] == single_report.extra["kept"] == len(single_rows)
    assert (split_report.done, split_report.skipped) == (single_report.done, single_report.skipped)
    assert split_report.reasons["near duplicate"] >= 1
