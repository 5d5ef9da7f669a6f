"""The metadata key (the Fernet key for private EXIF values) never shows in a task log, wherever it was
loaded from: the environment (``HARVEST_METADATA_KEY``), the Variable ``harvest_metadata_secret``, or the
Variable under its old name ``harvest_metadata_key``; and the Variables page (Airflow's REST API behind
it) hides the value of the Variable the key is now read from.

A real Airflow deployed like docker-compose.yaml's (API server, scheduler, DAG processor and a Celery
worker; tests/resilience/local_cluster.py) runs a small DAG whose tasks each load the key from one source
through ``harvest_airflow.settings``, the path the harvest DAG takes, and log it. Each task log, written
by Airflow's supervisor, must show ``***`` in its place, and no log file or output of the deployment may
contain a key.
"""

from __future__ import annotations

import hashlib
import json
import textwrap
import urllib.request
import uuid

import pytest
from conftest import _create_database, _drop_database, free_port
from cryptography.fernet import Fernet

from .local_cluster import local_cluster, log_events, task_log

pytestmark = pytest.mark.slow

DAG_ID = "metadata_key_probe"
SOURCES = ("environment", "variable", "old_variable")

PROBE_DAG = '''
from __future__ import annotations

import hashlib
import logging
import os
from datetime import datetime

from airflow.sdk import Variable, dag, get_current_context, task

log = logging.getLogger("harvest.key_probe")


def load(source: str) -> None:
    """Load the run's config as the harvest DAG does, with only ``source`` holding a key, and log it."""
    if source != "environment":
        os.environ.pop("HARVEST_METADATA_KEY", None)
    if source == "old_variable":
        Variable.delete("harvest_metadata_secret")
    from harvest_airflow import settings

    key = settings(get_current_context()).metadata_key
    log.info("%s key: %s (sha256 %s)", source, key, hashlib.sha256(key.encode()).hexdigest()[:16])


@dag(
    dag_id="metadata_key_probe",
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    params={"seeds": ["http://127.0.0.1:9/"], "labels": ["goldfish"]},
)
def metadata_key_probe():
    @task
    def environment() -> None:
        load("environment")

    @task
    def variable() -> None:
        load("variable")

    @task
    def old_variable() -> None:
        load("old_variable")

    environment() >> variable() >> old_variable()


metadata_key_probe()
'''


def fingerprint(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()[:16]


@pytest.fixture
def metadata_db():
    name = f"harvest_keys_meta_{uuid.uuid4().hex[:8]}"
    yield _create_database(name)
    _drop_database(name)


def variables_page(api_port: int) -> dict[str, str]:
    """Every Variable as the Variables page gets it from the REST API."""
    with urllib.request.urlopen(f"http://127.0.0.1:{api_port}/api/v2/variables", timeout=30) as response:
        return {item["key"]: item["value"] for item in json.load(response)["variables"]}


def test_the_metadata_key_is_masked_wherever_it_is_loaded(tmp_path, metadata_db):
    keys = {source: Fernet.generate_key().decode() for source in SOURCES}
    dags = tmp_path / "dags"
    dags.mkdir()
    (dags / f"{DAG_ID}.py").write_text(textwrap.dedent(PROBE_DAG))
    env = {
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
        "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
        "HARVEST_HOME": str(tmp_path / "harvest-home"),
        "HARVEST_METADATA_KEY": keys["environment"],
    }
    api_port = free_port()
    with local_cluster(
        tmp_path / "cluster", metadata_db, api_port, dags, env, executor="CeleryExecutor"
    ) as cluster:
        cluster.cli("variables", "set", "harvest_metadata_secret", keys["variable"])
        cluster.cli("variables", "set", "harvest_metadata_key", keys["old_variable"])
        cluster.wait_for_dag(DAG_ID)
        page = cluster.wait_for("the API server", lambda: _try(variables_page, api_port))
        cluster.cli("dags", "unpause", DAG_ID)
        run_id = cluster.trigger(DAG_ID, {})
        state = cluster.wait_for_run(DAG_ID, run_id, timeout=300)
        logs = {source: task_log(cluster, DAG_ID, run_id, source) for source in SOURCES}
        every_log = {
            str(path.relative_to(tmp_path)): path.read_text(errors="replace")
            for path in (tmp_path / "cluster").rglob("*.log")
        }
    assert state == "success", logs

    for source, key in keys.items():
        line = f"{source} key: *** (sha256 {fingerprint(key)})"
        assert line in log_events(logs[source]), f"{source}: no masked line in {log_events(logs[source])}"
        for name, text in every_log.items():
            assert key not in text, f"the {source} key is in {name}"
    # the Variables page hides the Variable the key is read from; the old name is why it was renamed
    assert page["harvest_metadata_secret"] == "***"
    assert page["harvest_metadata_key"] == keys["old_variable"]


def _try(function, *args):
    try:
        return function(*args)
    except OSError:
        return None


def test_the_key_is_read_from_a_variable_the_page_masks():
    """The name the code reads is one Airflow counts as sensitive."""
    from airflow.sdk._shared.secrets_masker.secrets_masker import DEFAULT_SENSITIVE_FIELDS

    from harvest_airflow import LEGACY_METADATA_KEY_VARIABLE, METADATA_KEY_VARIABLE

    assert any(word in METADATA_KEY_VARIABLE for word in DEFAULT_SENSITIVE_FIELDS)
    assert not any(word in LEGACY_METADATA_KEY_VARIABLE for word in DEFAULT_SENSITIVE_FIELDS)
