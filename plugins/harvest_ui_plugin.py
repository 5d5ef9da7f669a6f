"""Airflow plugin: mounts the harvest gallery at ``/harvest`` and links it from the Airflow navigation.

This is the only module Airflow's plugin loader imports from ``plugins/`` (``.airflowignore`` hides
the packages, whose files are imported as packages instead). Every Airflow process loads plugins, the
scheduler and each task too, so the gallery is built on its first request: only the API server ever
imports it. Its routes require a logged-in Airflow user who may read the runs of the harvest DAG
(harvest_ui.access).
"""

from __future__ import annotations

from typing import Any

from airflow.plugins_manager import AirflowPlugin

URL_PREFIX = "/harvest"


class LazyGallery:
    """An ASGI app that builds the gallery's FastAPI app when the first request arrives."""

    def __init__(self) -> None:
        self._app: Any = None

    @property
    def app(self) -> Any:
        if self._app is None:
            from harvest_ui.access import airflow_gallery_access
            from harvest_ui.app import create_app

            self._app = create_app(dependencies=[airflow_gallery_access()])
        return self._app

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        await self.app(scope, receive, send)


class HarvestGalleryPlugin(AirflowPlugin):
    name = "harvest_gallery"
    fastapi_apps = [{"app": LazyGallery(), "url_prefix": URL_PREFIX, "name": "Harvest gallery"}]
    external_views = [
        {
            "name": "Harvest gallery",
            "href": f"{URL_PREFIX}/",
            "destination": "nav",
            "category": "browse",
            "url_route": "harvest-gallery",
        }
    ]
