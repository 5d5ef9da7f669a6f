"""
### image_harvest

Crawl the seed pages, find every image on them, download the candidates, keep those the ImageNet
classifier recognises as one of the requested labels, and publish them with a manifest.

`validate → crawl_seeds → extract_links → [download_images → classify_images] per shard →
select_keepers → curate_keepers → upload_images → publish_images`

The run is split into shards by its size (one per `HARVEST_SHARD_SIZE` candidates, between
`HARVEST_MIN_SHARDS` and `HARVEST_SHARDS`): downloading, classifying, the keep decision and the
uploads are mapped over them, so every worker takes a part; the curation verdict and the manifest are
one task each (docs/scaling.md). A shard is scored as soon as its own download ends, while later
shards still download (at most `HARVEST_DOWNLOAD_TASKS` of them at once), so the network-bound and the
CPU-bound stage overlap.

State lives in the harvest state DB (`HARVEST_DATABASE_URL`, the `harvest_db` connection, or a
local SQLite file), so any task can be cleared and re-run: it does exactly the work still missing.
"""

from __future__ import annotations

import logging
import os
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from airflow.sdk import Asset, AssetAlias, Param, dag, get_current_context, task, task_group

from harvest.settings.alerts import alert_settings
from harvest.settings.env import profiles_dir
from harvest.settings.params import HARVEST_PARAMS, ParamSpec
from harvest.settings.profiles import list_profiles
from harvest.settings.timeouts import download_tasks, run_timeout_hours, task_timeout_minutes
from harvest.stages import STAGE_BY_NAME
from harvest_airflow.alerts import deadline_alert, failure_notifiers

#: Every publication adds an event for ``{destination}/images/{label}`` (and the destination itself)
#: through this alias, so a training DAG can be scheduled on "new images for label X".
HARVEST_IMAGES = AssetAlias("harvest_images")


def _param(spec: ParamSpec, **extra) -> Param:
    """A trigger-form field from its specification, its default read from the environment when set."""
    return Param(spec.value(os.environ), **spec.schema(), **extra)


_PROFILES = list_profiles(profiles_dir(os.environ))
PARAMS = {
    name: _param(spec, enum=["", *_PROFILES]) if name == "profile" else _param(spec)
    for name, spec in HARVEST_PARAMS.items()
}


#: who hears of a failed task or run, and of a run still going at its deadline (docs/airflow.md, "Alerts")
ALERTS = alert_settings()
NOTIFIERS = failure_notifiers(ALERTS)


def _stage_task(name: str, task_id: str = "", **extra: Any):
    """``@task`` for a stage, from its row in harvest.stages.STAGES: its task id, the network pool
    when it loads the network, and its execution timeout (HARVEST_<KIND>_TIMEOUT_MINUTES), after which
    a stuck task fails and the run goes on to its end instead of holding the DAG's only run slot."""
    stage = STAGE_BY_NAME[name]
    if stage.network:
        extra["pool"] = NETWORK_POOL
    timeout = timedelta(minutes=task_timeout_minutes(stage.timeout))
    return task(task_id=task_id or stage.task_id, execution_timeout=timeout, **extra)


def _run_stage(name: str, shard: int | None = None) -> list[dict]:
    """Run one stage with its bookkeeping (harvest.pipeline.run_stage); its reports as dicts."""
    from harvest.pipeline import run_stage

    return [report.as_dict() for report in run_stage(_settings(), name, shard)]


def _asset_uri(destination: str) -> str:
    return destination if destination.startswith("s3://") else Path(destination).resolve().as_uri()


def _settings(**options: Any):
    """The run's HarvestConfig: its recorded or default Params overridden by its conf, the run id and
    the Airflow connections (harvest_airflow.settings)."""
    from harvest_airflow import settings

    return settings(get_current_context(), **options)


