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
from pathlib import Path

from airflow.sdk import Asset, AssetAlias, Param, dag, get_current_context, task

from harvest.settings.config import run_timeout_hours, task_timeout_minutes

# Defaults of the trigger form and of the nightly run; kept literal so parsing stays instant.
_ENV_SEEDS = [s for s in os.environ.get("HARVEST_SEEDS", "").split(",") if s.strip()]
_ENV_LABELS = [s for s in os.environ.get("HARVEST_LABELS", "").split(",") if s.strip()]
_PROFILES_DIR = Path(
    os.environ.get("HARVEST_PROFILES_DIR") or Path(__file__).resolve().parents[1] / "include" / "profiles"
)
_PROFILES = sorted(p.stem for p in _PROFILES_DIR.glob("*.y*ml")) if _PROFILES_DIR.is_dir() else []

#: Every publication adds an event for ``{destination}/images/{label}`` (and the destination itself)
#: through this alias, so a training DAG can be scheduled on "new images for label X".
HARVEST_IMAGES = AssetAlias("harvest_images")

PARAMS = {
    "profile": Param(
        os.environ.get("HARVEST_PROFILE", ""),
        type="string",
        enum=["", *_PROFILES],
        title="Harvest profile",
        description="A named profile from include/profiles/; its settings replace the ones below. "
        "Leave empty to use the form.",
    ),
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
        description="ImageNet-1k class names, WordNet groups (dog, bird, vehicle) or WordNet ids to keep, "
        "one per line (e.g. goldfish, great white shark, n01443537, dog).",
    ),
    "max_depth": Param(
        2,
        type="integer",
        minimum=0,
        maximum=20,
        title="Max depth",
        description="How many links deep to crawl: the seed is depth 0, a page it links to depth 1.",
    ),
    "max_pages": Param(
        1000,
        type="integer",
        minimum=1,
        maximum=1_000_000,
        title="Max pages",
        description="Pages fetched per run at most, seeds included.",
    ),
    "same_domain": Param(
        True,
        type="boolean",
        title="Stay on the seed's domain",
        description="Follow links only within each seed's site (www.example.com and img.example.com count "
        "as one).",
    ),
    "url_allow": Param(
        [],
        type="array",
        items={"type": "string"},
        title="Only crawl URLs matching",
        description="Regular expressions; when given, a page URL must match one of them.",
    ),
    "url_deny": Param(
        [],
        type="array",
        items={"type": "string"},
        title="Never crawl URLs matching",
        description="Regular expressions; a page URL matching any of them is not crawled.",
    ),
    "min_width": Param(
        64,
        type="integer",
        minimum=1,
        title="Minimum width (px)",
        description="Narrower images are skipped (declared sizes before download, real size after).",
    ),
    "min_height": Param(
        64,
        type="integer",
        minimum=1,
        title="Minimum height (px)",
        description="Lower images are skipped.",
    ),
    "top_k": Param(
        5,
        type="integer",
        minimum=1,
        maximum=1000,
        title="Top k",
        description="A target label must be among the image's k most probable classes.",
    ),
    "threshold": Param(
        0.2,
        type="number",
        minimum=0,
        maximum=1,
        title="Threshold",
        description="Keep an image when a target label is among its top_k predictions "
        "with at least this probability.",
    ),
    "url_list": Param(
        "",
        type="string",
        title="URL list",
        description="Optional CSV/TSV/Parquet/JSONL of image URLs (column url, optional label, caption, "
        "page_url), local path or s3://bucket/key; downloaded like crawled images.",
    ),
    "domains": Param(
        [],
        type="array",
        items={"type": "string"},
        title="Allowed image domains",
        description="Only download images from these hosts and their subdomains (e.g. staticflickr.com); "
        "empty allows all.",
    ),
    "quota": Param(
        0,
        type="integer",
        minimum=0,
        title="Quota per label",
        description="With a labelled URL list: stop downloading a label once it has this many images "
        "and report labels that fell short. 0 = no quota.",
    ),
    "model": Param(
        os.environ.get("HARVEST_MODEL", "efficientnet_lite0"),
        type="string",
        title="Model",
        description="efficientnet_lite0 (bundled), a filter from `make train-filter`, a path to a .keras / "
        ".tflite file or SavedModel folder with its .json class list, or keras.applications.<Name>.",
    ),
    "text_prefilter": Param(
        False,
        type="boolean",
        title="Text pre-filter",
        description="Skip downloading candidates whose alt text, title or file name name only other "
        "ImageNet classes; empty or generic alt text never causes a skip.",
    ),
    "destination": Param(
        "",
        type="string",
        title="Destination",
        description="s3://bucket/prefix or a local folder; empty uses HARVEST_DESTINATION "
        "or the local default.",
    ),
}


