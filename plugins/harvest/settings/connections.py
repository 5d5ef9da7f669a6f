"""API keys from the environment, the way Airflow passes connections to a task: a key given as
``HARVEST_<NAME>_API_KEY``, else the connection ``AIRFLOW_CONN_<ID>`` in either of Airflow's forms
(a URI whose password or ``api_key`` query parameter holds the key, or JSON with a ``password`` or
an ``extra.api_key``). The Airflow glue (harvest_airflow) fills the first from the connection
store when the environment has neither, so the domain package never imports Airflow."""

from __future__ import annotations

import json
from collections.abc import Mapping
from urllib.parse import parse_qs, unquote, urlsplit


def connection_secret(value: str) -> str | None:
    """The key an ``AIRFLOW_CONN_*`` value holds, in its URI or JSON form."""
    value = value.strip()
    if not value:
        return None
    if value.startswith("{"):
        try:
            conn = json.loads(value)
        except json.JSONDecodeError:
            return None
        extra = conn.get("extra") or {}
        if isinstance(extra, str):
            try:
                extra = json.loads(extra)
            except json.JSONDecodeError:
                extra = {}
        return extra.get("api_key") or conn.get("password") or None
    parts = urlsplit(value)
    query = parse_qs(parts.query)
    if query.get("api_key"):
        return query["api_key"][0]
    return unquote(parts.password) if parts.password else None


def api_key(env: Mapping[str, str], name: str, conn_id: str) -> str | None:
    """``HARVEST_<NAME>_API_KEY``, else the key of the connection ``conn_id`` from the environment."""
    direct = env.get(f"HARVEST_{name.upper()}_API_KEY")
    if direct:
        return direct
    return connection_secret(env.get(f"AIRFLOW_CONN_{conn_id.upper()}", ""))
