"""Runs of the pipeline for the resilience tests, and what they leave behind in one comparable value.

A fault scenario is judged against an uninterrupted run of the same settings: the published objects
and their bytes, the manifest rows, and the state DB's rows counted per table and status. The demo
site is served by the scriptable loopback server, so a test can count the requests for each URL
(per User-Agent: two runs at once are told apart) and make the site hang for a while.
"""

from __future__ import annotations

import mimetypes
import os
import threading
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy
from helpers import comparable_across_runs, without_run_ids
from loopback_site import Response, SiteServer, serve
from sqlalchemy import func, select

from harvest.demo_site import DEMO_LABELS
from harvest.settings.config import HarvestConfig, S3Options, build_config
from harvest.stages.publish import manifest_key
from harvest.state.db import session_scope
from harvest.state.models import Candidate, Image, ImageUrl, Page, Prediction, Publication, Run
from harvest.storage import make_s3_client, open_store

ADMIN_URL = os.environ.get("HARVEST_TEST_POSTGRES", "postgresql+psycopg2://postgres@127.0.0.1:5432/test")


@contextmanager
def scratch_database() -> Iterator[str]:
    """A fresh Postgres database (named like the postgres_url fixture's) for a reference run that
    must not share rows with the run under test."""
    from harvest.state.db import dispose_engines

    name = f"harvest_test_{uuid.uuid4().hex[:12]}"
    admin = sqlalchemy.create_engine(ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(sqlalchemy.text(f'CREATE DATABASE "{name}"'))
        yield ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    finally:
        dispose_engines()
        with admin.connect() as conn:
            conn.execute(sqlalchemy.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def new_bucket(s3: S3Options) -> str:
    name = f"harvest-{uuid.uuid4().hex[:10]}"
    make_s3_client(s3).create_bucket(Bucket=name)
    return name


def via(endpoint: str, s3: S3Options) -> S3Options:
    """The same credentials, through a proxy at ``endpoint``."""
    return S3Options(endpoint, s3.aws_access_key_id, s3.aws_secret_access_key, s3.region_name)


class Stall:
    """Makes the demo site answer late (``delay`` seconds) for the paths ``matches`` accepts."""

    def __init__(self) -> None:
        self.delay = 0.0
        self.matches: Callable[[str], bool] = lambda path: False
        self._lock = threading.Lock()

    def start(self, delay: float, matches: Callable[[str], bool]) -> None:
        with self._lock:
            self.delay, self.matches = delay, matches

    def stop(self) -> None:
        self.start(0.0, lambda path: False)

    def delay_for(self, path: str) -> float:
        with self._lock:
            return self.delay if self.matches(path) else 0.0


def is_image(path: str) -> bool:
    return path.lower().endswith((".jpg", ".png", ".gif"))


@dataclass
class DemoSite:
    server: SiteServer
    stall: Stall

    @property
    def base(self) -> str:
        return self.server.base

    def fetches(self, user_agent: str | None = None) -> Counter:
        """Path -> requests for it (by one User-Agent, when given); robots.txt left out."""
        with self.server.lock:
            hits = list(self.server.hits)
        return Counter(
            hit.path
            for hit in hits
            if hit.path != "/robots.txt" and (user_agent is None or hit.user_agent == user_agent)
        )


@contextmanager
def demo_site(root: Path) -> Iterator[DemoSite]:
    """The demo site's files on the scriptable loopback server."""
    stall = Stall()

    def files(_site: SiteServer, path: str) -> Response:
        name = path.split("?")[0].split("#")[0].lstrip("/") or "index.html"
        file = (root / name).resolve()
        if root.resolve() not in file.parents or not file.is_file():
            return Response(b"not found", status=404, content_type="text/plain", delay=stall.delay_for(path))
        content_type = mimetypes.guess_type(file.name)[0] or "application/octet-stream"
        if content_type == "text/html":
            content_type += "; charset=utf-8"
        return Response(file.read_bytes(), content_type=content_type, delay=stall.delay_for(path))

    with serve() as server:
        server.fallback = files
        yield DemoSite(server, stall)


def harvest_env(home: Path, **overrides: str) -> dict[str, str]:
    """The environment the runs are configured from: loopback allowed, a short politeness delay."""
    return {
        "HARVEST_ALLOW_PRIVATE_NETWORKS": "1",
        "HARVEST_HOST_DELAY": "0.01",
        "HARVEST_HOME": str(home),
        **overrides,
    }


def demo_params(base_url: str, destination: str, seeds: tuple[str, ...] = ("index.html",), **params) -> dict:
    """The run parameters for crawling the demo site from ``seeds`` (paths on it) for the demo labels."""
    return {
        "seeds": [f"{base_url}/{seed}" for seed in seeds],
        "labels": list(DEMO_LABELS),
        "destination": destination,
        **params,
    }


def demo_config(
    base_url: str,
    run_id: str,
    database_url: str,
    destination: str,
    s3: S3Options | None,
    home: Path,
    seeds: tuple[str, ...] = ("index.html",),
    env: dict[str, str] | None = None,
    **params,
) -> HarvestConfig:
    return build_config(
        demo_params(base_url, destination, seeds, **params),
        run_id,
        env=harvest_env(home, **(env or {})),
        database_url=database_url,
        s3=s3,
    )


def stage_runners(cfg: HarvestConfig, classifier) -> dict[str, Callable[[], object]]:
    """The stages after prepare_run, in order, each a call (download: every shard)."""
    from harvest.pipeline import collect_candidates
    from harvest.stages.classify import run_classify
    from harvest.stages.crawl import run_crawl
    from harvest.stages.download import run_download
    from harvest.stages.publish import run_publish

    return {
        "crawl": lambda: run_crawl(cfg),
        "extract": lambda: collect_candidates(cfg),
        "download": lambda: [run_download(cfg, shard) for shard in range(cfg.num_shards)],
        "classify": lambda: run_classify(cfg, classifier),
        "publish": lambda: run_publish(cfg),
    }


@dataclass(frozen=True)
class EndState:
    """What a run left behind, comparable with ``==`` against an uninterrupted run."""

    objects: dict[str, bytes]  # published key -> bytes (manifests and staging left out)
    manifest: list[dict]
    counts: dict[str, int]  # "table/status" -> rows
    candidates: frozenset[tuple[str, str, str | None]]  # (url, status, sha256) of the run's candidates


def published_objects(cfg: HarvestConfig, s3: S3Options | None = None) -> dict[str, bytes]:
    """Every object under the destination except the manifests and the staging area."""
    store = open_store(cfg.destination, s3 or cfg.s3)
    return {
        key: store.get(key) for key in list(store.keys("")) if not key.startswith(("_staging/", "manifests/"))
    }


def manifest_of(cfg: HarvestConfig, s3: S3Options | None = None) -> list[dict] | None:
    import json

    store = open_store(cfg.destination, s3 or cfg.s3)
    key = manifest_key(cfg.manifest_id or cfg.run_id)
    if not store.exists(key):
        return None
    return [json.loads(line) for line in store.get(key).decode("utf-8").splitlines() if line.strip()]


def state_counts(database_url: str, run_id: str) -> dict[str, int]:
    """Rows per table and status: the run's pages and candidates, and the shared tables whole."""
    counts: dict[str, int] = {}
    with session_scope(database_url) as session:
        for table, model in (("pages", Page), ("candidates", Candidate)):
            rows = session.execute(
                select(model.status, func.count()).where(model.run_id == run_id).group_by(model.status)
            ).all()
            counts.update({f"{table}/{status}": n for status, n in rows})
        counts["runs"] = session.scalar(select(func.count()).select_from(Run))
        counts["images"] = session.scalar(select(func.count()).select_from(Image))
        counts["image_urls"] = session.scalar(select(func.count()).select_from(ImageUrl))
        counts["predictions/scored"] = session.scalar(
            select(func.count()).select_from(Prediction).where(Prediction.top.is_not(None))
        )
        counts["predictions/failed"] = session.scalar(
            select(func.count()).select_from(Prediction).where(Prediction.top.is_(None))
        )
        counts["publications/active"] = session.scalar(
            select(func.count()).select_from(Publication).where(Publication.withdrawn_at.is_(None))
        )
        counts["publications/withdrawn"] = session.scalar(
            select(func.count()).select_from(Publication).where(Publication.withdrawn_at.is_not(None))
        )
    return counts


def candidate_outcomes(database_url: str, run_id: str) -> frozenset[tuple[str, str, str | None]]:
    with session_scope(database_url) as session:
        rows = session.execute(
            select(Candidate.url, Candidate.status, Candidate.sha256).where(Candidate.run_id == run_id)
        ).all()
    return frozenset((url, status, sha) for url, status, sha in rows)


def end_state(cfg: HarvestConfig, s3: S3Options | None = None) -> EndState:
    """``s3`` reads the destination directly when the run itself went through a proxy."""
    return EndState(
        objects=published_objects(cfg, s3),
        manifest=manifest_of(cfg, s3) or [],
        counts=state_counts(cfg.database_url, cfg.run_id),
        candidates=candidate_outcomes(cfg.database_url, cfg.run_id),
    )


def differences(got: EndState, clean: EndState) -> list[str]:
    """What differs, readably (an assertion on two large dataclasses prints too much to read)."""
    problems = []
    if got.objects.keys() != clean.objects.keys():
        problems.append(
            f"objects missing {sorted(clean.objects.keys() - got.objects.keys())}, "
            f"extra {sorted(got.objects.keys() - clean.objects.keys())}"
        )
    # the dataset-wide files and manifest rows name the run that published them: two runs over the
    # same content agree on everything else
    got_objects, clean_objects = comparable_across_runs(got.objects), comparable_across_runs(clean.objects)
    problems += [
        f"bytes of {key} differ"
        for key in got.objects.keys() & clean.objects.keys()
        if got_objects[key] != clean_objects[key]
    ]
    if without_run_ids(got.manifest) != without_run_ids(clean.manifest):
        problems.append(f"manifest {got.manifest} != clean {clean.manifest}")
    if got.counts != clean.counts:
        keys = sorted(got.counts.keys() | clean.counts.keys())
        problems.append(
            "row counts: "
            + ", ".join(
                f"{k} {got.counts.get(k, 0)} != {clean.counts.get(k, 0)}"
                for k in keys
                if got.counts.get(k, 0) != clean.counts.get(k, 0)
            )
        )
    if got.candidates != clean.candidates:
        problems.append(
            f"candidates missing {sorted(clean.candidates - got.candidates)}, "
            f"extra {sorted(got.candidates - clean.candidates)}"
        )
    return problems


def page_states(database_url: str, run_id: str) -> dict[str, tuple[str, str | None]]:
    """Page URL -> (status, error) for one run."""
    with session_scope(database_url) as session:
        rows = session.execute(select(Page.url, Page.status, Page.error).where(Page.run_id == run_id)).all()
    return {url: (status, error) for url, status, error in rows}


def candidate_states(database_url: str, run_id: str) -> dict[str, tuple[str, str | None]]:
    """Candidate URL -> (status, error) for one run."""
    with session_scope(database_url) as session:
        rows = session.execute(
            select(Candidate.url, Candidate.status, Candidate.error).where(Candidate.run_id == run_id)
        ).all()
    return {url: (status, error) for url, status, error in rows}
