"""``make airflow``: Airflow's all-in-one server for this project, ready for its docs (docs/airflow.md).

What the bare ``airflow standalone`` leaves to the user is settled here:

- the metadata database is this machine's Postgres when one answers (database ``harvest_airflow``,
  created if missing), so the ``airflow`` CLI can run beside the server; SQLite, the fallback, is
  locked by the running server ("database is locked"), and docs/airflow.md then gives REST calls;
- the login is fixed and printed: user ``admin``, its password generated once into
  ``$AIRFLOW_HOME/passwords.json``;
- the harvest DAGs start unpaused (``AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION=False``), so a
  trigger runs instead of sitting queued;
- loopback sites may be crawled (``HARVEST_ALLOW_PRIVATE_NETWORKS=1``), for ``make demo-site``;
- ``$AIRFLOW_HOME/env.sh`` holds the same environment, for a CLI in another terminal.
"""

from __future__ import annotations

import json
import os
import secrets
import shlex
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
#: the maintenance database the Postgres probe connects to; HARVEST_AIRFLOW_DB_URL picks another server
POSTGRES = os.environ.get("HARVEST_AIRFLOW_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres")
DATABASE = "harvest_airflow"


def postgres_metadata_url() -> str | None:
    """``postgresql+psycopg2://.../harvest_airflow``, created on first use, or None when no Postgres
    answers within two seconds."""
    if os.environ.get("HARVEST_AIRFLOW_DB_URL"):
        return os.environ["HARVEST_AIRFLOW_DB_URL"]
    try:
        import psycopg2
    except ImportError:
        return None
    try:
        conn = psycopg2.connect(POSTGRES, connect_timeout=2)
    except psycopg2.Error:
        return None
    try:
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DATABASE,))
            if cur.fetchone() is None:
                cur.execute(f'CREATE DATABASE "{DATABASE}"')
    finally:
        conn.close()
    base = POSTGRES.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg2://", 1)
    return f"{base}/{DATABASE}"


def password(airflow_home: Path) -> tuple[Path, str]:
    """The admin password, generated once and kept in the file Airflow's simple auth manager reads."""
    path = airflow_home / "passwords.json"
    try:
        stored = json.loads(path.read_text())
    except (OSError, ValueError):
        stored = {}
    if not stored.get("admin"):
        stored = {"admin": secrets.token_urlsafe(12)}
        airflow_home.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(stored))
        path.chmod(0o600)
    return path, stored["admin"]


def environment(harvest_home: Path) -> tuple[dict[str, str], str, str]:
    """The server's environment, and the login password and metadata DB it names."""
    airflow_home = harvest_home / "airflow"
    passwords, secret = password(airflow_home)
    metadata = postgres_metadata_url() or f"sqlite:///{airflow_home / 'airflow.db'}"
    env = {
        "HARVEST_HOME": str(harvest_home),
        "AIRFLOW_HOME": str(airflow_home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "admin:admin",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(passwords),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": metadata,
        "HARVEST_ALLOW_PRIVATE_NETWORKS": os.environ.get("HARVEST_ALLOW_PRIVATE_NETWORKS", "1"),
    }
    if metadata.startswith("postgresql"):
        env["AIRFLOW__CORE__EXECUTOR"] = "LocalExecutor"
    return env, secret, metadata


def main() -> None:
    harvest_home = Path(os.environ.get("HARVEST_HOME") or REPO / ".harvest").resolve()
    env, secret, metadata = environment(harvest_home)
    bin_dir = Path(sys.executable).parent
    env["PATH"] = f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"
    env_file = Path(env["AIRFLOW_HOME"]) / "env.sh"
    env_file.write_text("".join(f"export {k}={shlex.quote(v)}\n" for k, v in env.items()))
    shared = (
        "Postgres: the airflow CLI works beside the server"
        if metadata.startswith("postgresql")
        else ("SQLite: use the REST calls of docs/airflow.md while the server runs (the CLI would lock it)")
    )
    print(
        "\n".join(
            [
                "Airflow UI and REST API: http://localhost:8080",
                f"Login: admin / {secret}   (kept in {env['AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE']})",
                f"Metadata DB: {metadata.split('@')[-1]} ({shared})",
                f"CLI in another terminal: source {env_file}",
                "Demo site for a first harvest: make demo-site (loopback allowed: HARVEST_ALLOW_PRIVATE_NETWORKS=1)",
                "Walkthrough: docs/airflow.md",
                "",
            ]
        ),
        flush=True,
    )
    os.execvpe(str(bin_dir / "airflow"), ["airflow", "standalone"], {**os.environ, **env})


if __name__ == "__main__":
    main()
