"""Bad input at the front door: refused before any work starts, with a message that says what to fix."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest
from conftest import free_port
from sqlalchemy import func, select

from harvest.pipeline import prepare_run
from harvest.settings.config import ConfigError, S3Options, build_config
from harvest.state.db import session_scope
from harvest.state.models import Page


def _problems(params: dict, **kwargs) -> str:
    with pytest.raises(ConfigError) as caught:
        prepare_run(build_config({"labels": ["goldfish"], **params}, "manual__door", **kwargs))
    return str(caught.value)


@pytest.mark.parametrize(
    ("seed", "message"),
    [
        ("example.com/gallery", "only http and https"),
        ("file:///etc/passwd", "only http and https"),
        ("ftp://example.com/pub/", "only http and https"),
        ("javascript:alert(1)", "only http and https"),
        ("http:///no-host", "no host name"),
    ],
)
def test_malformed_seeds(seed, message):
    assert message in _problems({"seeds": [seed]})


@pytest.mark.parametrize(
    ("setting", "rule"),
    [
        ("max_depth", ">= 0"),
        ("max_pages", ">= 1"),
        ("min_width", ">= 1"),
        ("min_height", ">= 1"),
        ("top_k", ">= 1"),
        ("quota", ">= 0"),
        ("threshold", "between 0 and 1"),
    ],
)
def test_negative_limits(setting, rule):
    assert f"{setting} must be {rule}" in _problems({"seeds": ["https://a.example/"], setting: -1})


def test_every_problem_is_listed_at_once():
    text = _problems({"seeds": ["ftp://x"], "labels": ["unicorn"], "max_depth": -1, "threshold": 2})
    for part in ("ftp://x", "max_depth must be >= 0", "threshold must be between 0 and 1"):
        assert part in text


def test_unknown_label_names_close_matches(tmp_path):
    assert "did you mean 'goldfish'" in _problems({"seeds": ["https://a.example/"], "labels": ["goldfsh"]})
    assert not (tmp_path / "harvest-home" / "state.db").exists()


def test_idn_seed_is_accepted_as_punycode(database_url):
    cfg = build_config({"seeds": ["http://bücher.example/"], "labels": ["goldfish"]}, "manual__idn")
    prepare_run(cfg.with_(database_url=database_url))
    with session_scope(database_url) as session:
        assert session.scalars(select(Page.url)).all() == ["http://xn--bcher-kva.example/"]


def test_ten_thousand_seeds(database_url):
    seeds = [f"https://site{n}.example/" for n in range(10_000)]
    cfg = build_config({"seeds": seeds, "labels": ["goldfish"], "max_pages": 20_000}, "manual__many")
    prepare_run(cfg.with_(database_url=database_url))
    with session_scope(database_url) as session:
        assert session.scalar(select(func.count()).select_from(Page)) == 10_000


def test_unwritable_destination_is_refused(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("a file where a folder should be")
    text = _problems({"seeds": ["https://a.example/"], "destination": str(blocker / "dataset")})
    assert f"destination {blocker / 'dataset'}: not writable" in text
    assert not (tmp_path / "harvest-home" / "state.db").exists()


def test_missing_bucket_and_unreachable_endpoint(s3):
    text = _problems({"seeds": ["https://a.example/"], "destination": "s3://no-such-bucket/x"}, s3=s3)
    assert "bucket 'no-such-bucket' does not exist" in text
    closed = S3Options(f"http://127.0.0.1:{free_port()}", "k", "s", "us-east-1")
    text = _problems({"seeds": ["https://a.example/"], "destination": "s3://b/x"}, s3=closed)
    assert "cannot reach http://127.0.0.1:" in text and "endpoint_url of aws_default" in text


@pytest.fixture
def authenticating_s3() -> Iterator[tuple[S3Options, str]]:
    """An S3 server that checks signatures (moto with IAM auth on), with one user allowed everything
    and one bucket; the first four requests, which set these up, are the only ones let through unsigned."""
    import boto3

    port = free_port()
    env = {**os.environ, "INITIAL_NO_AUTH_ACTION_COUNT": "4"}
    server = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    endpoint = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        anonymous = {"endpoint_url": endpoint, "region_name": "us-east-1"}
        anonymous |= {"aws_access_key_id": "setup", "aws_secret_access_key": "setup"}
        iam = boto3.client("iam", **anonymous)
        iam.create_user(UserName="harvester")
        key = iam.create_access_key(UserName="harvester")["AccessKey"]
        iam.put_user_policy(
            UserName="harvester",
            PolicyName="all",
            PolicyDocument='{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"*","Resource":"*"}]}',
        )
        boto3.client("s3", **anonymous).create_bucket(Bucket="dataset")
        yield S3Options(endpoint, key["AccessKeyId"], key["SecretAccessKey"], "us-east-1"), "dataset"
    finally:
        server.terminate()
        server.wait(timeout=10)


def test_wrong_s3_credentials_are_refused(authenticating_s3, database_url):
    good, bucket = authenticating_s3
    params = {"seeds": ["https://a.example/"], "destination": f"s3://{bucket}/x"}
    for wrong in (
        S3Options(good.endpoint_url, good.aws_access_key_id, "not-the-secret", "us-east-1"),
        S3Options(good.endpoint_url, "AKIANOSUCHKEY0000000", good.aws_secret_access_key, "us-east-1"),
    ):
        text = _problems(params, s3=wrong)
        assert f"access to bucket '{bucket}' denied at {good.endpoint_url}" in text
        assert "check the aws_default credentials" in text
        assert wrong.aws_secret_access_key not in text
    cfg = build_config({"labels": ["goldfish"], **params}, "manual__door", s3=good)
    prepare_run(cfg.with_(database_url=database_url))  # the right key passes the same check
