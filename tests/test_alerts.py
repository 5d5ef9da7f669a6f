"""A failed or late nightly run tells someone: a webhook and an e-mail, through Airflow's notifiers on
failure and its deadline alert for a run still going at its deadline.

The settings are checked when the DAG file is parsed; the behaviour runs the real image_harvest DAG on a
real Airflow (API server, scheduler, DAG processor, triggerer; tests/resilience/local_cluster.py) with a
webhook receiver and an SMTP server on loopback.
"""

from __future__ import annotations

import json
import os
import smtplib
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from email import message_from_bytes
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import SimpleNamespace

import pytest
from conftest import _create_database, _drop_database, free_port
from resilience.local_cluster import local_cluster
from resilience.test_hostile_stuck_task import tarpit  # noqa: F401  (a site that never answers)

from harvest.settings.alerts import AlertSettings, alert_settings
from harvest.settings.errors import ConfigError
from harvest_airflow.alerts import alert_payload, webhook_url

REPO = Path(__file__).resolve().parents[1]


def test_alert_settings_from_the_environment():
    settings = alert_settings(
        {
            "HARVEST_ALERT_WEBHOOK_CONN": "ops_hook",
            "HARVEST_ALERT_EMAIL": "ops@example.org, data@example.org",
            "HARVEST_ALERT_FROM": "harvest@example.org",
            "HARVEST_RUN_DEADLINE_HOURS": "6",
        }
    )
    assert settings == AlertSettings(
        webhook_conn_id="ops_hook",
        smtp_conn_id="smtp_default",
        email_to=("ops@example.org", "data@example.org"),
        email_from="harvest@example.org",
        deadline_hours=6.0,
    )
    assert alert_settings({}) == AlertSettings() and not AlertSettings().any_channel


def test_every_bad_alert_setting_is_named_at_once():
    with pytest.raises(ConfigError) as raised:
        alert_settings({"HARVEST_ALERT_EMAIL": "ops-at-example", "HARVEST_RUN_DEADLINE_HOURS": "30"})
    message = str(raised.value)
    assert "HARVEST_ALERT_EMAIL: 'ops-at-example' is not an e-mail address" in message
    assert "HARVEST_RUN_DEADLINE_HOURS" in message
    with pytest.raises(ConfigError, match="no one would hear of a late run"):
        alert_settings({"HARVEST_RUN_DEADLINE_HOURS": "2"})


def test_webhook_url_from_an_http_connection():
    def conn(**fields):
        return SimpleNamespace(
            **{"host": None, "schema": None, "port": None, **fields},
            extra_dejson=fields.pop("extra", {}) if "extra" in fields else {},
        )

    assert webhook_url(conn(host="https://hooks.example.org/T0/B1")) == "https://hooks.example.org/T0/B1"
    assert webhook_url(conn(host="127.0.0.1", schema="http", port=8000)) == "http://127.0.0.1:8000"
    hook = SimpleNamespace(
        host="alerts.example.org", schema=None, port=None, extra_dejson={"endpoint": "/hook"}
    )
    assert webhook_url(hook) == "https://alerts.example.org/hook"


def test_the_payload_names_the_run_the_task_and_the_reason():
    ti = SimpleNamespace(
        dag_id="image_harvest", run_id="scheduled__x", task_id="validate", map_index=-1, try_number=1
    )
    payload = alert_payload({"ti": ti, "exception": ValueError("seed ftp://x is not http(s)")}, "failed")
    assert payload["dag_id"] == "image_harvest" and payload["task_id"] == "validate"
    assert payload["run_id"] == "scheduled__x" and "ftp://x" in payload["reason"]
    # a deadline callback gets the run as the REST API serialises it
    late = alert_payload(
        {"dag_run": {"dag_id": "image_harvest", "dag_run_id": "r1"}, "reason": "late"}, "late"
    )
    assert (late["event"], late["run_id"], late["task_id"]) == ("late", "r1", None)


def test_a_bad_alert_setting_stops_the_dag_file_loading(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "HARVEST_"))}
    env.update(
        AIRFLOW_HOME=str(tmp_path / "airflow"),
        HARVEST_HOME=str(tmp_path / "home"),
        HARVEST_ALERT_EMAIL="not-an-address",
        PYTHONPATH=str(REPO / "plugins"),
    )
    code = (
        "import importlib.util\n"
        f"spec = importlib.util.spec_from_file_location('image_harvest', {str(REPO / 'dags/image_harvest.py')!r})\n"
        "spec.loader.exec_module(importlib.util.module_from_spec(spec))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode != 0
    assert "HARVEST_ALERT_EMAIL: 'not-an-address' is not an e-mail address" in result.stderr


@contextmanager
def webhook_receiver() -> Iterator[tuple[str, list[dict]]]:
    received: list[dict] = []

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args) -> None:  # noqa: A002
            pass

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            received.append(
                {"path": self.path, "token": self.headers.get("X-Alert-Token"), **json.loads(body)}
            )
            self.send_response(204)
            self.end_headers()

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", received
    finally:
        server.shutdown()
        server.server_close()


