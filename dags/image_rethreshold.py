"""
### image_rethreshold

Decide again which images of an earlier `image_harvest` run to keep, with new labels, top_k or
threshold, and publish the result (images and the run's manifest). The stored scores answer any
label, so nothing is downloaded and the network is not loaded when the model already scored the
images; a new model (or model version) scores them once and its results are kept beside the old.
"""

from __future__ import annotations

import os
from datetime import datetime, timedelta

from airflow.sdk import Param, dag, get_current_context, task

from harvest.settings.config import task_timeout_minutes

PARAMS = {
    "harvest_run_id": Param(
        "",
        type="string",
        minLength=1,
        title="Harvest run id",
        description="The image_harvest run whose images are decided again: its Airflow run id "
        "(e.g. scheduled__2026-11-01T00:00:00+00:00) or the gallery's run id.",
    ),
    "labels": Param(
        [],
        type="array",
        items={"type": "string"},
        title="Labels",
        description="Labels to keep; empty keeps the labels the harvest run asked for.",
    ),
    "top_k": Param(5, type="integer", minimum=1, maximum=1000, title="Top k"),
    "threshold": Param(0.2, type="number", minimum=0, maximum=1, title="Threshold"),
    "model": Param(os.environ.get("HARVEST_MODEL", "efficientnet_lite0"), type="string", title="Model"),
    "destination": Param(
        "",
        type="string",
        title="Destination",
        description="Where to publish; empty publishes where the harvest run did.",
    ),
}


def _settings():
    """The re-decision's config: the harvest run's state scope, and its manifest named as before."""
    from harvest.settings.config import build_config
    from harvest_airflow import (
        database_url,
        mask,
        original_params,
        resolved_database_url,
        s3_options,
        state_run_id,
    )

    mask(os.environ.get("HARVEST_METADATA_KEY"))  # read by build_config below: never in the task log
    params = dict(get_current_context()["params"])
    given = params["harvest_run_id"]
    scope = state_run_id(resolved_database_url(), given)
    original = original_params(resolved_database_url(), scope)
    for name in ("labels", "destination"):  # left empty: the harvest run's own
        if not params.get(name):
            params[name] = original.get(name) or params.get(name)
    return build_config(
        params,
        scope,
        database_url=database_url(),
        s3=s3_options(),
        require_seeds=False,
        manifest_id=given if scope != given else "",
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
    @task(execution_timeout=timedelta(minutes=task_timeout_minutes("rethreshold")))
    def rethreshold() -> list[dict]:
        from airflow.sdk.exceptions import AirflowFailException

        from harvest.pipeline import record_report
        from harvest.rethreshold import run_rethreshold
        from harvest.settings.config import ConfigError

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
