"""
### harvest_dataset_index

Runs whenever `image_harvest` publishes images (it is scheduled on the `harvest_images` asset alias) and
rebuilds `{destination}/index.json`: images per label and every run's manifest. A destination named
by an event is only written when a harvest run could publish there (HARVEST_LOCAL_ROOTS,
HARVEST_ALLOWED_BUCKETS); others are refused with the reason in the task log. It is also the example
to copy for a training DAG: schedule yours on `Asset("s3://bucket/prefix/images/goldfish")` to run on
new goldfish.
"""

from __future__ import annotations

from datetime import datetime

from airflow.sdk import AssetAlias, dag, get_current_context, task


@dag(
    dag_id="harvest_dataset_index",
    schedule=[AssetAlias("harvest_images")],
    start_date=datetime(2026, 1, 1),
    catchup=False,
    tags=["harvest"],
    doc_md=__doc__,
)
def harvest_dataset_index():
    @task
    def rebuild_index() -> dict:
        import os

        from harvest.dataset.index import rebuild_indexes
        from harvest.settings.env import default_destination
        from harvest.settings.paths import is_s3
        from harvest_airflow import s3_options

        events = get_current_context()["triggering_asset_events"]
        destinations = [
            event.extra["destination"]
            for asset_events in events.values()
            for event in asset_events
            if event.extra.get("destination")
        ] or [default_destination(os.environ)]
        s3 = s3_options() if any(isinstance(d, str) and is_s3(d) for d in destinations) else None
        return rebuild_indexes(destinations, os.environ, s3)

    rebuild_index()


index_dag = harvest_dataset_index()
