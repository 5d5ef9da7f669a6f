"""The gallery inside a real Airflow API server: the plugin mounts it, the navigation links to it, its
pages need an Airflow login, and its button starts a DAG run through Airflow's REST API."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
from conftest import free_port

from harvest.settings.params import HARVEST_PARAMS

from .browser import chromium, screenshot, screenshot_dir
from .conftest import RUN_ALL_LABELS

REPO = Path(__file__).resolve().parents[2]
AIRFLOW = Path(sys.executable).with_name("airflow")
#: The DAG the button triggers in this test; the default, image_rethreshold, is configurable.
TRIGGERED_DAG = "image_harvest"
PASSWORDS = {"admin": "admin-test-password", "viewer": "viewer-test-password"}


@dataclass(frozen=True)
class AirflowServer:
    url: str
    log: Path


def _env(harvested, home: Path) -> dict[str, str]:
    passwords = home / "passwords.json"
    passwords.write_text(json.dumps(PASSWORDS))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "HARVEST_"))}
    env.update(
        AIRFLOW_HOME=str(home),
        AIRFLOW__CORE__DAGS_FOLDER=str(REPO / "dags"),
        AIRFLOW__CORE__PLUGINS_FOLDER=str(REPO / "plugins"),
        AIRFLOW__CORE__LOAD_EXAMPLES="False",
        AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS="admin:admin,viewer:viewer",
        AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE=str(passwords),
        AIRFLOW__API_AUTH__JWT_SECRET="gallery-test-" + "x" * 64,
        PYTHONPATH=os.pathsep.join(filter(None, [str(REPO / "plugins"), env.get("PYTHONPATH")])),
        # the gallery finds the state DB through the same Airflow connection the DAG uses
        AIRFLOW_CONN_HARVEST_DB=harvested.database_url.replace("postgresql+psycopg2://", "postgresql://"),
        HARVEST_HOME=str(harvested.home),
        HARVEST_RETHRESHOLD_DAG=TRIGGERED_DAG,
    )
    return env


@pytest.fixture(scope="module")
def airflow_server(harvested, tmp_path_factory) -> Iterator[AirflowServer]:
    home = tmp_path_factory.mktemp("airflow-home")
    env = _env(harvested, home)
    for command in (["db", "migrate"], ["dags", "reserialize"]):
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
        yield AirflowServer(url=url, log=log)
    finally:
        os.killpg(server.pid, signal.SIGTERM)  # the server and the worker it started
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()


def _token(server: AirflowServer, user: str = "admin") -> str:
    body = {"username": user, "password": PASSWORDS[user]}
    response = requests.post(f"{server.url}/auth/token", json=body, timeout=30)
    assert response.status_code == 201, response.text
    return response.json()["access_token"]


def _signed_in_page(browser, server: AirflowServer, height: int):
    """A page of the Airflow UI as the admin: the cookie Airflow's login page would set."""
    context = browser.new_context(viewport={"width": 1280, "height": height})
    context.add_cookies([{"name": "_token", "value": _token(server), "url": server.url}])
    return context.new_page()


def test_gallery_routes_need_an_airflow_login(airflow_server):
    for path in ("/harvest/", "/harvest/api/items", f"/harvest/thumbnails/{'0' * 64}.jpg"):
        assert requests.get(f"{airflow_server.url}{path}", timeout=10).status_code == 401
    assert requests.get(f"{airflow_server.url}/harvest/openapi.json", timeout=10).status_code == 404
    anonymous = requests.post(
        f"{airflow_server.url}/harvest/api/rethreshold", json={"threshold": 0.3}, timeout=10
    )
    assert anonymous.status_code == 401
    headers = {"Authorization": f"Bearer {_token(airflow_server)}"}
    runs = requests.get(f"{airflow_server.url}/harvest/api/runs", headers=headers, timeout=30).json()
    assert RUN_ALL_LABELS in [run["run_id"] for run in runs["runs"]]
    plugins = requests.get(f"{airflow_server.url}/api/v2/plugins", headers=headers, timeout=30).json()
    gallery = next(p for p in plugins["plugins"] if p["name"] == "harvest_gallery")
    assert gallery["fastapi_apps"][0]["url_prefix"] == "/harvest"
    assert gallery["external_views"][0]["href"] == "/harvest/"


