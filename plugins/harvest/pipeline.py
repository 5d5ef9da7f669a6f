"""The stages in order, for the CLI and tests; the DAG calls the same functions one task each."""

from __future__ import annotations

import logging
from dataclasses import asdict

from sqlalchemy import select

from harvest.classify import run_classify
from harvest.config import HarvestConfig
from harvest.crawl import run_crawl, seed_pages
from harvest.download import run_download
from harvest.extract import run_extract
from harvest.labels import resolve_labels
from harvest.publish import run_publish
from harvest.report import StageReport
from harvest.state.db import insert_ignore, migrate, session_scope
from harvest.state.models import Run, utcnow

log = logging.getLogger(__name__)


def run_params(cfg: HarvestConfig) -> dict:
    params = asdict(cfg)
    for private in ("s3", "database_url", "models_dir", "metadata_key"):
        params.pop(private, None)
    return {k: list(v) if isinstance(v, tuple) else v for k, v in params.items()}


def prepare_run(cfg: HarvestConfig) -> dict:
    """Check labels, bring the schema up to date and record the run with its seeds, before any crawling."""
    targets = resolve_labels(cfg.labels, cfg.models_dir)
    migrate(cfg.database_url)
    with session_scope(cfg.database_url) as session:
        insert_ignore(
            session,
            Run,
            [{"run_id": cfg.run_id, "params": run_params(cfg), "started_at": utcnow(), "counters": {}}],
            ["run_id"],
        )
    seeded = seed_pages(cfg)
    log.info(
        "run %s: %d seeds, labels %s -> %s, destination %s",
        cfg.run_id,
        len(cfg.seeds),
        list(cfg.labels),
        {t.folder: sorted(t.wnids) for t in targets},
        cfg.destination,
    )
    return {"run_id": cfg.run_id, "seeds": seeded, "labels": [t.folder for t in targets]}


def record_report(cfg: HarvestConfig, report: StageReport) -> None:
    name = report.stage if "shard" not in report.extra else f"{report.stage}[{report.extra['shard']}]"
    with session_scope(cfg.database_url) as session:
        run = session.scalars(select(Run).where(Run.run_id == cfg.run_id).with_for_update()).one()
        run.counters = {**(run.counters or {}), name: report.as_dict()}
        if report.stage == "publish":
            run.finished_at = utcnow()


def run_all(cfg: HarvestConfig, classifier=None) -> list[StageReport]:
    prepare_run(cfg)
    reports = [run_crawl(cfg), run_extract(cfg)]
    reports += [run_download(cfg, shard) for shard in range(cfg.num_shards)]
    reports += [run_classify(cfg, classifier), run_publish(cfg)]
    for report in reports:
        record_report(cfg, report)
    return reports
