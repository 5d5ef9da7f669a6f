"""A stuck task no longer blocks every later night. The nightly DAG runs one run at a time
(``max_active_runs=1``); every task now has an execution timeout per kind of task and the DAG a run
timeout under a day, both set from the environment when the DAG file is parsed.

The parse tests read the DAG files as Airflow does. The behavioural test runs the real image_harvest DAG
on a real Airflow (API server, scheduler with LocalExecutor, DAG processor; local_cluster.py) with both
timeouts lowered to seconds, and two real causes of a hang: a site that accepts connections and never
answers (the crawl waits on its 20 s read timeout, longer than the crawl's timeout), and a state DB table
another session keeps locked (a wait without end, in C, which no execution timeout interrupts).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy
from conftest import _create_database, _drop_database, free_port
from loopback_site import html, serve

from harvest.settings.config import RUN_TIMEOUT_HOURS, TASK_TIMEOUT_MINUTES

from .local_cluster import local_cluster, log_events, log_records, task_log

REPO = Path(__file__).resolve().parents[2]
HEAVY = (
    "tensorflow",
    "keras",
    "boto3",
    "bs4",
    "harvest.stages.crawl",
    "harvest.stages.classify",
    "harvest.state",
)
KINDS = {
    "validate": "validate",
    "crawl_seeds": "crawl",
    "extract_links": "extract",
    "download_images": "download",
    "classify_images": "classify",
    "select_keepers": "publish",
    "curate_keepers": "publish",
    "upload_images": "publish",
    "publish_images": "publish",
}
#: lowered for the behavioural test: the crawl's execution timeout and the run's timeout
CRAWL_TIMEOUT_S = 6
RUN_TIMEOUT_S = 45
READ_TIMEOUT_S = 20  # the HTTP client's, which the never-answering site makes the crawl wait for

PARSE = """
import importlib.util, json, sys
def load(name, attribute):
    spec = importlib.util.spec_from_file_location(name, {dags!r} + "/" + name + ".py")
    module = importlib.util.module_from_spec(spec); spec.loader.exec_module(module)
    return getattr(module, attribute)
harvest = load("image_harvest", "harvest_dag")
rethreshold = load("image_rethreshold", "rethreshold_dag")
def seconds(value):
    return None if value is None else value.total_seconds()
print(json.dumps({{
    "tasks": {{t.task_id: seconds(t.execution_timeout) for d in (harvest, rethreshold) for t in d.tasks}},
    "run_timeout": seconds(harvest.dagrun_timeout),
    "max_active_runs": harvest.max_active_runs,
    "download_tasks": harvest.get_task("download_images").max_active_tis_per_dagrun,
    "modules": sorted(sys.modules),
}}))
"""


def _parse(tmp_path: Path, **settings: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "HARVEST_"))}
    env.update(
        AIRFLOW_HOME=str(tmp_path / "airflow"),
        AIRFLOW__CORE__LOAD_EXAMPLES="False",
        HARVEST_HOME=str(tmp_path / "harvest-home"),
        **settings,
    )
    code = PARSE.format(dags=str(REPO / "dags"))
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)


def _parsed(tmp_path: Path, **settings: str) -> dict:
    result = _parse(tmp_path, **settings)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_every_task_has_an_execution_timeout_and_the_nightly_a_run_timeout(tmp_path):
    info = _parsed(tmp_path)
    assert [m for m in info["modules"] if m.startswith(HEAVY)] == []
    expected = {task: TASK_TIMEOUT_MINUTES[kind] * 60 for task, kind in KINDS.items()}
    expected["rethreshold"] = TASK_TIMEOUT_MINUTES["rethreshold"] * 60
    assert info["tasks"] == expected
    assert info["max_active_runs"] == 1
    assert info["download_tasks"] == 4  # HARVEST_DOWNLOAD_TASKS: the rest of the slots score shards
    # failed before the next night's run is due
    assert info["run_timeout"] == RUN_TIMEOUT_HOURS * 3600 < timedelta(days=1).total_seconds()
    # and a run that stops at every task's timeout, retries included, still ends in time
    assert sum(3 * expected[task] for task in KINDS) > info["run_timeout"]


def test_the_timeouts_are_set_from_the_environment_at_parse_time(tmp_path):
    info = _parsed(
        tmp_path,
        HARVEST_TASK_TIMEOUT_MINUTES="30",
        HARVEST_CRAWL_TIMEOUT_MINUTES="0.1",
        HARVEST_RUN_TIMEOUT_HOURS="2.5",
        HARVEST_DOWNLOAD_TASKS="12",
    )
    assert info["download_tasks"] == 12
    assert info["tasks"]["crawl_seeds"] == 6
    assert {task: info["tasks"][task] for task in KINDS if task != "crawl_seeds"} == dict.fromkeys(
        (task for task in KINDS if task != "crawl_seeds"), 1800
    )
    assert info["tasks"]["rethreshold"] == 1800
    assert info["run_timeout"] == 9000


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("HARVEST_DOWNLOAD_TIMEOUT_MINUTES", "0"),
        ("HARVEST_RUN_TIMEOUT_HOURS", "soon"),
        ("HARVEST_DOWNLOAD_TASKS", "2.5"),
        ("HARVEST_DOWNLOAD_TASKS", "0"),
    ],
)
def test_a_bad_timeout_setting_is_an_import_error_naming_it(tmp_path, name, value):
    result = _parse(tmp_path, **{name: value})
    assert result.returncode != 0
    assert f"invalid harvest settings: {name} must be" in result.stderr, result.stderr[-2000:]


@pytest.fixture
def tarpit() -> Iterator[str]:
    """A site that accepts every connection and never answers."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(64)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(server.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.getsockname()[1]}"
    finally:
        stop.set()
        thread.join(timeout=5)
        for conn in held:
            conn.close()
        server.close()