def _timeout(kind: str) -> timedelta:
    """A task kind's execution timeout (HARVEST_<KIND>_TIMEOUT_MINUTES): a stuck task fails, and the
    run goes on to its end instead of holding the DAG's only run slot."""
    return timedelta(minutes=task_timeout_minutes(kind))


def _asset_uri(destination: str) -> str:
    return destination if destination.startswith("s3://") else Path(destination).resolve().as_uri()


def _settings():
    """The run's HarvestConfig from the Params, the run id and the Airflow connections."""
    from harvest_airflow import settings

    return settings(get_current_context())


@dag(
    dag_id="image_harvest",
    schedule="@daily",
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    # one run at a time: a run that is stuck anyway is failed before the next night's is due
    dagrun_timeout=timedelta(hours=run_timeout_hours()),
    params=PARAMS,
    default_args={"retries": 2, "retry_delay": timedelta(seconds=30)},
    tags=["harvest"],
    doc_md=__doc__,
)
def image_harvest():
    @task(execution_timeout=_timeout("validate"))
    def validate() -> dict:
        """Refuse bad input before any crawling; nothing to retry when the settings are wrong."""
        from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

        from harvest.pipeline import prepare_run
        from harvest.settings.config import ConfigError

        context = get_current_context()
        params = context["params"]
        configured = params.get("seeds") or params.get("profile") or params.get("url_list")
        if not configured and context["dag_run"].run_type == "scheduled":
            raise AirflowSkipException(
                "no seeds configured for the nightly run (set HARVEST_PROFILE or HARVEST_SEEDS)"
            )
        try:
            return prepare_run(_settings())
        except ConfigError as exc:
            raise AirflowFailException(str(exc)) from exc

    @task(pool=NETWORK_POOL, execution_timeout=_timeout("crawl"))
    def crawl_seeds(_: dict) -> dict:
        from harvest.pipeline import record_report
        from harvest.stages.crawl import run_crawl

        cfg = _settings()
        report = run_crawl(cfg)
        record_report(cfg, report)
        return report.as_dict()

    @task(pool=NETWORK_POOL, execution_timeout=_timeout("extract"))
    def extract_links(_: dict) -> list[int]:
        """Returns the shard ids the download fans out over (its counts are in the log and state DB)."""
        from harvest.pipeline import collect_candidates, record_report

        cfg = _settings()
        for report in collect_candidates(cfg):
            record_report(cfg, report)
        return list(range(cfg.num_shards))

    @task(pool=NETWORK_POOL, execution_timeout=_timeout("download"))
    def download_images(shard: int) -> dict:
        from harvest.pipeline import record_report
        from harvest.stages.download import run_download

        cfg = _settings()
        report = run_download(cfg, shard)
        record_report(cfg, report)
        return report.as_dict()

    @task(execution_timeout=_timeout("classify"))
    def classify_images(_: list) -> dict:
        from harvest.pipeline import record_report
        from harvest.stages.classify import run_classify

        cfg = _settings()
        report = run_classify(cfg)
        record_report(cfg, report)
        return report.as_dict()

    @task(outlets=[HARVEST_IMAGES], execution_timeout=_timeout("publish"))
    def publish_images(_: dict) -> dict:
        """Publish, then announce the new images as asset events and log where they came from."""
        from harvest.pipeline import record_report, record_run_stats
        from harvest.stages.publish import run_publish

        cfg = _settings()
        report = run_publish(cfg)
        record_report(cfg, report)
        record_run_stats(cfg)
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

    prepared = validate()
    shards = extract_links(crawl_seeds(prepared))
    downloaded = download_images.expand(shard=shards)
    publish_images(classify_images(downloaded))


#: Airflow pool capping how many network-bound harvest tasks run at once across all runs (README
#: "Crawling"); read when the tasks are defined, by the call below. Airflow's own default_pool unless a
#: deployment names a pool it created (a scheduler leaves tasks of a missing pool queued for ever).
NETWORK_POOL = os.environ.get("HARVEST_NETWORK_POOL") or "default_pool"

harvest_dag = image_harvest()
