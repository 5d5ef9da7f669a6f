"""A real Airflow deployment for the tests: scheduler, DAG processor, API server and Celery workers.

Everything runs as separate processes against this machine's Postgres (metadata DB and Celery results)
and Redis (broker), the way docker-compose.yaml runs it, only without containers.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import sqlalchemy

REPO = Path(__file__).resolve().parents[1]
AIRFLOW = [sys.executable, "-m", "airflow"]


class AirflowCluster:
    def __init__(self, workdir: Path, metadata_url: str, broker_url: str, api_port: int, extra_env: dict):
        self.workdir = workdir
        self.metadata_url = metadata_url
        self.processes: dict[str, subprocess.Popen] = {}
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
        self.env.update(
            AIRFLOW_HOME=str(workdir / "airflow"),
            AIRFLOW__CORE__DAGS_FOLDER=str(REPO / "dags"),
            AIRFLOW__CORE__PLUGINS_FOLDER=str(REPO / "plugins"),
            AIRFLOW__CORE__LOAD_EXAMPLES="False",
            AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION="True",
            AIRFLOW__CORE__EXECUTOR="CeleryExecutor",
            AIRFLOW__CORE__EXECUTION_API_SERVER_URL=f"http://127.0.0.1:{api_port}/execution/",
            AIRFLOW__DATABASE__SQL_ALCHEMY_CONN=metadata_url,
            AIRFLOW__CELERY__BROKER_URL=broker_url,
            AIRFLOW__CELERY__RESULT_BACKEND="db+" + metadata_url,
            AIRFLOW__CELERY__WORKER_PREFETCH_MULTIPLIER="1",
            AIRFLOW__API_AUTH__JWT_SECRET=secrets.token_hex(16),
            AIRFLOW__API__PORT=str(api_port),
            AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL="5",
            AIRFLOW__SCHEDULER__TASK_QUEUED_TIMEOUT="300",
            **extra_env,
        )
        self.api_port = api_port

    def _log(self, name: str) -> Path:
        return self.workdir / f"{name}.log"

    def cli(self, *args: str, timeout: float = 180) -> str:
        result = subprocess.run(
            [*AIRFLOW, *args], env=self.env, capture_output=True, text=True, timeout=timeout, cwd=self.workdir
        )
        if result.returncode:
            raise RuntimeError(
                f"airflow {' '.join(args)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
            )
        return result.stdout

    def start(self, name: str, *args: str, **env: str) -> None:
        handle = self._log(name).open("w")
        self.processes[name] = subprocess.Popen(
            [*AIRFLOW, *args],
            env={**self.env, **env},
            stdout=handle,
            stderr=subprocess.STDOUT,
            cwd=self.workdir,
            start_new_session=True,
        )

    def stop(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        deadline = time.monotonic() + 20
        for process in self.processes.values():
            try:
                process.wait(timeout=max(deadline - time.monotonic(), 0.1))
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)

    def logs(self, lines: int = 40) -> str:
        parts = []
        for name in self.processes:
            text = self._log(name).read_text(errors="replace").splitlines()[-lines:]
            parts.append(f"--- {name}\n" + "\n".join(text))
        return "\n".join(parts)

    def query(self, sql: str, **params) -> list[tuple]:
        engine = sqlalchemy.create_engine(self.metadata_url)
        try:
            with engine.connect() as conn:
                return [tuple(row) for row in conn.execute(sqlalchemy.text(sql), params)]
        finally:
            engine.dispose()

    def wait_for(self, what: str, check, timeout: float = 240, interval: float = 2) -> object:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for name, process in self.processes.items():
                if process.poll() is not None:
                    raise RuntimeError(
                        f"{name} exited with {process.returncode} while waiting for {what}\n{self.logs()}"
                    )
            value = check()
            if value:
                return value
            time.sleep(interval)
        raise TimeoutError(f"timed out after {timeout}s waiting for {what}\n{self.logs()}")

    def wait_for_dag(self, dag_id: str) -> None:
        self.wait_for(
            f"DAG {dag_id} to be parsed",
            lambda: self.query(
                "SELECT 1 FROM dag WHERE dag_id = :dag_id AND is_stale IS FALSE", dag_id=dag_id
            ),
        )

    def run_state(self, dag_id: str, run_id: str) -> str | None:
        rows = self.query("SELECT state FROM dag_run WHERE dag_id = :d AND run_id = :r", d=dag_id, r=run_id)
        return rows[0][0] if rows else None

    def wait_for_run(self, dag_id: str, run_id: str, timeout: float = 300) -> str:
        return self.wait_for(
            f"run {run_id} to finish",
            lambda: (state := self.run_state(dag_id, run_id)) in ("success", "failed") and state,
            timeout=timeout,
        )

    def trigger(self, dag_id: str, conf: dict) -> str:
        out = self.cli("dags", "trigger", dag_id, "--conf", json.dumps(conf), "--output", "json")
        return json.loads(out[out.index("[{") :])[0]["dag_run_id"]


WORKER_IDENTITY = """import os


def name() -> str:
    return os.environ.get("HARVEST_TEST_WORKER", "scheduler-host")
"""


@contextmanager
def celery_cluster(
    workdir: Path, metadata_url: str, broker_url: str, ports: list[int], workers: int, env: dict
) -> Iterator[AirflowCluster]:
    """Both workers run on this machine; each reports its own host name so the test can tell them apart."""
    api_port, *log_ports = ports
    (workdir / "worker_identity.py").write_text(WORKER_IDENTITY)
    env = {
        **env,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(workdir), os.environ.get("PYTHONPATH")])),
        "AIRFLOW__CORE__HOSTNAME_CALLABLE": "worker_identity.name",
    }
    cluster = AirflowCluster(workdir, metadata_url, broker_url, api_port, env)
    try:
        cluster.cli("db", "migrate", timeout=300)
        cluster.start("api-server", "api-server", "--port", str(api_port), "--host", "127.0.0.1")
        cluster.start("scheduler", "scheduler")
        cluster.start("dag-processor", "dag-processor")
        for number in range(1, workers + 1):
            cluster.start(
                f"worker{number}",
                "celery",
                "worker",
                "--celery-hostname",
                f"worker{number}@harvest-test",
                "--concurrency",
                "1",
                "--without-gossip",
                "--without-mingle",
                AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT=str(log_ports[number - 1]),
                HARVEST_TEST_WORKER=f"worker{number}",
            )
        yield cluster
    finally:
        cluster.stop()
