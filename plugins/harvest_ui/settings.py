"""Where the gallery finds the state DB, the object store, its thumbnail cache and the re-threshold DAG.

The state DB and S3 are found exactly as the DAG finds them (environment first, then the Airflow
connections ``harvest_db`` and ``aws_default``), so the gallery always shows the data the DAG wrote.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harvest.settings.config import (
    DEFAULT_MODELS_DIR,
    S3Options,
    default_database_url,
    harvest_home,
    normalize_database_url,
    s3_options_from_env,
)
from harvest_airflow import s3_options_for

#: DAG the "re-threshold" button triggers; override with HARVEST_RETHRESHOLD_DAG.
DEFAULT_RETHRESHOLD_DAG = "image_rethreshold"
#: Longest side of a thumbnail in pixels; the grid scales them in the browser.
THUMBNAIL_SIZE = 256
#: The DAG whose runs the gallery shows: seeing the gallery takes read access to its runs
#: (HARVEST_GALLERY_DAG).
DEFAULT_GALLERY_DAG = "image_harvest"
#: Most a single thumbnail's decode may cost, in MB (HARVEST_GALLERY_PREVIEW_MB): a 24-megapixel
#: progressive JPEG, a 28-megapixel PNG, a 6-megapixel WebP, any baseline JPEG (decoded at 1/8).
DEFAULT_PREVIEW_MB = 128


@dataclass(frozen=True)
class GallerySettings:
    database_url: str
    s3: S3Options | None
    thumbnails_dir: Path
    models_dir: Path
    rethreshold_dag: str = DEFAULT_RETHRESHOLD_DAG
    #: Base URL of Airflow's REST API; empty means the server the gallery itself is mounted in.
    airflow_api_url: str = ""
    gallery_dag: str = DEFAULT_GALLERY_DAG
    preview_mb: int = DEFAULT_PREVIEW_MB


def _airflow_connection(conn_id: str) -> Any | None:
    """An Airflow connection when running inside Airflow, else None (the app also runs on its own)."""
    try:
        from airflow.models.connection import Connection
    except ImportError:
        return None
    try:
        return Connection.get_connection_from_secrets(conn_id)
    except Exception:  # not defined, or no metadata DB reachable: fall back to the defaults
        return None


def load_settings(env: Mapping[str, str] | None = None, *, use_airflow: bool = True) -> GallerySettings:
    env = os.environ if env is None else env
    database_url = env.get("HARVEST_DATABASE_URL")
    s3 = None
    if use_airflow:
        if not database_url:
            conn = _airflow_connection("harvest_db")
            database_url = conn.get_uri() if conn else None
        aws = _airflow_connection("aws_default")
        s3 = s3_options_for(aws) if aws else None
    return GallerySettings(
        database_url=normalize_database_url(database_url or default_database_url(env)),
        s3=s3 or s3_options_from_env(env),
        thumbnails_dir=harvest_home(env) / "thumbnails",
        models_dir=Path(env.get("HARVEST_MODELS_DIR") or DEFAULT_MODELS_DIR),
        rethreshold_dag=env.get("HARVEST_RETHRESHOLD_DAG") or DEFAULT_RETHRESHOLD_DAG,
        airflow_api_url=(env.get("HARVEST_AIRFLOW_API_URL") or "").rstrip("/"),
        gallery_dag=env.get("HARVEST_GALLERY_DAG") or DEFAULT_GALLERY_DAG,
        preview_mb=_positive_int(env.get("HARVEST_GALLERY_PREVIEW_MB"), DEFAULT_PREVIEW_MB),
    )


def _positive_int(raw: str | None, default: int) -> int:
    """A setting the gallery can live without: a missing or bad value gives the default."""
    try:
        value = int((raw or "").strip())
    except ValueError:
        return default
    return value if value > 0 else default
