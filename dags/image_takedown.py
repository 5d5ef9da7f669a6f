"""
### image_takedown

Take images down on request: every image the request names (by image URL, page URL, domain or
SHA-256) is removed from every destination it was published to (originals, variants, thumbnails,
run manifests, the Parquet manifest, WebDataset shards, the dataset card) and from staging, and
blocked: no later harvest downloads those URLs, pages or domains, nor publishes the image or a
near copy of it. Each takedown leaves an audit record in the state DB; triggering the same request
again does nothing. See docs/takedown.md.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

from airflow.sdk import Asset, AssetAlias, Param, dag, get_current_context, task

from harvest.settings.params import TAKEDOWN_PARAMS
from harvest.settings.timeouts import task_timeout_minutes

#: Each takedown adds an event for every destination it changed (and ``{destination}/images/{label}``
#: for each label folder it removed images from): the assets the harvest announces new images on.
HARVEST_TAKEDOWNS = AssetAlias("harvest_takedowns")

PARAMS = {name: Param(spec.value(), **spec.schema()) for name, spec in TAKEDOWN_PARAMS.items()}


def _asset_uri(destination: str) -> str:
    return destination if destination.startswith("s3://") else Path(destination).resolve().as_uri()


@dag(
    dag_id="image_takedown",
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    params=PARAMS,
    default_args={"retries": 2, "retry_delay": timedelta(seconds=30)},
    tags=["harvest"],
    doc_md=__doc__,
)
def image_takedown():
    @task(execution_timeout=timedelta(minutes=task_timeout_minutes("takedown")), outlets=[HARVEST_TAKEDOWNS])
    def take_down() -> dict:
        """Remove, block and record; announce each changed destination as an asset event."""
        from airflow.sdk.exceptions import AirflowFailException

        from harvest.takedown.request import TakedownError, parse_request
        from harvest.takedown.run import run_takedown
        from harvest_airflow import resolved_database_url, s3_options

        context = get_current_context()
        try:
            request = parse_request(context["params"])
        except TakedownError as exc:
            raise AirflowFailException(str(exc)) from exc
        dag_run = context["dag_run"]
        run_type = getattr(dag_run.run_type, "value", dag_run.run_type)
        result = run_takedown(
            resolved_database_url(),
            request,
            s3=s3_options(),
            triggered_by=f"{getattr(dag_run, 'triggering_user_name', None) or 'unknown user'} ({run_type})",
            run_id=context["run_id"],
        )
        events = context["outlet_events"][HARVEST_TAKEDOWNS]
        if not result.already_done:
            for destination, removed in result.destinations.items():
                extra = {"takedown": result.takedown_id, "reason": request.reason}
                labels: dict[str, int] = {}
                for key in removed["deleted"]:
                    if key.startswith("images/"):
                        label = key.split("/")[1]
                        labels[label] = labels.get(label, 0) + 1
                for label, count in labels.items():
                    events.add(
                        Asset(f"{_asset_uri(destination)}/images/{label}"), extra={**extra, "removed": count}
                    )
                events.add(
                    Asset(_asset_uri(destination)),
                    extra={**extra, "before": removed["before"], "after": removed["after"]},
                )
        return result.as_dict()

    take_down()


takedown_dag = image_takedown()
