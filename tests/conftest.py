"""Real servers for the tests: Postgres (this machine's), an S3 server (moto), and the demo website.

Each fixture starts the real thing on a free loopback port and tears it down afterwards.
"""

from __future__ import annotations

import logging
import os
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from harvest import demo_site
from harvest.settings.config import DEFAULT_MODELS_DIR, S3Options

POSTGRES_ADMIN_URL = os.environ.get(
    "HARVEST_TEST_POSTGRES", "postgresql+psycopg2://postgres@127.0.0.1:5432/test"
)
REPO = Path(__file__).resolve().parents[1]


logging.getLogger("werkzeug").setLevel(logging.WARNING)  # the S3 server's access log


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(autouse=True)
def _harvest_env(monkeypatch, tmp_path) -> None:
    """Loopback servers are private addresses; tests allow them, and never touch the user's home."""
    monkeypatch.setenv("HARVEST_ALLOW_PRIVATE_NETWORKS", "1")
    monkeypatch.setenv("HARVEST_HOME", str(tmp_path / "harvest-home"))
    # destinations, staging areas and URL lists of a test live anywhere in its own temporary folder
    monkeypatch.setenv("HARVEST_LOCAL_ROOTS", str(tmp_path))
    # one site on loopback serves every test: keep the per-host politeness delay short (tests that
    # check politeness set their own)
    monkeypatch.setenv("HARVEST_HOST_DELAY", "0.01")
    for name in (
        "HARVEST_DESTINATION",
        "HARVEST_DATABASE_URL",
        "HARVEST_STAGING",
        "HARVEST_ALLOWED_BUCKETS",
        "AWS_ENDPOINT_URL",
    ):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(scope="session")
def site_root(tmp_path_factory) -> Path:
    return demo_site.build_site(tmp_path_factory.mktemp("site"))


@pytest.fixture(scope="session")
def site(site_root) -> Iterator[str]:
    """Base URL of the demo website, served over HTTP on loopback."""
    with demo_site.serve(site_root) as base_url:
        yield base_url


def _create_database(name: str) -> str:
    import sqlalchemy

    admin = sqlalchemy.create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(sqlalchemy.text(f'CREATE DATABASE "{name}"'))
    except sqlalchemy.exc.OperationalError as exc:
        pytest.fail(
            f"Postgres is not reachable at {POSTGRES_ADMIN_URL} ({exc.orig}); start it with "
            "`pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start`"
        )
    finally:
        admin.dispose()
    return POSTGRES_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"


def _drop_database(name: str) -> None:
    import sqlalchemy

    from harvest.state.db import dispose_engines

    dispose_engines()
    admin = sqlalchemy.create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sqlalchemy.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A fresh, empty Postgres database for one test."""
    name = f"harvest_test_{uuid.uuid4().hex[:12]}"
    url = _create_database(name)
    yield url
    _drop_database(name)


@pytest.fixture(params=["postgres", "sqlite"])
def database_url(request, tmp_path) -> Iterator[str]:
    """The state DB, once on Postgres (production) and once on SQLite (the embedded default)."""
    if request.param == "postgres":
        yield request.getfixturevalue("postgres_url")
    else:
        yield f"sqlite:///{tmp_path / 'state.db'}"
        from harvest.state.db import dispose_engines

        dispose_engines()


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """An S3-compatible server (moto in server mode) over HTTP on loopback."""
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


@pytest.fixture
def s3(s3_endpoint) -> S3Options:
    return S3Options(
        endpoint_url=s3_endpoint,
        aws_access_key_id="test-access-key",
        aws_secret_access_key="test-secret-key",
        region_name="us-east-1",
    )


@pytest.fixture(scope="module")
def s3_direct(s3_endpoint) -> S3Options:
    """The same options as ``s3``, for module-scoped fixtures (a clean reference run shared by tests)."""
    return S3Options(s3_endpoint, "test-access-key", "test-secret-key", "us-east-1")


@pytest.fixture(scope="module")
def demo(site_root):
    """The demo site on the scriptable loopback server, whose pages can be made to stall."""
    from resilience.harvest_runs import demo_site as scriptable_demo_site

    with scriptable_demo_site(site_root) as served:
        yield served


@pytest.fixture
def bucket(s3) -> str:
    """A new empty bucket for one test."""
    from harvest.storage import make_s3_client

    name = f"harvest-{uuid.uuid4().hex[:10]}"
    make_s3_client(s3).create_bucket(Bucket=name)
    return name


def _build_model(variant: str) -> None:
    """Build a bundled network and its TFLite export from the installed weights if `make setup` has
    not yet (a missing artefact must not make a test pass vacuously, nor skip it)."""
    import subprocess
    import sys

    converter = str(DEFAULT_MODELS_DIR / "convert_efficientnet_lite.py")
    if not (DEFAULT_MODELS_DIR / f"efficientnet_{variant}.keras").exists():
        subprocess.run([sys.executable, converter, "--variant", variant], check=True, cwd=REPO)
    elif not (DEFAULT_MODELS_DIR / f"efficientnet_{variant}.tflite").exists():
        subprocess.run(
            [sys.executable, converter, "--variant", variant, "--tflite-only"], check=True, cwd=REPO
        )


@pytest.fixture(scope="session")
def models_dir() -> Path:
    """The bundled model, built from the installed weights package if `make setup` has not yet."""
    _build_model("lite0")
    return DEFAULT_MODELS_DIR


@pytest.fixture(scope="session")
def bundled_models(models_dir) -> Path:
    """Both bundled networks (Lite0 and Lite2) with their TFLite exports."""
    _build_model("lite2")
    return models_dir


@pytest.fixture(scope="session")
def classifier(models_dir):
    """The real EfficientNet-Lite0, loaded once for the session (TensorFlow start-up is seconds)."""
    from harvest.model.runtime import load_classifier

    return load_classifier("efficientnet_lite0", models_dir)
