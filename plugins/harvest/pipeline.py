"""A harvest run in this process: preparing it, one stage with its bookkeeping, or every stage in
order (harvest.stages.STAGES); the DAG runs the same stages one task each.

What only preparing or extracting uses (the model's label tables, the destination check, the
crawler's parsers) is imported inside those functions: a download task's process starts without it.
"""

from __future__ import annotations

import logging
from dataclasses import asdict

from sqlalchemy import select

from harvest.report import StageReport
from harvest.settings.config import ConfigError, HarvestConfig
from harvest.stages import STAGE_BY_NAME, STAGES
from harvest.state.db import insert_ignore, migrate, session_scope
from harvest.state.models import Page, Run, utcnow
from harvest.state.shards import plan_shards, run_shards

log = logging.getLogger(__name__)


def run_params(cfg: HarvestConfig) -> dict:
    params = asdict(cfg)
    for private in ("s3", "database_url", "models_dir", "metadata_key", "flickr_api_key"):
        params.pop(private, None)
    return {k: list(v) if isinstance(v, tuple) else v for k, v in params.items()}


def run_checks(cfg: HarvestConfig) -> list[str]:
    """What only the model and the stores can tell: every label known to the model, the destination
    and staging area writable, the URL list readable. Each problem is returned, none raised, so that
    ``build_config(..., checks=run_checks)`` names them with the form's problems in one message."""
    from harvest.destination_check import check_destinations
    from harvest.model.labels import resolve_labels
    from harvest.model.registry import resolve_model
    from harvest.stages.sources import SourceError, check_url_list

    problems: list[str] = []
    try:
        classes = resolve_model(cfg.model, cfg.models_dir).classes
    except ConfigError as exc:
        problems.extend(exc.problems)
        classes = None
    if cfg.labels and classes is not None:
        try:
            resolve_labels(cfg.labels, cfg.models_dir, classes)
        except ConfigError as exc:
            problems.extend(exc.problems)
    try:
        check_destinations(cfg)
    except ConfigError as exc:
        problems.extend(exc.problems)
    if cfg.url_list:
        try:
            check_url_list(cfg.url_list, cfg.s3)
        except SourceError as exc:
            problems.append(str(exc))
    return problems


def prepare_run(cfg: HarvestConfig, *, checked: bool = False) -> dict:
    """Check labels, bring the schema up to date and record the run with its seeds, before any crawling.

    ``checked``: :func:`run_checks` already passed (the DAG's validate task builds its config with
    them), so the destination is not probed twice."""
    if not checked:
        problems = run_checks(cfg)
        if problems:
            raise ConfigError(problems)
    from harvest.model.labels import resolve_labels
    from harvest.model.registry import resolve_model

    targets = resolve_labels(cfg.labels, cfg.models_dir, resolve_model(cfg.model, cfg.models_dir).classes)
    migrate(cfg.database_url)
    with session_scope(cfg.database_url) as session:
        inserted = insert_ignore(
            session,
            Run,
            [{"run_id": cfg.run_id, "params": run_params(cfg), "started_at": utcnow(), "counters": {}}],
            ["run_id"],
        )
        if not inserted:  # a re-run of the interval: its settings (threshold, labels...) apply from now on
            run = session.get(Run, cfg.run_id)
            run.params = run_params(cfg)
            run.finished_at = None
            log.info("run scope %s exists: re-running it for %s", cfg.run_id, cfg.manifest_id or cfg.run_id)
    seeded = 0
    if cfg.seeds:  # a URL list alone needs none of the crawler
        from harvest.stages.crawl import seed_pages

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


