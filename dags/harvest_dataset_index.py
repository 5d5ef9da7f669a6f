"""
### harvest_dataset_index

Runs whenever `image_harvest` publishes images (it is scheduled on the `harvest_images` asset alias) and
rebuilds `{destination}/index.json`: images per label and every run's manifest. It is also the example
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

        from harvest.config import default_destination
        from harvest.dataset_index import build_index
        from harvest.storage import open_store
        from harvest_airflow import s3_options

        events = get_current_context()["triggering_asset_events"]
        destinations = sorted(
            {
                event.extra["destination"]
                for asset_events in events.values()
                for event in asset_events
                if event.extra.get("destination")
            }
        ) or [default_destination(os.environ)]
        return {dest: build_index(open_store(dest, s3_options())) for dest in destinations}

    rebuild_index()


index_dag = harvest_dataset_index()
