"""docs/airflow.md, step by step, against a real scheduler, DAG processor and API server.

Each ``<!-- step: name -->`` shell block of the page is run by bash as written; only the addresses
change (the test's API server and demo site listen on free ports, not 8080 and 8000). The Airflow
side is what ``make airflow`` starts: the simple auth manager with user ``admin`` and a passwords
file, the DAGs unpaused at creation, Postgres as metadata database and the LocalExecutor.
Prints each step's HTTP code and time (``pytest -s``) and writes them to ``$HARVEST_WALKTHROUGH_LOG``.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import subprocess
import time
import uuid
from pathlib import Path

import pytest
from airflow_cluster import AirflowCluster
from conftest import _create_database, _drop_database, free_port

from harvest.demo_site import DEMO_LABELS
from harvest.state.db import session_scope
from harvest.state.models import Run

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
DOC = REPO / "docs" / "airflow.md"
STEP = re.compile(r"<!-- step: (\S+) -->\s*```sh\n(.*?)```", re.S)
TIMINGS: list[dict] = []


def steps() -> dict[str, str]:
    return dict(STEP.findall(DOC.read_text()))


@pytest.fixture(scope="module")
def walkthrough(tmp_path_factory, site):
    names = {role: f"harvest_walk_{role}_{uuid.uuid4().hex[:8]}" for role in ("meta", "state")}
    urls = {role: _create_database(name) for role, name in names.items()}
    clone = tmp_path_factory.mktemp("clone")  # the working copy the commands run in
    passwords = clone / ".harvest" / "airflow" / "passwords.json"
    passwords.parent.mkdir(parents=True)
    passwords.write_text(json.dumps({"admin": secrets.token_urlsafe(12)}))
    home = clone / ".harvest"
    env = {
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "admin:admin",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(passwords),
        "AIRFLOW_CONN_HARVEST_DB": urls["state"].replace("+psycopg2", ""),
        "HARVEST_HOME": str(home),
        "HARVEST_LOCAL_ROOTS": str(clone),
        "HARVEST_ALLOW_PRIVATE_NETWORKS": "1",
        "HARVEST_HOST_DELAY": "0.01",
        "HARVEST_SHARDS": "2",
        # what the nightly crawls: a backfilled date that never ran starts from these
        "HARVEST_SEEDS": f"{site}/index.html",
        "HARVEST_LABELS": ",".join(DEMO_LABELS),
    }
    for name in ("HARVEST_DESTINATION", "HARVEST_DATABASE_URL", "HARVEST_PROFILE", "HARVEST_STAGING"):
        os.environ.pop(name, None)
    api_port = free_port()
    cluster = AirflowCluster(clone, urls["meta"], "redis://127.0.0.1:6379/15", api_port, {})
    cluster.env.update(env)  # after the helper's Celery defaults, which these replace
    try:
        cluster.cli("db", "migrate", timeout=300)
        cluster.start("api-server", "api-server", "--port", str(api_port), "--host", "127.0.0.1")
        cluster.start("scheduler", "scheduler")
        cluster.start("dag-processor", "dag-processor")
        cluster.wait_for_dag("image_harvest")
        cluster.wait_for("the API server", lambda: _answers(f"http://127.0.0.1:{api_port}/api/v2/version"))
        yield {
            "cluster": cluster,
            "clone": clone,
            "api": f"http://127.0.0.1:{api_port}",
            "site": site,
            "state_url": urls["state"],
            "dataset": home / "dataset",
        }
    finally:
        cluster.stop()
        log = os.environ.get("HARVEST_WALKTHROUGH_LOG")
        if log:
            Path(log).write_text(json.dumps(TIMINGS, indent=1))
        for name in names.values():
            _drop_database(name)


def _answers(url: str) -> bool:
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=5):
            return True
    except OSError as exc:
        return getattr(exc, "code", None) in (401, 403)


def run_step(walk: dict, name: str, env: dict[str, str], tail: str = "") -> tuple[int | None, str]:
    """One block of docs/airflow.md in bash (``set -eo pipefail``); its HTTP code and output."""
    script = steps()[name]
    script = script.replace("http://localhost:8080", walk["api"]).replace(
        "http://127.0.0.1:8000", walk["site"]
    )
    started = time.monotonic()
    result = subprocess.run(
        ["bash", "-eo", "pipefail", "-c", script + tail],
        env={**os.environ, **env},
        cwd=walk["clone"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    elapsed = time.monotonic() - started
    assert result.returncode == 0, f"step {name}: {result.stdout}\n{result.stderr}"
    codes = re.findall(r"^HTTP (\d{3})$", result.stdout, re.M)
    code = int(codes[-1]) if codes else None
    TIMINGS.append({"step": name, "http": code, "seconds": round(elapsed, 2)})
    print(f"step {name}: HTTP {code} in {elapsed:.2f}s")
    return code, result.stdout


def body(output: str) -> dict:
    return json.loads(output.rsplit("\nHTTP ", 1)[0])


def wait_for_runs(walk: dict, run_ids: list[str], timeout: float = 600) -> dict[str, str]:
    cluster: AirflowCluster = walk["cluster"]
    started = time.monotonic()
    states = {run_id: cluster.wait_for_run("image_harvest", run_id, timeout=timeout) for run_id in run_ids}
    TIMINGS.append({"wait": run_ids, "states": states, "seconds": round(time.monotonic() - started, 1)})
    print(f"runs {states} after {time.monotonic() - started:.1f}s")
    return states


def recorded(walk: dict, scope: str) -> dict:
    with session_scope(walk["state_url"]) as session:
        run = session.get(Run, scope)
        return dict(run.params) if run else {}


def manifest_of(walk: dict, run_id: str) -> tuple[str, bytes]:
    """The run's manifest (compared without punctuation: file names may carry the run id slugged)."""
    key = re.sub(r"\W", "", run_id)
    [(name, data)] = [
        (n, d) for n, d in manifests(walk).items() if re.sub(r"\W", "", n[: -len(".jsonl")]) == key
    ]
    return name, data


