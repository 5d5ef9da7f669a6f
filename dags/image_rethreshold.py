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

from harvest.settings.params import HARVEST_PARAMS, HARVEST_RUN_ID, RETHRESHOLD_DESCRIPTIONS, ParamSpec
from harvest.settings.timeouts import task_timeout_minutes


def _param(spec: ParamSpec, description: str | None) -> Param:
    """A harvest Param's field as this form shows it: same default, type, bounds and title, with the
    description of what it means here. Labels start empty whatever HARVEST_LABELS says: empty means
    the harvest run's own."""
    default = spec.value(None if spec.name == "labels" else os.environ)
    return Param(default, **{**spec.schema(), "description": description})


PARAMS = {
    HARVEST_RUN_ID.name: Param(HARVEST_RUN_ID.value(), **HARVEST_RUN_ID.schema()),
    **{name: _param(HARVEST_PARAMS[name], text) for name, text in RETHRESHOLD_DESCRIPTIONS.items()},
}


def _settings():
    """The re-decision's config: the harvest run's state scope, and its manifest named as before."""
    from harvest_airflow import rethreshold_settings

    return rethreshold_settings(get_current_context())


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