@contextmanager
def smtp_receiver() -> Iterator[tuple[int, list]]:
    """A plain SMTP server on loopback (the standard library's smtpd) keeping every message it is given."""
    import asyncore
    import smtpd

    messages: list = []

    class Keeper(smtpd.SMTPServer):
        def process_message(self, peer, mailfrom, rcpttos, data, **kwargs):
            messages.append((mailfrom, rcpttos, message_from_bytes(data)))

    port = free_port()
    server = Keeper(("127.0.0.1", port), None, decode_data=False)
    thread = threading.Thread(target=asyncore.loop, kwargs={"timeout": 0.2}, daemon=True)
    thread.start()  # runs until the server's socket is closed
    try:
        smtplib.SMTP("127.0.0.1", port, timeout=5).quit()
        yield port, messages
    finally:
        server.close()
        thread.join(timeout=5)


@pytest.fixture
def metadata_db() -> Iterator[str]:
    name = f"harvest_alerts_meta_{uuid.uuid4().hex[:8]}"
    yield _create_database(name)
    _drop_database(name)


@pytest.mark.slow
def test_failed_and_late_runs_are_announced(tmp_path, tarpit, metadata_db, postgres_url):  # noqa: F811
    """Run 1 has an ftp seed: validate fails at once, the webhook and the mailbox hear of it. Run 2 crawls
    a site that never answers: 20 s after it was queued it is still going, and the triggerer's deadline
    callback announces it as late."""
    dags = tmp_path / "dags"
    dags.mkdir()
    (dags / "image_harvest.py").symlink_to(REPO / "dags" / "image_harvest.py")
    deadline_s = 20
    with webhook_receiver() as (hook_url, posts), smtp_receiver() as (smtp_port, mails):
        env = {
            "HARVEST_HOME": str(tmp_path / "harvest-home"),
            "HARVEST_DATABASE_URL": postgres_url,
            "HARVEST_ALLOW_PRIVATE_NETWORKS": "1",
            "HARVEST_ALERT_WEBHOOK_CONN": "harvest_alerts",
            "HARVEST_ALERT_EMAIL": "ops@example.org",
            "HARVEST_ALERT_FROM": "harvest@example.org",
            "HARVEST_RUN_DEADLINE_HOURS": str(deadline_s / 3600),
            "AIRFLOW_CONN_HARVEST_ALERTS": json.dumps(
                {
                    "conn_type": "http",
                    "host": f"{hook_url}/alerts",
                    "extra": {"headers": {"X-Alert-Token": "t0k"}},
                }
            ),
            "AIRFLOW_CONN_SMTP_DEFAULT": json.dumps(
                {
                    "conn_type": "smtp",
                    "host": "127.0.0.1",
                    "port": smtp_port,
                    "extra": {"disable_ssl": True, "disable_tls": True},
                }
            ),
        }
        with local_cluster(tmp_path / "cluster", metadata_db, free_port(), dags, env) as cluster:
            cluster.start("triggerer", "triggerer")
            cluster.wait_for_dag("image_harvest")
            cluster.cli("dags", "unpause", "image_harvest")
            failed = cluster.trigger(
                "image_harvest", {"seeds": ["ftp://example.org/"], "labels": ["goldfish"]}
            )
            assert cluster.wait_for_run("image_harvest", failed) == "failed"
            cluster.wait_for(
                "the failure alerts",
                lambda: any(p["event"] == "failed" and p["task_id"] == "validate" for p in posts) and mails,
                timeout=120,
            )
            late = cluster.trigger("image_harvest", {"seeds": [f"{tarpit}/"], "labels": ["goldfish"]})
            cluster.wait_for(
                "the late-run alert",
                lambda: any(p["event"] == "late" and p["run_id"] == late for p in posts),
                timeout=180,
            )
    failure = next(p for p in posts if p["event"] == "failed" and p["task_id"] == "validate")
    assert failure["run_id"] == failed and failure["dag_id"] == "image_harvest"
    assert "ftp://example.org/" in failure["reason"]
    assert failure["path"] == "/alerts" and failure["token"] == "t0k"
    sender, recipients, message = mails[0]
    assert sender == "harvest@example.org" and recipients == ["ops@example.org"]
    assert failed in message["Subject"] and "failed" in message["Subject"]
    lateness = next(p for p in posts if p["event"] == "late" and p["run_id"] == late)
    assert lateness["dag_id"] == "image_harvest" and "after it was queued" in lateness["reason"]
