"""A small real Airflow for the tests: API server, scheduler and DAG processor on this machine's
Postgres, with a DAGs folder of the test's choosing, and either the LocalExecutor (tasks run under the
scheduler) or one Celery worker on this machine's Redis (as docker-compose.yaml runs it). Each task runs
the way it runs in production: a supervisor process forks the task process, which talks to the API
server, and the task log is written by the supervisor under ``$AIRFLOW_HOME/logs``."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from airflow_cluster import AirflowCluster
from conftest import free_port


@contextmanager
def local_cluster(
    workdir: Path,
    metadata_url: str,
    api_port: int,
    dags_folder: Path,
    env: dict[str, str],
    executor: str = "LocalExecutor",
) -> Iterator[AirflowCluster]:
    workdir.mkdir(parents=True, exist_ok=True)
    broker = f"redis://127.0.0.1:6379/{9 + uuid.uuid4().int % 6}"
    cluster = AirflowCluster(workdir, metadata_url, broker, api_port, {})
    cluster.env.update(
        AIRFLOW__CORE__EXECUTOR=executor,
        AIRFLOW__CORE__PARALLELISM="2",
        AIRFLOW__CORE__DAGS_FOLDER=str(dags_folder),
        AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC="2",
        **env,
    )
    try:
        cluster.cli("db", "migrate", timeout=300)
        cluster.start("api-server", "api-server", "--port", str(api_port), "--host", "127.0.0.1", "-w", "1")
        cluster.start("scheduler", "scheduler")
        cluster.start("dag-processor", "dag-processor")
        if executor == "CeleryExecutor":
            cluster.start(
                "worker",
                "celery",
                "worker",
                "--concurrency",
                "1",
                "--without-gossip",
                "--without-mingle",
                AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT=str(free_port()),
            )
        yield cluster
    finally:
        cluster.stop()


def task_log(cluster: AirflowCluster, dag_id: str, run_id: str, task_id: str, attempt: int = 1) -> str:
    """The task log the supervisor wrote (JSON lines), as text; empty when there is none yet."""
    folder = cluster.workdir / "airflow" / "logs" / f"dag_id={dag_id}" / f"run_id={run_id}"
    path = folder / f"task_id={task_id}" / f"attempt={attempt}.log"
    return path.read_text(errors="replace") if path.exists() else ""


def log_records(text: str) -> list[dict]:
    """Every JSON line of a task log (a line that is not JSON becomes its ``event``)."""
    records = []
    for line in text.splitlines():
        try:
            records.append(json.loads(line))
        except ValueError:
            records.append({"event": line})
    return records


def log_events(text: str) -> list[str]:
    """The ``event`` (message) of every line of a task log."""
    return [str(record.get("event", "")) for record in log_records(text)]
