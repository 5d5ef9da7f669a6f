"""Crawler settings in build_config: defaults a site operator would accept, environment overrides,
and every bad value reported at once."""

from __future__ import annotations

import pytest
from sqlalchemy import inspect

from harvest.settings.config import ConfigError, build_config
from harvest.web.client import make_client

GOOD = {"seeds": ["https://example.com/"], "labels": ["goldfish"]}


def build(params: dict | None = None, **env: str):
    return build_config({**GOOD, **(params or {})}, "run-1", env=env)


def test_crawler_defaults():
    cfg = build()
    assert cfg.respect_robots is True
    assert (cfg.host_concurrency, cfg.host_delay, cfg.host_failure_limit) == (2, 0.5, 5)
    assert (cfg.max_pages_per_host, cfg.max_query_variants) == (500, 20)
    assert cfg.honour_nofollow is True and cfg.allow_svg is False
    assert cfg.url_allow == () and cfg.url_deny == () and cfg.allowed_networks == ()
    assert cfg.site_profiles_dir is None
    client = make_client(cfg)
    assert (client.gate.concurrency, client.gate.delay, client.gate.failure_limit) == (2, 0.5, 5)
    assert client.retry_attempts == 3 and client.max_retry_after == 120.0


def test_crawler_settings_from_the_environment():
    cfg = build(
        {"url_allow": ["/blog/", "/news/"], "url_deny": "\\?replytocom="},
        HARVEST_RESPECT_ROBOTS="off",
        HARVEST_HOST_CONCURRENCY="4",
        HARVEST_HOST_DELAY="1.5",
        HARVEST_HOST_FAILURE_LIMIT="9",
        HARVEST_MAX_PAGES_PER_HOST="50",
        HARVEST_MAX_QUERY_VARIANTS="3",
        HARVEST_FOLLOW_NOFOLLOW="yes",
        HARVEST_ALLOW_SVG="1",
        HARVEST_ALLOWED_NETWORKS="10.1.2.0/24, 192.168.7.7",
    )
    assert cfg.respect_robots is False
    assert (cfg.host_concurrency, cfg.host_delay, cfg.host_failure_limit) == (4, 1.5, 9)
    assert (cfg.max_pages_per_host, cfg.max_query_variants) == (50, 3)
    assert cfg.honour_nofollow is False and cfg.allow_svg is True
    assert cfg.url_allow == ("/blog/", "/news/") and cfg.url_deny == ("\\?replytocom=",)
    assert cfg.allowed_networks == ("10.1.2.0/24", "192.168.7.7/32")


def test_bad_crawler_settings_are_all_reported():
    with pytest.raises(ConfigError) as info:
        build(
            {"url_allow": ["[unclosed"]},
            HARVEST_HOST_CONCURRENCY="0",
            HARVEST_HOST_DELAY="soon",
            HARVEST_MAX_QUERY_VARIANTS="-1",
            HARVEST_ALLOWED_NETWORKS="10.0.0.0/33",
        )
    problems = "\n".join(info.value.problems)
    assert "HARVEST_HOST_CONCURRENCY must be between 1 and 64, got 0" in problems
    assert "HARVEST_HOST_DELAY must be a number between 0.0 and 600.0, got 'soon'" in problems
    assert "HARVEST_MAX_QUERY_VARIANTS must be between 1 and 10000000, got -1" in problems
    assert "HARVEST_ALLOWED_NETWORKS: '10.0.0.0/33' is not an IP network" in problems
    assert "url_allow: '[unclosed' is not a valid regular expression" in problems
    assert len(info.value.problems) == 5


def test_candidate_columns_migrate_up_and_down(postgres_url):
    from alembic import command

    from harvest.state.db import alembic_config, get_engine, migrate

    migrate(postgres_url)
    columns = {c["name"] for c in inspect(get_engine(postgres_url)).get_columns("candidates")}
    assert {"variants", "caption", "nearby_text", "page_fields"} <= columns
    command.downgrade(alembic_config(postgres_url), "0001")
    columns = {c["name"] for c in inspect(get_engine(postgres_url)).get_columns("candidates")}
    assert not {"variants", "caption", "nearby_text", "page_fields"} & columns
    migrate(postgres_url)
    columns = {c["name"] for c in inspect(get_engine(postgres_url)).get_columns("candidates")}
    assert "variants" in columns
