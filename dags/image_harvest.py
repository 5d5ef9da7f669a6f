"""
### image_harvest

Crawl the seed pages, find every image on them, download the candidates, keep those the ImageNet
classifier recognises as one of the requested labels, and publish them with a manifest.

`validate → crawl_seeds → extract_links → download_images (one task per shard) → classify_images →
publish_images`

State lives in the harvest state DB (`HARVEST_DATABASE_URL`, the `harvest_db` connection, or a
local SQLite file), so any task can be cleared and re-run: it does exactly the work still missing.
"""

from __future__ import annotations

import os
from datetime import datetime, timedelta

from airflow.sdk import Param, dag, get_current_context, task

# Defaults of the trigger form and of the nightly run; kept literal so parsing stays instant.
_ENV_SEEDS = [s for s in os.environ.get("HARVEST_SEEDS", "").split(",") if s.strip()]
_ENV_LABELS = [s for s in os.environ.get("HARVEST_LABELS", "").split(",") if s.strip()]

PARAMS = {
    "seeds": Param(
        _ENV_SEEDS,
        type="array",
        items={"type": "string"},
        title="Seed URLs",
        description="Pages to start crawling from, one http(s) URL per line.",
    ),
    "labels": Param(
        _ENV_LABELS,
        type="array",
        items={"type": "string"},
        title="Labels",
        description="ImageNet-1k class names or WordNet ids to keep, one per line "
        "(e.g. goldfish, great white shark, n01443537).",
    ),
    "max_depth": Param(2, type="integer", minimum=0, title="Max depth", description="The seed is depth 0."),
    "max_pages": Param(1000, type="integer", minimum=1, title="Max pages"),
    "same_domain": Param(True, type="boolean", title="Stay on the seed's domain"),
    "min_width": Param(64, type="integer", minimum=1, title="Minimum width (px)"),
    "min_height": Param(64, type="integer", minimum=1, title="Minimum height (px)"),
    "top_k": Param(5, type="integer", minimum=1, maximum=1000, title="Top k"),
    "threshold": Param(
        0.2,
        type="number",
        minimum=0,
        maximum=1,
        title="Threshold",
        description="Keep an image when a target label is among its top_k predictions "
        "with at least this probability.",
    ),
    "destination": Param(
        "",
        type="string",
        title="Destination",
        description="s3://bucket/prefix or a local folder; empty uses HARVEST_DESTINATION "
        "or the local default.",
    ),
}


def _connection(conn_id: str):
    from airflow.sdk import BaseHook
    from airflow.sdk.exceptions import AirflowNotFoundException

    try:
        return BaseHook.get_connection(conn_id)
    except AirflowNotFoundException:
        return None


def _settings():
    """The run's HarvestConfig from the Params, the run id and the Airflow connections."""
    from harvest.config import S3Options, build_config

    context = get_current_context()
    database_url = os.environ.get("HARVEST_DATABASE_URL")
    if not database_url:
        conn = _connection("harvest_db")
        database_url = conn.get_uri() if conn else None
    s3 = None
    aws = _connection("aws_default")
    if aws:
        extra = aws.extra_dejson
        s3 = S3Options(
            endpoint_url=extra.get("endpoint_url") or aws.host or None,
            aws_access_key_id=aws.login or extra.get("aws_access_key_id"),
            aws_secret_access_key=aws.password or extra.get("aws_secret_access_key"),
            region_name=extra.get("region_name"),
        )
    env = dict(os.environ)
    if not env.get("HARVEST_METADATA_KEY"):
        env["HARVEST_METADATA_KEY"] = _metadata_key() or ""
    return build_config(context["params"], context["run_id"], env=env, database_url=database_url, s3=s3)


def _metadata_key() -> str | None:
    """The Fernet key for private EXIF fields: the harvest_metadata_key connection's password or
    the Airflow Variable of the same name."""
    from airflow.sdk import Variable

    conn = _connection("harvest_metadata_key")
    if conn and conn.password:
        return conn.password
    try:
        return Variable.get("harvest_metadata_key", default=None)
    except Exception:  # noqa: BLE001 - no variable backend reachable: run without encryption
        return None


@dag(
    dag_id="image_harvest",
    schedule="@daily",
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    params=PARAMS,
    default_args={"retries": 2, "retry_delay": timedelta(seconds=30)},
    tags=["harvest"],
    doc_md=__doc__,
)
def image_harvest():
    @task
    def validate() -> dict:
        """Refuse bad input before any crawling; nothing to retry when the settings are wrong."""
        from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

        from harvest.config import ConfigError
        from harvest.pipeline import prepare_run

        context = get_current_context()
        if not context["params"].get("seeds") and context["dag_run"].run_type == "scheduled":
            raise AirflowSkipException("no seeds configured for the nightly run (set HARVEST_SEEDS)")
        try:
            return prepare_run(_settings())
        except ConfigError as exc:
            raise AirflowFailException(str(exc)) from exc

    @task
    def crawl_seeds(_: dict) -> dict:
        from harvest.crawl import run_crawl
        from harvest.pipeline import record_report

        cfg = _settings()
        report = run_crawl(cfg)
        record_report(cfg, report)
        return report.as_dict()

    @task
    def extract_links(_: dict) -> list[int]:
        """Returns the shard ids the download fans out over (its counts are in the log and state DB)."""
        from harvest.extract import run_extract
        from harvest.pipeline import record_report

        cfg = _settings()
        report = run_extract(cfg)
        record_report(cfg, report)
        return list(range(cfg.num_shards))

    @task
    def download_images(shard: int) -> dict:
        from harvest.download import run_download
        from harvest.pipeline import record_report

        cfg = _settings()
        report = run_download(cfg, shard)
        record_report(cfg, report)
        return report.as_dict()

    @task
    def classify_images(_: list) -> dict:
        from harvest.classify import run_classify
        from harvest.pipeline import record_report

        cfg = _settings()
        report = run_classify(cfg)
        record_report(cfg, report)
        return report.as_dict()

    @task
    def publish_images(_: dict) -> dict:
        from harvest.pipeline import record_report
        from harvest.publish import run_publish

        cfg = _settings()
        report = run_publish(cfg)
        record_report(cfg, report)
        return report.as_dict()

    prepared = validate()
    shards = extract_links(crawl_seeds(prepared))
    downloaded = download_images.expand(shard=shards)
    publish_images(classify_images(downloaded))


harvest_dag = image_harvest()