def peak_rss_mb() -> float | None:
    """This process's peak resident memory (VmHWM: for a task forked from a worker, from the fork
    on), recorded with each report so a deployment sees what a task of each stage needs."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        return None
    return None


def record_report(cfg: HarvestConfig, report: StageReport) -> None:
    name = report.stage if "shard" not in report.extra else f"{report.stage}[{report.extra['shard']}]"
    report.extra.setdefault("peak_rss_mb", peak_rss_mb())
    with session_scope(cfg.database_url) as session:
        run = session.scalars(select(Run).where(Run.run_id == cfg.run_id).with_for_update()).one()
        run.counters = {**(run.counters or {}), name: report.as_dict()}
        if report.stage == "publish":
            run.finished_at = utcnow()


def collect_candidates(cfg: HarvestConfig) -> list[StageReport]:
    """Candidates from the crawled pages and from the URL list, minus those outside the allowed domains
    and those a takedown blocked (harvest.takedown.blocklist)."""
    from harvest.stages.sources import apply_domain_filter, run_ingest, run_search
    from harvest.takedown.blocklist import skip_blocked_candidates

    if _has_pages(cfg):
        from harvest.stages.extract import run_extract

        reports = [run_extract(cfg)]
    else:  # a URL list alone: no page to read, so none of the page parser to import (~0.4 s of CPU)
        reports = [StageReport("extract", extra={"candidates": 0, "data_uri_images_ignored": 0})]
    if cfg.url_list:
        reports.append(run_ingest(cfg))
    if cfg.search_sources:
        reports.append(run_search(cfg))
    skipped = apply_domain_filter(cfg)
    if skipped:
        log.info("%d candidates outside the allowed domains %s skipped", skipped, list(cfg.domains))
    blocked = skip_blocked_candidates(cfg.database_url, cfg.run_id)
    if blocked:
        reports[0].extra["taken_down"] = blocked
    reports[0].extra["shards"] = plan_shards(cfg)
    return reports


def _has_pages(cfg: HarvestConfig) -> bool:
    with session_scope(cfg.database_url) as session:
        return session.scalar(select(Page.id).where(Page.run_id == cfg.run_id).limit(1)) is not None


def run_stage(cfg: HarvestConfig, name: str, shard: int | None = None, classifier=None) -> list[StageReport]:
    """One stage with the bookkeeping of its DAG task: its reports recorded in the run's counters,
    and after publishing the run's statistics. A sharded stage runs ``shard``, or every shard when
    it is None; a loaded ``classifier`` spares the classify stage loading the model again."""
    stage = STAGE_BY_NAME[name]
    run = stage.function()
    if stage.name == "prepare":
        log.info("prepared: %s", run(cfg))
        return []
    if stage.sharded and shard is None and stage.takes_classifier:
        # in one process, scoring the whole run in one pass is the same work as shard after shard
        reports = [run(cfg, classifier)]
    elif stage.sharded:
        shards = run_shards(cfg)
        loaded = {"classifier": classifier} if stage.takes_classifier else {}
        reports = [
            run(cfg, shard=s, shards=shards, **loaded) for s in (range(shards) if shard is None else [shard])
        ]
    else:
        result = run(cfg, classifier) if stage.takes_classifier else run(cfg)
        reports = result if isinstance(result, list) else [result]
    for report in reports:
        record_report(cfg, report)
    if stage is STAGES[-1]:  # the run's last stage (publish): its statistics are final now
        record_run_stats(cfg)
    return reports


#: the publish stage as DAG tasks: (step, its function in harvest.stages.publish, mapped over shards)
PUBLISH_STEPS = {
    "select": ("select_keepers", True),
    "curate": ("curate_keepers", False),
    "upload": ("upload_keepers", True),
    "finish": ("finish_publish", False),
}


def run_publish_step(cfg: HarvestConfig, step: str, shard: int | None = None) -> StageReport:
    """One step of publishing (PUBLISH_STEPS), with its bookkeeping: a mapped step runs shard
    ``shard`` of the run's recorded count; the last one sums the uploads the shards recorded and,
    like the publish stage, records the run's statistics."""
    from harvest.stages import publish

    name, mapped = PUBLISH_STEPS[step]
    function = getattr(publish, name)
    if mapped:
        report = function(cfg, shard, run_shards(cfg))
    elif step == "finish":
        report = function(cfg, _recorded_uploads(cfg))
    else:
        report = function(cfg)
    record_report(cfg, report)
    if step == "finish":
        record_run_stats(cfg)
    return report


def _recorded_uploads(cfg: HarvestConfig) -> list[dict]:
    """The upload reports of this run's shards, as their tasks recorded them."""
    shards = run_shards(cfg)
    with session_scope(cfg.database_url) as session:
        counters = session.scalar(select(Run.counters).where(Run.run_id == cfg.run_id)) or {}
    return [counters[f"upload[{shard}]"] for shard in range(shards) if f"upload[{shard}]" in counters]


def run_all(cfg: HarvestConfig, classifier=None) -> list[StageReport]:
    """Every stage in order, in this process; reports of the stages after prepare (the first)."""
    prepare_run(cfg)
    reports = []
    for stage in STAGES[1:]:
        reports += run_stage(cfg, stage.name, classifier=classifier)
    return reports


def record_run_stats(cfg: HarvestConfig) -> dict:
    """Per-domain success statistics and quota shortfalls, stored with the run and logged."""
    from harvest.dataset.quota import shortfalls
    from harvest.dataset.stats import domain_stats, format_table

    stats = domain_stats(cfg.database_url, cfg.run_id)
    summary = {"domains": [item.as_dict() for item in stats], "quota_shortfalls": shortfalls(cfg)}
    with session_scope(cfg.database_url) as session:
        run = session.scalars(select(Run).where(Run.run_id == cfg.run_id).with_for_update()).one()
        run.counters = {**(run.counters or {}), **summary}
    if stats:
        log.info("downloads per domain:\n%s", format_table(stats))
    if summary["quota_shortfalls"]:
        log.warning("labels below the quota of %d: %s", cfg.quota, summary["quota_shortfalls"])
    return summary