def manifests(walk: dict) -> dict[str, bytes]:
    folder = walk["dataset"] / "manifests"
    return {p.name: p.read_bytes() for p in sorted(folder.glob("*.jsonl"))} if folder.is_dir() else {}


def test_the_airflow_page_as_written(walkthrough):
    walk = walkthrough
    # 2. login: a JWT from the admin password
    code, token = run_step(walk, "login", {}, tail='\nprintf "%s" "$TOKEN"')
    token = token.strip().splitlines()[-1]
    assert token.count(".") == 2, token  # header.payload.signature
    # what the login block set stays set in the reader's shell for the next blocks
    env = {"TOKEN": token, "AIRFLOW": walk["api"], "DEMO": walk["site"]}

    # 3. trigger with conf: the demo site's four photos, one per label
    code, out = run_step(walk, "trigger", env)
    assert code == 200, out
    run_id = body(out)["dag_run_id"]
    assert run_id.startswith("manual__")
    env["RUN_ID"] = run_id
    assert wait_for_runs(walk, [run_id]) == {run_id: "success"}
    code, out = run_step(walk, "run-state", env)
    assert code == 200 and body(out)["state"] == "success"
    manifest_name, manifest = manifest_of(walk, run_id)  # the nightly of the day may have run too
    assert sorted(json.loads(line)["label"] for line in manifest.splitlines()) == [
        "daisy",
        "egyptian_cat",
        "espresso",
        "palace",
    ]

    # 4. clear one mapped download shard and what follows: the run succeeds again, no byte changes
    code, out = run_step(walk, "clear", env)
    assert code == 200, out
    cleared = {(ti["task_id"], ti.get("map_index")) for ti in body(out)["task_instances"]}
    assert ("download_images", 0) in cleared and ("download_images", 1) not in cleared
    walk["cluster"].wait_for(
        "the cleared run to start again",
        lambda: walk["cluster"].run_state("image_harvest", run_id) != "success",
        timeout=60,
        interval=0.5,
    )
    assert wait_for_runs(walk, [run_id]) == {run_id: "success"}
    assert manifests(walk)[manifest_name] == manifest
    assert manifest_of(walk, run_id) == (manifest_name, manifest)

    # 5. backfill two dates with a partial conf: the nightly's seeds and labels, max_depth from the conf
    code, out = run_step(walk, "backfill", env)
    assert code == 200, out
    dates = ("2026-11-01T00:00:00+00:00", "2026-11-02T00:00:00+00:00")
    backfill_runs = [f"backfill__{date}" for date in dates]
    walk["cluster"].wait_for(
        "the backfill's runs",
        lambda: all(walk["cluster"].run_state("image_harvest", r) for r in backfill_runs),
        timeout=120,
    )
    assert wait_for_runs(walk, backfill_runs) == dict.fromkeys(backfill_runs, "success")
    for date in dates:
        params = recorded(walk, f"interval__{date}")
        assert params["seeds"] == [f"{walk['site']}/index.html"] and params["max_depth"] == 1
        assert params["threshold"] == pytest.approx(0.2)

    # one backfill at a time: the next is accepted once the scheduler marks this one complete
    walk["cluster"].wait_for(
        "the backfill to be marked complete",
        lambda: not walk["cluster"].query("SELECT id FROM backfill WHERE completed_at IS NULL"),
        timeout=120,
        interval=1,
    )
    code, out = run_step(walk, "backfills", env)
    assert code == 200 and all(b["completed_at"] for b in body(out)["backfills"]), out

    # the reprocess of one date: its recorded settings, the conf's threshold only
    before = manifests(walk)
    code, out = run_step(walk, "reprocess", env)
    assert code == 200, out
    reprocessed = backfill_runs[0]
    walk["cluster"].wait_for(
        "the reprocess to start",
        lambda: (
            recorded(walk, f"interval__{dates[0]}").get("threshold") == 0.5
            or walk["cluster"].run_state("image_harvest", reprocessed) not in ("success",)
        ),
        timeout=120,
        interval=0.5,
    )
    assert wait_for_runs(walk, [reprocessed]) == {reprocessed: "success"}
    params = recorded(walk, f"interval__{dates[0]}")
    assert params["threshold"] == 0.5
    assert params["max_depth"] == 1 and params["seeds"] == [f"{walk['site']}/index.html"]
    assert params["labels"] == list(DEMO_LABELS)
    after = manifests(walk)
    assert set(before) <= set(after)  # no manifest of an earlier run is gone
    assert all(after[name] for name in after)


