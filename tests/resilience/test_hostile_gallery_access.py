"""The gallery inside a real Airflow API server shows a harvest only to users who may read its DAG.

It used to check the login alone: any logged-in user saw every run, whatever Airflow let them see,
and thumbnails went out as ``public, immutable`` for shared caches to keep. Now every route asks
Airflow's auth manager whether the user may read the runs of ``image_harvest``.

The simple auth manager's roles cannot deny one DAG and allow another (a viewer reads every DAG),
but its teams can: in multi-team mode a DAG belongs to the team of its bundle, and a user of another
team may not read it. So the server here runs in multi-team mode with the DAGs folder owned by the
team ``harvesters``: ``viewer`` (a viewer in that team) may read image_harvest, ``outsider`` (a
viewer in the team ``others``) may not, and Airflow's own REST API says the same.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from conftest import free_port
from PIL import Image

from harvest.state.db import dispose_engines, migrate, session_scope
from harvest.state.models import Image as ImageRow
from harvest.state.models import Run

REPO = Path(__file__).resolve().parents[2]
AIRFLOW = Path(sys.executable).with_name("airflow")
PASSWORDS = {
    "admin": "admin-test-password",
    "viewer": "viewer-test-password",
    "outsider": "outsider-test-password",
}
BUNDLES = [
    {
        "name": "dags-folder",
        "classpath": "airflow.dag_processing.bundles.local.LocalDagBundle",
        "kwargs": {},
        "team_name": "harvesters",
    }
]
RUN_ID = "manual__2026-12-01T00:00:00+00:00"


def _state_db(home: Path) -> tuple[str, str]:
    """A state DB with one run and one staged image; returns its URL and the image's sha256."""
    url = f"sqlite:///{home / 'state.db'}"
    migrate(url)
    out = io.BytesIO()
    Image.new("RGB", (320, 240), (200, 120, 40)).save(out, "JPEG")
    data = out.getvalue()
    sha = hashlib.sha256(data).hexdigest()
    key = f"images/{sha[:2]}/{sha}.jpg"
    (home / "staging" / key).parent.mkdir(parents=True)
    (home / "staging" / key).write_bytes(data)
    with session_scope(url) as session:
        session.add(Run(run_id=RUN_ID, params={"labels": ["daisy"]}))
        session.add(
            ImageRow(
                sha256=sha,
                staging=str(home / "staging"),
                storage_key=key,
                format="JPEG",
                mime_type="image/jpeg",
                width=320,
                height=240,
                size_bytes=len(data),
                first_url="http://example.org/a.jpg",
            )
        )
    dispose_engines()
    return url, sha


def _env(home: Path, database_url: str) -> dict[str, str]:
    passwords = home / "passwords.json"
    passwords.write_text(json.dumps(PASSWORDS))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "HARVEST_"))}
    env.update(
        AIRFLOW_HOME=str(home),
        AIRFLOW__CORE__DAGS_FOLDER=str(REPO / "dags"),
        AIRFLOW__CORE__PLUGINS_FOLDER=str(REPO / "plugins"),
        AIRFLOW__CORE__LOAD_EXAMPLES="False",
        AIRFLOW__CORE__MULTI_TEAM="True",
        AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS="admin:admin,viewer:viewer:harvesters,outsider:viewer:others",
        AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE=str(passwords),
        AIRFLOW__DAG_PROCESSOR__DAG_BUNDLE_CONFIG_LIST=json.dumps(BUNDLES),
        AIRFLOW__API_AUTH__JWT_SECRET="gallery-access-test-" + "x" * 64,
        PYTHONPATH=os.pathsep.join(filter(None, [str(REPO / "plugins"), env.get("PYTHONPATH")])),
        HARVEST_DATABASE_URL=database_url,
        HARVEST_HOME=str(home),
    )
    return env


@pytest.fixture(scope="module")
def airflow(tmp_path_factory) -> Iterator[tuple[str, str]]:
    """A real Airflow API server with the gallery plugin, in multi-team mode; yields its URL and the
    sha256 of the one image in the gallery's state DB."""
    home = tmp_path_factory.mktemp("airflow-teams")
    database_url, sha = _state_db(home)
    env = _env(home, database_url)
    commands = [["db", "migrate"], ["teams", "create", "harvesters"], ["teams", "create", "others"]]
    for command in [*commands, ["dags", "reserialize"]]:
        result = subprocess.run(
            [str(AIRFLOW), *command], env=env, capture_output=True, text=True, timeout=300
        )
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    port = free_port()
    log = home / "api-server.log"
    with log.open("w") as out:
        server = subprocess.Popen(
            [str(AIRFLOW), "api-server", "-H", "127.0.0.1", "-p", str(port), "-w", "1"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if requests.get(f"{url}/api/v2/monitor/health", timeout=2).status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            if server.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"Airflow API server did not start on {url}:\n{log.read_text()[-3000:]}")
            time.sleep(0.5)
        yield url, sha
    finally:
        os.killpg(server.pid, signal.SIGTERM)  # the server and the worker it started
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()


def _headers(url: str, user: str) -> dict[str, str]:
    body = {"username": user, "password": PASSWORDS[user]}
    response = requests.post(f"{url}/auth/token", json=body, timeout=30)
    assert response.status_code == 201, response.text
    return {"Authorization": f"Bearer {response.json()['access_token']}"}


def _gallery_paths(sha: str) -> list[str]:
    return [
        "/harvest/",
        "/harvest/api/runs",
        "/harvest/api/items",
        "/harvest/api/stats",
        f"/harvest/thumbnails/{sha}.jpg",
    ]


def test_a_user_who_may_not_read_the_harvest_dag_gets_403(airflow):
    url, sha = airflow
    headers = _headers(url, "outsider")
    # Airflow itself refuses this user the DAG and its runs ...
    assert (
        requests.get(f"{url}/api/v2/dags/image_harvest/dagRuns", headers=headers, timeout=30).status_code
        == 403
    )
    # ... and so does the gallery, on every route that shows data
    for path in _gallery_paths(sha):
        response = requests.get(f"{url}{path}", headers=headers, timeout=30)
        assert response.status_code == 403, (path, response.status_code, response.text[:200])
        assert "image_harvest" in response.json()["detail"]
    rethreshold = requests.post(
        f"{url}/harvest/api/rethreshold", json={"threshold": 0.3}, headers=headers, timeout=30
    )
    assert rethreshold.status_code == 403


def test_a_user_who_may_read_it_sees_the_gallery_with_private_thumbnails(airflow):
    url, sha = airflow
    for user in ("viewer", "admin"):
        headers = _headers(url, user)
        runs = requests.get(f"{url}/harvest/api/runs", headers=headers, timeout=30)
        assert runs.status_code == 200 and [r["run_id"] for r in runs.json()["runs"]] == [RUN_ID]
        thumbnail = requests.get(f"{url}/harvest/thumbnails/{sha}.jpg", headers=headers, timeout=30)
        assert thumbnail.status_code == 200, thumbnail.text
        assert thumbnail.headers["cache-control"] == "private, max-age=3600"


def test_without_a_login_the_gallery_answers_401(airflow):
    url, sha = airflow
    for path in _gallery_paths(sha):
        assert requests.get(f"{url}{path}", timeout=30).status_code == 401, path