@dag(
    dag_id="image_harvest",
    schedule="@daily",
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    # one run at a time: a run that is stuck anyway is failed before the next night's is due
    dagrun_timeout=timedelta(hours=run_timeout_hours()),
    params=PARAMS,
    default_args={
        "retries": 2,
        "retry_delay": timedelta(seconds=30),
        "on_failure_callback": NOTIFIERS,
        # a later stage's task goes before an earlier one's when both wait for a slot: a downloaded
        # shard is scored before the next shard's download starts, so the run flows through depth-first
        "weight_rule": "upstream",
    },
    on_failure_callback=NOTIFIERS,
    deadline=deadline_alert(ALERTS),
    tags=["harvest"],
    doc_md=__doc__,
)
def image_harvest():
    @_stage_task("prepare")
    def validate() -> dict:
        """Refuse bad input before any crawling, every problem in one message; nothing to retry when
        the settings are wrong. A run with nothing to crawl is skipped, whatever its run type, and
        says why in its summary (this task's XCom ``summary``) and log."""
        from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

        from harvest.pipeline import prepare_run, run_checks
        from harvest.settings.config import ConfigError, nothing_to_crawl
        from harvest.settings.keys import unknown_key_problems
        from harvest_airflow import run_params

        context = get_current_context()
        base, conf = run_params(context)
        if nothing_to_crawl(base, conf):
            unknown = unknown_key_problems(conf, HARVEST_PARAMS, "conf")
            if unknown:
                raise AirflowFailException("invalid harvest settings: " + "; ".join(unknown))
            reason = (
                f"skipped: nothing to crawl for {context['run_id']}: no seeds, url_list, search_sources or profile "
                "(set HARVEST_PROFILE or HARVEST_SEEDS for the nightly, or give seeds in the conf)"
            )
            context["ti"].xcom_push(key="summary", value=reason)
            logging.getLogger("harvest").warning("%s", reason)  # Airflow logs only "Skipping task."
            raise AirflowSkipException(reason)
        try:
            return prepare_run(_settings(checks=run_checks), checked=True)
        except ConfigError as exc:
            raise AirflowFailException(str(exc)) from exc

    @_stage_task("crawl")
    def crawl_seeds(_: dict) -> dict:
        (report,) = _run_stage("crawl")
        return report

    @_stage_task("extract")
    def extract_links(_: dict) -> list[int]:
        """Returns the shard ids the later stages fan out over: as many as the run's candidates
        call for (harvest.state.shards); the counts are in the log and state DB."""
        from harvest.pipeline import run_stage

        cfg = _settings()
        reports = run_stage(cfg, "extract")
        return list(range(reports[0].extra["shards"]))

    @_stage_task("download", max_active_tis_per_dagrun=download_tasks())
    def download_images(shard: int) -> dict:
        (report,) = _run_stage("download", shard)
        return report

    @_stage_task("classify")
    def classify_images(shard: int) -> dict:
        """Any worker scores any shard; an image is claimed before it is scored, so each is scored
        once even when shards overlap or a task is retried."""
        (report,) = _run_stage("classify", shard)
        return report

    def _publish_step(step: str, shard: int | None = None) -> dict:
        from harvest.pipeline import run_publish_step

        return run_publish_step(_settings(), step, shard).as_dict()

    @_stage_task("publish", task_id="select_keepers")
    def select_keepers(shard: int) -> dict:
        """The keep decision for the shard's images, written to the state DB."""
        return _publish_step("select", shard)

    @_stage_task("publish", task_id="curate_keepers")
    def curate_keepers() -> dict:
        """Placeholders, near-blank images and near duplicates, over the run and the destination."""
        return _publish_step("curate")

    @_stage_task("publish", task_id="upload_images")
    def upload_images(shard: int) -> dict:
        return _publish_step("upload", shard)

    @_stage_task("publish", outlets=[HARVEST_IMAGES])
    def publish_images() -> dict:
        """Withdrawals, exports and the manifest; then announce the new images as asset events."""
        from harvest.pipeline import run_publish_step

        cfg = _settings()
        report = run_publish_step(cfg, "finish")
        events = get_current_context()["outlet_events"][HARVEST_IMAGES]
        extra = {
            "run_id": cfg.manifest_id,
            "destination": cfg.destination,
            "manifest": report.extra["manifest"],
        }
        for label, count in report.extra["labels"].items():
            events.add(Asset(f"{_asset_uri(cfg.destination)}/images/{label}"), extra={**extra, "new": count})
        events.add(Asset(_asset_uri(cfg.destination)), extra={**extra, "kept": report.extra["kept"]})
        return report.as_dict()

    @task_group(group_id="shard", prefix_group_id=False)
    def fetch_and_score(shard: int) -> None:
        """In a mapped task group, classify_images of shard k waits only for download_images of shard
        k, not for every shard's download."""
        download_images(shard) >> classify_images(shard)

    prepared = validate()
    shards = extract_links(crawl_seeds(prepared))
    scored = fetch_and_score.expand(shard=shards)
    # a mapped task after another (or after a mapped group) waits for all of its instances
    selected = select_keepers.expand(shard=shards)
    uploaded = upload_images.expand(shard=shards)
    scored >> selected >> curate_keepers() >> uploaded >> publish_images()


#: Airflow pool capping how many network-bound harvest tasks run at once across all runs (README
#: "Crawling"); read when the tasks are defined, by the call below. Airflow's own default_pool unless a
#: deployment names a pool it created (a scheduler leaves tasks of a missing pool queued for ever).
NETWORK_POOL = os.environ.get("HARVEST_NETWORK_POOL") or "default_pool"

harvest_dag = image_harvest()
