"""Bad input is refused before any work starts, with a message that says what to fix."""

from __future__ import annotations

import pytest
from conftest import free_port
from sqlalchemy import func, select

from harvest.config import ConfigError, S3Options, build_config
from harvest.pipeline import prepare_run
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
