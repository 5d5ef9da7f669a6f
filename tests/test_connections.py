"""The Airflow connections `aws_default` and `harvest_db` are read the way Airflow's providers read them.

Each credential form the Amazon provider honours (keys, session token, an assumed role, a profile, the
instance role) is tried against the loopback S3 server through a proxy that records who signed each
request, so the test sees which credentials reached S3, not only what was configured.
"""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import sqlalchemy
from flaky_proxy import flaky_s3_proxy

import harvest_airflow
from harvest.storage import open_store

pytest.importorskip("airflow.providers.amazon", reason="the Amazon provider is in requirements.txt")


@pytest.fixture
def proxy(s3_endpoint):
    with flaky_s3_proxy(s3_endpoint) as (url, recorder):
        yield url, recorder


@pytest.fixture(autouse=True)
def _no_ambient_aws_credentials(monkeypatch, tmp_path) -> None:
    """Only what a test configures may sign: no keys, profiles or metadata service of this machine."""
    for name in (
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "AWS_PROFILE",
        "AWS_DEFAULT_PROFILE",
        "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
        "AWS_CONTAINER_CREDENTIALS_FULL_URI",
        "AWS_ROLE_ARN",
        "AWS_WEB_IDENTITY_TOKEN_FILE",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


def _connect(monkeypatch, **fields) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_AWS_DEFAULT", json.dumps({"conn_type": "aws", **fields}))


def _upload(bucket_prefix: str) -> str:
    """Writes one object through the harvest's own store, with the connection's credentials."""
    options = harvest_airflow.s3_options()
    key = f"probe-{uuid.uuid4().hex[:8]}.txt"
    open_store(bucket_prefix, options).put(key, b"hello")
    return key


def _signed_put(recorder, key: str):
    (put,) = [e for e in recorder.log if e.method == "PUT" and e.key.endswith(key)]
    assert put.stored, put
    return put


@pytest.fixture
def bucket_name(s3) -> str:
    from harvest.storage import make_s3_client

    name = f"creds-{uuid.uuid4().hex[:10]}"
    make_s3_client(s3).create_bucket(Bucket=name)
    return name


def test_access_keys_region_and_endpoint(monkeypatch, proxy, bucket_name):
    url, recorder = proxy
    _connect(
        monkeypatch,
        login="AKIDKEYSFORM0001",
        password="secret-one",
        extra={"endpoint_url": url, "region_name": "eu-west-1"},
    )
    put = _signed_put(recorder, _upload(f"s3://{bucket_name}/data"))
    assert put.access_key == "AKIDKEYSFORM0001"
    assert put.credential.split("/")[2:4] == ["eu-west-1", "s3"]
    assert put.token is None


def test_session_token(monkeypatch, proxy, bucket_name):
    url, recorder = proxy
    _connect(
        monkeypatch,
        login="ASIATEMPORARY0001",
        password="secret-two",
        extra={"endpoint_url": url, "region_name": "us-east-1", "aws_session_token": "token-of-the-session"},
    )
    put = _signed_put(recorder, _upload(f"s3://{bucket_name}/data"))
    assert (put.access_key, put.token) == ("ASIATEMPORARY0001", "token-of-the-session")


def test_role_assumed_through_sts(monkeypatch, proxy, bucket_name):
    url, recorder = proxy
    _connect(
        monkeypatch,
        login="AKIDBASEROLE0001",
        password="secret-three",
        extra={
            "endpoint_url": url,
            "region_name": "us-east-1",
            "role_arn": "arn:aws:iam::123456789012:role/harvest-writer",
            "assume_role_kwargs": {"RoleSessionName": "image-harvester"},
            "service_config": {"sts": {"endpoint_url": url}},
        },
    )
    put = _signed_put(recorder, _upload(f"s3://{bucket_name}/data"))
    (assume,) = [e for e in recorder.log if e.action == "AssumeRole"]
    assert assume.access_key == "AKIDBASEROLE0001" and assume.outcome == 200
    # S3 saw the role's temporary credentials, never the base keys
    assert put.access_key != "AKIDBASEROLE0001" and put.token


def test_named_profile(monkeypatch, tmp_path, proxy, bucket_name):
    url, recorder = proxy
    credentials = tmp_path / "credentials"
    credentials.write_text(
        "[harvest]\naws_access_key_id = AKIDPROFILE00001\naws_secret_access_key = secret-four\n"
    )
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(credentials))
    _connect(monkeypatch, extra={"endpoint_url": url, "region_name": "us-east-1", "profile_name": "harvest"})
    put = _signed_put(recorder, _upload(f"s3://{bucket_name}/data"))
    assert put.access_key == "AKIDPROFILE00001"


@contextmanager
def instance_metadata_service(access_key: str) -> Iterator[str]:
    """The EC2 instance metadata service (IMDSv2) on loopback, serving one role's credentials."""
    token = "imds-session-token"

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args) -> None:  # noqa: A002
            pass

        def _answer(self, status: int, body: str) -> None:
            data = body.encode()
            self.send_response(status)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_PUT(self) -> None:
            if self.path == "/latest/api/token":
                self._answer(200, token)
            else:
                self._answer(404, "")

        def do_GET(self) -> None:
            if self.headers.get("X-aws-ec2-metadata-token") != token:
                self._answer(401, "")
            elif self.path == "/latest/meta-data/iam/security-credentials/":
                self._answer(200, "harvest-instance-role")
            elif self.path == "/latest/meta-data/iam/security-credentials/harvest-instance-role":
                creds = {
                    "Code": "Success",
                    "Type": "AWS-HMAC",
                    "AccessKeyId": access_key,
                    "SecretAccessKey": "secret-five",
                    "Token": "instance-role-token",
                    "Expiration": "2099-01-01T00:00:00Z",
                }
                self._answer(200, json.dumps(creds))
            else:
                self._answer(404, "")

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


def test_instance_role(monkeypatch, proxy, bucket_name):
    url, recorder = proxy
    with instance_metadata_service("ASIAINSTANCE00001") as imds:
        monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "false")
        monkeypatch.setenv("AWS_EC2_METADATA_SERVICE_ENDPOINT", imds)
        _connect(monkeypatch, extra={"endpoint_url": url, "region_name": "us-east-1"})
        put = _signed_put(recorder, _upload(f"s3://{bucket_name}/data"))
    assert (put.access_key, put.token) == ("ASIAINSTANCE00001", "instance-role-token")


def test_no_connection_leaves_the_environment_to_decide(monkeypatch):
    monkeypatch.delenv("AIRFLOW_CONN_AWS_DEFAULT", raising=False)
    assert harvest_airflow.s3_options() is None


def test_state_db_from_a_postgres_connection(monkeypatch, postgres_url):
    """`harvest_db` as the Postgres provider's connection type (host, schema, login), not only a URL."""
    url = sqlalchemy.engine.make_url(postgres_url)
    monkeypatch.delenv("HARVEST_DATABASE_URL", raising=False)
    monkeypatch.setenv(
        "AIRFLOW_CONN_HARVEST_DB",
        json.dumps(
            {
                "conn_type": "postgres",
                "host": url.host,
                "port": url.port or 5432,
                "schema": url.database,
                "login": url.username,
                "password": url.password or "",
            }
        ),
    )
    resolved = harvest_airflow.resolved_database_url()
    from harvest.state.db import get_engine, migrate

    migrate(resolved)  # the schema is created through that connection
    with get_engine(resolved).connect() as conn:
        assert conn.execute(sqlalchemy.text("select current_database()")).scalar() == url.database
        assert conn.execute(sqlalchemy.text("select count(*) from runs")).scalar() == 0