@pytest.fixture
def metadata_db() -> Iterator[str]:
    name = f"harvest_stuck_meta_{uuid.uuid4().hex[:8]}"
    yield _create_database(name)
    _drop_database(name)


@contextmanager
def table_locked(database_url: str, table: str) -> Iterator[None]:
    """Another session holding an exclusive lock on ``table`` and never finishing its transaction (an
    operator's forgotten ``BEGIN; LOCK ...`` or a stuck process): whoever touches the table waits."""
    engine = sqlalchemy.create_engine(database_url)
    try:
        with engine.connect() as conn:
            conn.execute(sqlalchemy.text(f"LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE"))
            try:
                yield
            finally:
                conn.rollback()
    finally:
        engine.dispose()


def _terminated_log(cluster, run_id: str) -> list[str]:
    """The extract task's log events once its supervisor has written that it ended the task, else []."""
    events = log_events(task_log(cluster, "image_harvest", run_id, "extract_links", attempt=1))
    return events if any("Terminating process" in event for event in events) else []


def _run(cluster, run_id: str) -> dict:
    ((state, start, end),) = cluster.query(
        "SELECT state, start_date, end_date FROM dag_run WHERE dag_id = 'image_harvest' AND run_id = :r",
        r=run_id,
    )
    return {"state": state, "start": start, "end": end}


def _task_state(cluster, run_id: str, task_id: str) -> str | None:
    rows = cluster.query(
        "SELECT state FROM task_instance WHERE dag_id = 'image_harvest' AND run_id = :r AND task_id = :t",
        r=run_id,
        t=task_id,
    )
    return rows[0][0] if rows else None


def _timeout_fired_after(records: list[dict]) -> float | None:
    """Seconds from the start of the task's execute (the end of its pre-execute group) to Airflow's
    "Process timed out", or None when it did not time out."""
    events = [(record.get("event"), record.get("timestamp")) for record in records]
    started = next((at for event, at in events if event == "::endgroup::"), None)
    fired = next((at for event, at in events if event == "Process timed out"), None)
    if started is None or fired is None:
        return None
    return round(_seconds(datetime.fromisoformat(fired), datetime.fromisoformat(started)), 1)


def _seconds(later, earlier) -> float:
    return (later - earlier).total_seconds()


