"""Two worker processes that run pipeline stages at the same moment, for the concurrency tests.

Separate processes, as Airflow's workers are: each has its own engine pool, HTTP clients and
classifier, and the two meet at a barrier before every stage, so their stages overlap as far as
the work allows. The processes are started once per test module (loading TensorFlow takes seconds).
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harvest.settings.config import S3Options, build_config

STAGES = ("prepare", "crawl", "extract", "download", "classify", "publish")
BARRIER_TIMEOUT = 120.0

_classifier = None


def _load(models_dir: str) -> None:
    """Worker start-up: the real classifier, once per process."""
    global _classifier
    from harvest.model.runtime import load_classifier

    _classifier = load_classifier("efficientnet_lite0", Path(models_dir))


def _meet(barrier) -> bool:
    """Both workers are up (a task per worker: the barrier holds the first until the second starts)."""
    barrier.wait(BARRIER_TIMEOUT)
    return True


@dataclass
class Job:
    """One process's part of a race: the run to work on and the stages to run, in order."""

    params: dict[str, Any]
    run_id: str
    database_url: str
    s3: S3Options
    env: dict[str, str]
    stages: tuple[str, ...] = STAGES
    barrier: Any = field(default=None, repr=False)


def run_job(job: Job) -> dict[str, list[dict]]:
    """The stages of ``job``, each started together with the other process's; their reports."""
    from harvest.pipeline import collect_candidates, prepare_run
    from harvest.stages.classify import run_classify
    from harvest.stages.crawl import run_crawl
    from harvest.stages.download import run_download
    from harvest.stages.publish import run_publish

    cfg = build_config(job.params, job.run_id, env=job.env, database_url=job.database_url, s3=job.s3)
    stages = {
        "prepare": lambda: [prepare_run(cfg)],
        "crawl": lambda: [run_crawl(cfg).as_dict()],
        "extract": lambda: [report.as_dict() for report in collect_candidates(cfg)],
        "download": lambda: [run_download(cfg, shard).as_dict() for shard in range(cfg.num_shards)],
        "classify": lambda: [run_classify(cfg, _classifier).as_dict()],
        "publish": lambda: [run_publish(cfg).as_dict()],
    }
    reports: dict[str, list[dict]] = {}
    for name in job.stages:
        job.barrier.wait(BARRIER_TIMEOUT)
        reports[name] = stages[name]()
    return reports


class Racers:
    """Two worker processes and a way to run one job in each at the same time."""

    def __init__(self, pool: ProcessPoolExecutor, manager) -> None:
        self.pool = pool
        self.manager = manager

    def race(self, first: Job, second: Job) -> tuple[dict, dict]:
        barrier = self.manager.Barrier(2)
        first.barrier = second.barrier = barrier
        futures: list[Future] = [self.pool.submit(run_job, first), self.pool.submit(run_job, second)]
        return futures[0].result(timeout=600), futures[1].result(timeout=600)


@contextmanager
def racers(models_dir: Path) -> Iterator[Racers]:
    """Start both workers now (they load the classifier in the background) and stop them after."""
    context = multiprocessing.get_context("spawn")  # the test process runs threads and TensorFlow
    with context.Manager() as manager:
        pool = ProcessPoolExecutor(2, mp_context=context, initializer=_load, initargs=(str(models_dir),))
        try:
            barrier = manager.Barrier(2)
            for _ in range(2):
                pool.submit(_meet, barrier)
            yield Racers(pool, manager)
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
