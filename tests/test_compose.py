"""Checks of the docker-compose stack (docker-compose.yaml, docker/) that need no Docker engine."""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography.fernet import Fernet

ROOT = Path(__file__).resolve().parents[1]
COMPOSE_FILE = ROOT / "docker-compose.yaml"
DOCKERFILE = ROOT / "docker" / "Dockerfile"
POSTGRES_INIT = ROOT / "docker" / "postgres-init"


def _load_compose_env():
    spec = importlib.util.spec_from_file_location("compose_env", ROOT / "scripts" / "compose_env.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_compose_env = _load_compose_env()
read_env, write_env = _compose_env.read_env, _compose_env.write_env

AIRFLOW_SERVICES = {
    "airflow-init",
    "airflow-apiserver",
    "airflow-scheduler",
    "airflow-dag-processor",
    "airflow-triggerer",
    "airflow-worker",
}
EXPECTED_SERVICES = AIRFLOW_SERVICES | {"postgres", "redis", "minio", "createbuckets"}

_DEFAULTED_VAR = re.compile(r"\$\{(\w+):-([^}]*)\}")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    with COMPOSE_FILE.open() as f:
        return yaml.safe_load(f)  # SafeLoader resolves the `<<: *airflow-common` merge keys


def _services(compose: dict[str, Any]) -> dict[str, Any]:
    return compose["services"]


def _env(compose: dict[str, Any], service: str) -> dict[str, str]:
    return {k: str(v) for k, v in _services(compose)[service]["environment"].items()}


def _with_defaults(value: str) -> str:
    """Resolve ``${VAR:-default}`` to its default, as compose does when VAR is unset."""
    return _DEFAULTED_VAR.sub(lambda m: m.group(2), value)


def _mount_targets(service: dict[str, Any]) -> set[str]:
    return {_with_defaults(volume).split(":")[1] for volume in service["volumes"]}


def _docker_compose() -> str:
    binary = shutil.which("docker-compose")
    if binary is None:
        pytest.fail(
            "the docker-compose binary is not on PATH; install it with "
            "`apt-get update && apt-get install -y docker-compose` to validate docker-compose.yaml"
        )
    return binary


def _run_compose(tmp_path: Path, *args: str, generated: bool = True) -> subprocess.CompletedProcess[str]:
    # A minimal environment and the .env `make compose-env` writes (or an empty one): every other setting
    # must work with nothing configured.
    env_file = tmp_path / "compose.env"
    env_file.write_text("")
    if generated:
        write_env(env_file)
    return subprocess.run(
        [_docker_compose(), "--env-file", str(env_file), "-f", str(COMPOSE_FILE), *args],
        cwd=ROOT,
        env={"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_expected_services_exist(compose):
    missing = EXPECTED_SERVICES - set(_services(compose))
    assert not missing, f"services missing from docker-compose.yaml: {sorted(missing)}"


def test_airflow_services_share_the_project_image(compose):
    common = compose["x-airflow-common"]
    assert common["build"]["dockerfile"] == "docker/Dockerfile"
    for name in AIRFLOW_SERVICES:
        service = _services(compose)[name]
        assert service["image"] == common["image"], name
        assert service["build"] == common["build"], name


def test_dockerfile_extends_airflow_332_and_installs_pinned_requirements():
    text = DOCKERFILE.read_text()
    assert re.search(r"^FROM apache/airflow:3\.3\.2-python3\.11\s*$", text, re.MULTILINE)
    assert "requirements.txt" in text and "constraints.txt" in text
    assert re.search(r"pip install .*-r \S*requirements\.txt\s.*-c \S*constraints\.txt", text, re.DOTALL)


def test_celery_executor_everywhere(compose):
    for name in AIRFLOW_SERVICES:
        env = _env(compose, name)
        assert env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor", name
        assert env["AIRFLOW__CELERY__BROKER_URL"].startswith("redis://"), name
        assert env["AIRFLOW__CELERY__RESULT_BACKEND"].startswith("db+postgresql://"), name
        assert env["AIRFLOW__CORE__LOAD_EXAMPLES"] == "false", name


def test_airflow3_settings(compose):
    env = _env(compose, "airflow-worker")
    assert env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] == "http://airflow-apiserver:8080/execution/"
    # no secret has a default in the file: `make compose-env` generates them into .env
    assert env["AIRFLOW__API_AUTH__JWT_SECRET"].startswith("${AIRFLOW__API_AUTH__JWT_SECRET:?")
    assert env["AIRFLOW__CORE__FERNET_KEY"].startswith("${AIRFLOW__CORE__FERNET_KEY:?")
    assert "/opt/airflow/plugins" in env["PYTHONPATH"].split(":")
    services = _services(compose)
    assert services["airflow-apiserver"]["command"] == "api-server"
    assert "8080" in services["airflow-apiserver"]["ports"][0]
    assert services["airflow-worker"]["command"] == "celery worker"
    assert services["airflow-dag-processor"]["command"] == "dag-processor"
    assert "airflow db migrate" in services["airflow-init"]["command"][-1]


def test_worker_mounts_project_code_and_can_scale(compose):
    worker = _services(compose)["airflow-worker"]
    assert {"/opt/airflow/dags", "/opt/airflow/plugins", "/opt/airflow/include"} <= _mount_targets(worker)
    # A fixed container name or host port would make `--scale airflow-worker=N` fail.
    assert "container_name" not in worker
    assert "ports" not in worker
    assert worker["depends_on"]["createbuckets"]["condition"] == "service_completed_successfully"


def test_harvest_connections_and_destination(compose):
    for name in AIRFLOW_SERVICES:
        env = _env(compose, name)
        harvest_db = _with_defaults(env["AIRFLOW_CONN_HARVEST_DB"])
        assert harvest_db == "postgresql://harvest:harvest@postgres:5432/harvest", name

        aws = json.loads(_with_defaults(env["AIRFLOW_CONN_AWS_DEFAULT"]))
        assert aws["conn_type"] == "aws"
        assert aws["login"] == "minioadmin" and aws["password"] == "minioadmin"
        assert aws["extra"] == {"endpoint_url": "http://minio:9000", "region_name": "us-east-1"}

        assert _with_defaults(env["HARVEST_DESTINATION"]) == "s3://harvest/dataset", name


def test_postgres_creates_the_harvest_database(compose):
    postgres = _services(compose)["postgres"]
    assert "./docker/postgres-init:/docker-entrypoint-initdb.d:ro" in postgres["volumes"]
    scripts = sorted(p for p in POSTGRES_INIT.iterdir() if p.suffix in {".sh", ".sql"})
    assert scripts, "docker/postgres-init/ holds no init script"
    assert any("CREATE DATABASE" in p.read_text() for p in scripts)
    assert _with_defaults(postgres["environment"]["HARVEST_DB_NAME"]) == "harvest"


def test_createbuckets_makes_the_harvest_bucket(compose):
    job = _services(compose)["createbuckets"]
    assert "mc mb --ignore-existing harvest/harvest" in job["command"][-1]
    assert job["depends_on"]["minio"]["condition"] == "service_healthy"


def test_docker_compose_config_accepts_the_file(tmp_path):
    result = _run_compose(tmp_path, "config", "-q")
    assert result.returncode == 0, result.stderr
    assert "WARNING" not in result.stderr, result.stderr


def test_docker_compose_resolves_the_connections(tmp_path):
    result = _run_compose(tmp_path, "config")
    assert result.returncode == 0, result.stderr
    resolved = yaml.safe_load(result.stdout)
    env = resolved["services"]["airflow-worker"]["environment"]
    assert env["AIRFLOW_CONN_HARVEST_DB"] == "postgresql://harvest:harvest@postgres:5432/harvest"
    aws = json.loads(env["AIRFLOW_CONN_AWS_DEFAULT"])
    assert aws["extra"]["endpoint_url"] == "http://minio:9000"
    assert env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"


def test_docker_compose_refuses_to_start_without_generated_secrets(tmp_path):
    result = _run_compose(tmp_path, "config", "-q", generated=False)
    assert result.returncode != 0
    assert "make compose-env" in result.stderr


def test_compose_env_generates_secrets_once_and_keeps_them(tmp_path):
    env_file = tmp_path / ".env"
    env_file.write_text("HARVEST_DB_PASSWORD=s3cret")
    assert write_env(env_file) == [
        "AIRFLOW_UID",
        "AIRFLOW__API_AUTH__JWT_SECRET",
        "AIRFLOW__CORE__FERNET_KEY",
    ]
    first = read_env(env_file)
    assert first["HARVEST_DB_PASSWORD"] == "s3cret"
    assert write_env(env_file) == [] and read_env(env_file) == first
    other = tmp_path / "other.env"
    write_env(other)
    assert read_env(other)["AIRFLOW__CORE__FERNET_KEY"] != first["AIRFLOW__CORE__FERNET_KEY"]
    Fernet(first["AIRFLOW__CORE__FERNET_KEY"].encode())  # a valid Fernet key
    assert env_file.stat().st_mode & 0o077 == 0


def test_docker_compose_passes_the_generated_secrets_through(tmp_path):
    result = _run_compose(tmp_path, "config")
    assert result.returncode == 0, result.stderr
    secrets = read_env(tmp_path / "compose.env")
    env = yaml.safe_load(result.stdout)["services"]["airflow-worker"]["environment"]
    assert env["AIRFLOW__CORE__FERNET_KEY"] == secrets["AIRFLOW__CORE__FERNET_KEY"]
    assert env["AIRFLOW__API_AUTH__JWT_SECRET"] == secrets["AIRFLOW__API_AUTH__JWT_SECRET"]