def test_a_run_with_nothing_to_crawl_is_skipped_and_says_why(walkthrough):
    """A trigger whose conf empties the seeds is skipped like a nightly without configuration would be,
    and the reason is the validate task's XCom ``summary``."""
    walk = walkthrough
    code, token = run_step(walk, "login", {}, tail='\nprintf "%s" "$TOKEN"')
    token = token.strip().splitlines()[-1]
    import urllib.request

    request = urllib.request.Request(
        f"{walk['api']}/api/v2/dags/image_harvest/dagRuns",
        data=json.dumps({"logical_date": None, "conf": {"seeds": []}}).encode(),
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        run_id = json.load(response)["dag_run_id"]
    assert wait_for_runs(walk, [run_id]) == {run_id: "success"}
    states = dict(
        walk["cluster"].query(
            "SELECT task_id, state FROM task_instance WHERE dag_id = 'image_harvest' AND run_id = :r",
            r=run_id,
        )
    )
    assert states["validate"] == "skipped"
    request = urllib.request.Request(
        f"{walk['api']}/api/v2/dags/image_harvest/dagRuns/{run_id}/taskInstances/validate/xcomEntries/summary",
        headers={"Authorization": f"Bearer {token}"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        summary = json.load(response)["value"]
    assert "nothing to crawl" in str(summary)