@pytest.mark.slow
def test_a_hanging_task_fails_on_its_timeout_and_the_next_run_starts(
    tmp_path, tarpit, metadata_db, postgres_url
):
    """Three runs queued one behind the other. The first crawls the never-answering site: its crawl
    fails on its execution timeout and the run at its run timeout. The second crawls a good site, but
    its extract waits for ever on a table another session keeps locked (a wait no execution timeout
    interrupts): the run is failed at its run timeout and its stuck task ended. The third starts."""
    dags = tmp_path / "dags"
    dags.mkdir()
    (dags / "image_harvest.py").symlink_to(REPO / "dags" / "image_harvest.py")
    env = {
        "HARVEST_HOME": str(tmp_path / "harvest-home"),
        "HARVEST_DATABASE_URL": postgres_url,
        "HARVEST_ALLOW_PRIVATE_NETWORKS": "1",
        "HARVEST_CRAWL_TIMEOUT_MINUTES": str(CRAWL_TIMEOUT_S / 60),
        "HARVEST_RUN_TIMEOUT_HOURS": str(RUN_TIMEOUT_S / 3600),
    }
    with serve() as site, local_cluster(tmp_path / "cluster", metadata_db, free_port(), dags, env) as cluster:
        site.routes["/"] = html('<img src="/photo.jpg" width="300" height="200">')
        good = {"seeds": [f"{site.base}/"], "labels": ["goldfish"]}
        cluster.wait_for_dag("image_harvest")
        cluster.cli("dags", "unpause", "image_harvest")
        first = cluster.trigger("image_harvest", {"seeds": [f"{tarpit}/"], "labels": ["goldfish"]})
        second = cluster.trigger("image_harvest", good)  # queued: one run at a time
        third = cluster.trigger("image_harvest", good)
        cluster.wait_for("the schema", lambda: _task_state(cluster, first, "validate") == "success")
        with table_locked(postgres_url, "candidates"):
            cluster.wait_for_run("image_harvest", first, timeout=RUN_TIMEOUT_S + 120)
            cluster.wait_for_run("image_harvest", second, timeout=RUN_TIMEOUT_S + 120)
            started = cluster.wait_for(
                "the third run to start",
                lambda: (run := _run(cluster, third))["start"] is not None and run,
                timeout=60,
            )
            runs = [_run(cluster, run_id) for run_id in (first, second)]
            stuck_tasks = {
                task: _task_state(cluster, second, task) for task in ("crawl_seeds", "extract_links")
            }
            # the supervisor writes its last lines once it has ended the task (before the lock goes)
            extract_log = cluster.wait_for(
                "the stuck extract's log to end", lambda: _terminated_log(cluster, second), timeout=60
            )
        crawl_log = log_records(task_log(cluster, "image_harvest", first, "crawl_seeds", attempt=1))
        tries = cluster.query(
            "SELECT try_number, state, start_date, end_date FROM task_instance_history "
            "WHERE dag_id = 'image_harvest' AND run_id = :r AND task_id = 'crawl_seeds' ORDER BY try_number",
            r=first,
        )
    fired = _timeout_fired_after(crawl_log)
    print(
        f"\ncrawl timeout fired {fired} s into the crawl; first run: {runs[0]['state']} after {_seconds(runs[0]['end'], runs[0]['start']):.1f} s, crawl tries "
        f"{[(n, st, round(_seconds(e, b), 1)) for n, st, b, e in tries]}; second run: {runs[1]['state']} after "
        f"{_seconds(runs[1]['end'], runs[1]['start']):.1f} s, tasks {stuck_tasks}; third run started "
        f"{_seconds(started['start'], runs[1]['end']):.1f} s after"
    )
    # the first run's crawl failed on its execution timeout, before the site's read timeout
    assert fired is not None and CRAWL_TIMEOUT_S <= fired < READ_TIMEOUT_S, crawl_log
    assert tries and tries[0][1] in ("failed", "up_for_retry")
    for run in runs:  # each run was failed at its run timeout, not left to hang or to its retries
        assert run["state"] == "failed"
        assert RUN_TIMEOUT_S <= _seconds(run["end"], run["start"]) < RUN_TIMEOUT_S + 30
    assert stuck_tasks == {"crawl_seeds": "success", "extract_links": "skipped"}
    # the stuck extract's process was ended by its supervisor once the run was failed
    assert "Server indicated the task shouldn't be running anymore. Terminating process" in extract_log
    # and each next run started once the one before it ended
    assert runs[1]["start"] >= runs[0]["end"] and started["start"] >= runs[1]["end"]
