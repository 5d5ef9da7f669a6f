"""Who may see the gallery inside Airflow: the users Airflow's auth manager lets read the runs of the
harvest DAG (HARVEST_GALLERY_DAG, image_harvest by default).

The gallery shows what those runs found, so it asks what Airflow's own run pages ask: GET on the
DAG's runs. A logged-in user without that permission gets 403, like on Airflow's REST API. Only the
plugin imports this module: Airflow is not needed to run the gallery on its own.
"""

# no ``from __future__ import annotations``: FastAPI reads the dependency's annotations at runtime,
# and GetUserDep is imported inside airflow_gallery_access()
from collections.abc import Callable
from typing import Any

from fastapi import HTTPException

from harvest_ui.app import Settings


def may_read_dag_runs(user: Any, dag_id: str) -> bool:
    """Whether Airflow's auth manager lets ``user`` read the runs of ``dag_id`` (with the team the
    DAG belongs to, when Airflow runs in multi-team mode)."""
    from airflow.api_fastapi.app import get_auth_manager
    from airflow.api_fastapi.auth.managers.models.resource_details import DagAccessEntity, DagDetails
    from airflow.models.dag import DagModel

    return get_auth_manager().is_authorized_dag(
        method="GET",
        access_entity=DagAccessEntity.RUN,
        details=DagDetails(id=dag_id, team_name=DagModel.get_team_name(dag_id)),
        user=user,
    )


def airflow_gallery_access() -> Callable[..., None]:
    """The dependency that guards every gallery route inside Airflow: a logged-in user (401 without
    one, Airflow's own check) who may read the harvest DAG's runs (403 otherwise)."""
    from airflow.api_fastapi.core_api.security import GetUserDep

    def require_dag_run_access(user: GetUserDep, cfg: Settings) -> None:
        if not may_read_dag_runs(user, cfg.gallery_dag):
            raise HTTPException(
                403, f"the gallery shows the runs of the DAG {cfg.gallery_dag}, which you may not read"
            )

    return require_dag_run_access
