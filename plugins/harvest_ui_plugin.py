"""Airflow plugin: mounts the harvest gallery at ``/harvest`` and links it from the Airflow navigation.

This is the only module Airflow's plugin loader imports from ``plugins/`` (``.airflowignore`` hides
the packages, whose files are imported as packages instead). The gallery app is built lazily per
API server process; its routes require a logged-in Airflow user, like the rest of the UI.
"""

from __future__ import annotations

from airflow.plugins_manager import AirflowPlugin

URL_PREFIX = "/harvest"


def _gallery_app():
    from airflow.api_fastapi.core_api.security import get_user

    from harvest_ui.app import create_app

    return create_app(dependencies=[get_user])


class HarvestGalleryPlugin(AirflowPlugin):
    name = "harvest_gallery"
    fastapi_apps = [{"app": _gallery_app(), "url_prefix": URL_PREFIX, "name": "Harvest gallery"}]
    external_views = [
        {
            "name": "Harvest gallery",
            "href": f"{URL_PREFIX}/",
            "destination": "nav",
            "category": "browse",
            "url_route": "harvest-gallery",
        }
    ]