def test_a_viewer_sees_the_gallery_but_cannot_start_runs(airflow_server):
    """Airflow, not the gallery, decides who may trigger: the viewer role may not."""
    headers = {"Authorization": f"Bearer {_token(airflow_server, 'viewer')}"}
    items = requests.get(f"{airflow_server.url}/harvest/api/items", headers=headers, timeout=30)
    assert items.status_code == 200 and items.json()["total"] > 0
    response = requests.post(
        f"{airflow_server.url}/harvest/api/rethreshold", json={"threshold": 0.3}, headers=headers, timeout=30
    )
    assert response.status_code == 403 and "not allowed" in response.json()["detail"]


def test_gallery_from_the_airflow_navigation_starts_a_rethreshold_run(airflow_server, tmp_path):
    shots = screenshot_dir(tmp_path)
    base = airflow_server.url
    with chromium() as browser:
        page = _signed_in_page(browser, airflow_server, height=800)
        page.goto(f"{base}/")
        page.get_by_role("button", name="Browse").click()
        page.get_by_role("menuitem", name="Harvest gallery").wait_for()
        screenshot(page, shots, "airflow-navigation.png")
        page.get_by_role("menuitem", name="Harvest gallery").click()
        # the UI routes on the client: the address changes without a new document, and a busy
        # machine takes long over the first render of the plugin page
        page.wait_for_url("**/plugin/harvest-gallery", wait_until="commit", timeout=120_000)

        gallery = page.frame_locator("iframe")
        gallery.locator("#grid .card").first.wait_for()
        gallery.locator("#run").select_option(RUN_ALL_LABELS)
        frame = next(f for f in page.frames if f.url.startswith(f"{base}/harvest/"))
        frame.wait_for_function(
            "() => { const i = [...document.querySelectorAll('#grid img.thumb')];"
            " return i.length > 0 && i.every((x) => x.complete && x.naturalWidth > 0); }",
            timeout=20_000,
        )
        frame.fill("#threshold", "0.35")
        frame.click("#rethreshold")
        question = frame.text_content("#rethreshold-question")
        assert question == f"Start {TRIGGERED_DAG} at threshold 0.35 for run {RUN_ALL_LABELS}?"
        frame.click("#rethreshold-go")
        frame.wait_for_function(
            "() => /started|HTTP|not/.test(document.querySelector('#rethreshold-result').textContent)"
        )
        result = frame.text_content("#rethreshold-result")
        assert result.startswith(f"started {TRIGGERED_DAG} run "), result
        screenshot(page, shots, "airflow-gallery.png")

    run_id = result.rsplit(" ", 1)[-1]
    headers = {"Authorization": f"Bearer {_token(airflow_server)}"}
    run = requests.get(f"{base}/api/v2/dags/{TRIGGERED_DAG}/dagRuns/{run_id}", headers=headers, timeout=30)
    assert run.status_code == 200, run.text
    assert run.json()["conf"]["threshold"] == 0.35
    assert run.json()["conf"]["harvest_run_id"] == RUN_ALL_LABELS
    assert run.json()["run_type"] == "manual"


def test_the_trigger_form_shows_the_harvest_params(airflow_server, tmp_path):
    """Airflow renders image_harvest's trigger form from the Params in harvest.settings.params:
    their titles label the fields and their descriptions explain them, and with seeds and labels
    filled in (the optional fields left empty) the run can be triggered."""
    shots = screenshot_dir(tmp_path)
    base = airflow_server.url
    with chromium() as browser:
        page = _signed_in_page(browser, airflow_server, height=1000)
        page.goto(f"{base}/dags/{TRIGGERED_DAG}")
        page.get_by_test_id("trigger-dag-button").click(timeout=120_000)
        form = page.get_by_role("dialog")
        seeds = form.locator("#element_seeds")
        seeds.wait_for(timeout=60_000)
        for name in ("seeds", "labels", "threshold"):
            spec = HARVEST_PARAMS[name]
            assert form.locator("label", has_text=spec.title).first.is_visible(), spec.title
            assert form.get_by_text(spec.description, exact=True).count() == 1, spec.description
        seeds.fill("http://127.0.0.1:8000/index.html")
        form.locator("#element_labels").fill("Egyptian cat\nespresso\npalace\ndaisy")
        trigger = form.get_by_role("button", name="Trigger")
        trigger.wait_for(timeout=30_000)
        page.wait_for_timeout(500)  # the form validates on change
        screenshot(page, shots, "trigger-form.png")
        assert trigger.is_enabled(), "the form keeps its Trigger button disabled"
