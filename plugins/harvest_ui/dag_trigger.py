"""Start a re-threshold run through Airflow's own REST API, as the user who pressed the button.

Going through the REST API (rather than writing to Airflow's database) means Airflow checks the
user's permission to trigger the DAG, records who triggered it, and validates the conf against the
DAG's Params, exactly as for a run started from the Airflow UI.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import requests

TIMEOUT = (5.0, 30.0)


class TriggerError(Exception):
    """Airflow refused or could not be reached; ``status`` is the HTTP status to pass on."""

    def __init__(self, url: str, reason: str, status: int = 502):
        self.url = url
        self.reason = reason
        self.status = status
        super().__init__(f"{url}: {reason}")


@dataclass(frozen=True)
class RethresholdRequest:
    threshold: float
    run_id: str | None = None
    labels: tuple[str, ...] = ()

    def conf(self) -> dict[str, Any]:
        """The conf of an image_rethreshold run: the harvest run to decide again, its labels, the threshold."""
        return {"threshold": self.threshold, "harvest_run_id": self.run_id or "", "labels": list(self.labels)}


def trigger_dag_run(api_url: str, dag_id: str, request: RethresholdRequest, token: str | None) -> dict:
    url = f"{api_url.rstrip('/')}/api/v2/dags/{dag_id}/dagRuns"
    headers = {"Accept": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    body = {
        "logical_date": None,
        "conf": request.conf(),
        "note": f"re-threshold at {request.threshold} from the gallery",
    }
    try:
        response = requests.post(url, json=body, headers=headers, timeout=TIMEOUT)
    except requests.RequestException as exc:
        raise TriggerError(url, f"Airflow API not reachable: {type(exc).__name__}: {exc}") from exc
    if response.status_code == 404:
        raise TriggerError(
            url,
            f"DAG {dag_id!r} not found; set HARVEST_RETHRESHOLD_DAG to the re-threshold DAG's id",
            404,
        )
    if response.status_code in (401, 403):
        raise TriggerError(url, f"not allowed to trigger {dag_id!r} (HTTP {response.status_code})", 403)
    if response.status_code >= 400:
        raise TriggerError(url, f"HTTP {response.status_code}: {_detail(response)}", 502)
    data = response.json()
    return {"dag_id": dag_id, "dag_run_id": data.get("dag_run_id"), "state": data.get("state"), "url": url}


def _detail(response: requests.Response) -> str:
    try:
        detail = response.json().get("detail")
    except ValueError:
        detail = None
    return str(detail or response.text[:300])
