"""
### image_rethreshold

Decide again which images of an earlier `image_harvest` run to keep, with new labels, top_k or
threshold, and publish the result (images and the run's manifest). The stored scores answer any
label, so nothing is downloaded and the network is not loaded when the model already scored the
images; a new model (or model version) scores them once and its results are kept beside the old.
"""

from __future__ import annotations

import os
from datetime import datetime

from airflow.sdk import Param, dag, get_current_context, task

PARAMS = {
    "harvest_run_id": Param(
        "",
        type="string",
        minLength=1,
        title="Harvest run id",
        description="The run_id of the image_harvest run whose images are decided again.",
    ),
    "labels": Param([], type="array", items={"type": "string"}, title="Labels"),
    "top_k": Param(5, type="integer", minimum=1, maximum=1000, title="Top k"),
    "threshold": Param(0.2, type="number", minimum=0, maximum=1, title="Threshold"),
    "model": Param(os.environ.get("HARVEST_MODEL", "efficientnet_lite0"), type="string", title="Model"),
    "destination": Param("", type="string", title="Destination"),
}


def _settings():
    from airflow.sdk import BaseHook
    from airflow.sdk.exceptions import AirflowNotFoundException

    from harvest.config import S3Options, build_config

    def connection(conn_id: str):
        try:
            return BaseHook.get_connection(conn_id)
        except AirflowNotFoundException:
            return None

    params = get_current_context()["params"]
    database_url = os.environ.get("HARVEST_DATABASE_URL")
    if not database_url:
        conn = connection("harvest_db")
        database_url = conn.get_uri() if conn else None
    s3 = None
    aws = connection("aws_default")
    if aws:
        extra = aws.extra_dejson
        s3 = S3Options(
            endpoint_url=extra.get("endpoint_url") or aws.host or None,
            aws_access_key_id=aws.login or extra.get("aws_access_key_id"),
            aws_secret_access_key=aws.password or extra.get("aws_secret_access_key"),
            region_name=extra.get("region_name"),
        )
    return build_config(
        params, params["harvest_run_id"], database_url=database_url, s3=s3, require_seeds=False
    )


@dag(
    dag_id="image_rethreshold",
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    params=PARAMS,
    tags=["harvest"],
    doc_md=__doc__,
)
def image_rethreshold():
    @task
    def rethreshold() -> list[dict]:
        from airflow.sdk.exceptions import AirflowFailException

        from harvest.config import ConfigError
        from harvest.pipeline import record_report
        from harvest.rethreshold import run_rethreshold

        try:
            cfg = _settings()
            reports = run_rethreshold(cfg)
        except ConfigError as exc:
            raise AirflowFailException(str(exc)) from exc
        for report in reports:
            record_report(cfg, report)
        return [report.as_dict() for report in reports]

    rethreshold()


rethreshold_dag = image_rethreshold()
