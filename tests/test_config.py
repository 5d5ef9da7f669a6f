"""build_config: defaults, environment, and validation that reports every problem at once."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from harvest.settings.config import DEFAULT_MODELS_DIR, ConfigError, S3Options, build_config

GOOD = {"seeds": ["https://example.com/"], "labels": ["goldfish"]}


@pytest.fixture
def home(tmp_path) -> Path:
    return tmp_path / "harvest-home"


@pytest.fixture
def env(home, tmp_path) -> dict[str, str]:
    return {"HARVEST_HOME": str(home), "HARVEST_LOCAL_ROOTS": str(tmp_path)}


def build(params=None, env=None, **kwargs):
    return build_config(GOOD if params is None else params, "run-1", env={} if env is None else env, **kwargs)


def problems_of(params, env) -> list[str]:
    with pytest.raises(ConfigError) as info:
        build_config(params, "run-1", env=env)
    assert str(info.value).startswith("invalid harvest settings: ")
    return info.value.problems


def test_defaults(env):
    cfg = build(env=env)
    assert cfg.run_id == "run-1"
    assert cfg.seeds == ("https://example.com/",)
    assert cfg.labels == ("goldfish",)
    assert cfg.max_depth == 2
    assert cfg.max_pages == 1000
    assert cfg.same_domain is True
    assert (cfg.min_width, cfg.min_height) == (64, 64)
    assert cfg.top_k == 5
    assert cfg.threshold == pytest.approx(0.2)
    assert cfg.allow_private_networks is False
    assert cfg.models_dir == DEFAULT_MODELS_DIR
    assert cfg.s3 is None


def test_params_override_defaults(env):
    cfg = build(
        {**GOOD, "max_depth": 0, "max_pages": 3, "same_domain": "false", "top_k": 1, "threshold": "0.5"},
        env=env,
    )
    assert (cfg.max_depth, cfg.max_pages, cfg.same_domain, cfg.top_k) == (0, 3, False, 1)
    assert cfg.threshold == pytest.approx(0.5)


def test_destination_defaults_to_dataset_under_harvest_home(env, home):
    assert build(env=env).destination == str(home / "dataset")


def test_destination_comes_from_harvest_destination(env, tmp_path):
    cfg = build(env={**env, "HARVEST_DESTINATION": str(tmp_path / "out")})
    assert cfg.destination == str(tmp_path / "out")


def test_destination_param_beats_environment(env, tmp_path):
    cfg = build(
        {**GOOD, "destination": str(tmp_path / "p")}, env={**env, "HARVEST_DESTINATION": "/elsewhere"}
    )
    assert cfg.destination == str(tmp_path / "p")


def test_harvest_home_defaults_to_a_folder_in_the_user_home(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path))
    cfg = build(env={})
    assert cfg.destination == str(tmp_path / ".image-harvester" / "dataset")
    assert cfg.database_url == f"sqlite:///{tmp_path / '.image-harvester' / 'state.db'}"


def test_database_url_defaults_to_sqlite_under_harvest_home(env, home):
    assert build(env=env).database_url == f"sqlite:///{home / 'state.db'}"


def test_database_url_from_environment_beats_the_sqlite_default(env):
    cfg = build(env={**env, "HARVEST_DATABASE_URL": "postgresql+psycopg2://u:p@db/harvest"})
    assert cfg.database_url == "postgresql+psycopg2://u:p@db/harvest"


def test_explicit_database_url_beats_the_environment(env):
    cfg = build(
        env={**env, "HARVEST_DATABASE_URL": "sqlite:////from/env.db"}, database_url="sqlite:///arg.db"
    )
    assert cfg.database_url == "sqlite:///arg.db"


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("postgres://u:p@db:5432/harvest", "postgresql+psycopg2://u:p@db:5432/harvest"),
        ("postgresql://u:p@db/harvest", "postgresql+psycopg2://u:p@db/harvest"),
        ("postgresql+psycopg2://u:p@db/harvest", "postgresql+psycopg2://u:p@db/harvest"),
        ("sqlite:///x.db", "sqlite:///x.db"),
    ],
)
def test_postgres_urls_are_normalised(env, url, expected):
    assert build(env={**env, "HARVEST_DATABASE_URL": url}).database_url == expected
    assert build(env=env, database_url=url).database_url == expected


def test_s3_destination_stages_under_the_destination(env):
    cfg = build({**GOOD, "destination": "s3://bucket/datasets/pets/"}, env=env)
    assert cfg.destination == "s3://bucket/datasets/pets"
    assert cfg.staging == "s3://bucket/datasets/pets/_staging"


def test_s3_destination_from_environment_stages_under_it(env):
    cfg = build(env={**env, "HARVEST_DESTINATION": "s3://bucket/out"})
    assert cfg.staging == "s3://bucket/out/_staging"


def test_local_destination_stages_under_harvest_home(env, home, tmp_path):
    cfg = build({**GOOD, "destination": str(tmp_path / "out")}, env=env)
    assert cfg.staging == str(home / "staging")


def test_harvest_staging_overrides_the_staging_default(env, tmp_path):
    roots = f"{tmp_path}{os.pathsep}/fast"
    cfg = build(
        {**GOOD, "destination": "s3://bucket/out"},
        env={**env, "HARVEST_STAGING": "/fast/disk", "HARVEST_LOCAL_ROOTS": roots},
    )
    assert cfg.staging == "/fast/disk"


@pytest.mark.parametrize("value", ["1", "true", "TRUE", "yes", "on", " On "])
def test_private_networks_allowed_by_truthy_values(env, value):
    assert build(env={**env, "HARVEST_ALLOW_PRIVATE_NETWORKS": value}).allow_private_networks is True


@pytest.mark.parametrize("value", ["0", "false", "no", "off", "", "2", "enabled"])
def test_private_networks_refused_for_other_values(env, value):
    assert build(env={**env, "HARVEST_ALLOW_PRIVATE_NETWORKS": value}).allow_private_networks is False


def test_seeds_and_labels_as_lists(env):
    cfg = build(
        {"seeds": [" https://a.example/ ", "http://b.example/x"], "labels": ["goldfish", "  "]}, env=env
    )
    assert cfg.seeds == ("https://a.example/", "http://b.example/x")
    assert cfg.labels == ("goldfish",)


def test_seeds_and_labels_as_newline_or_comma_separated_strings(env):
    cfg = build(
        {
            "seeds": "https://a.example/\n\nhttp://b.example/x, https://c.example/",
            "labels": "goldfish,great white shark\n tench ",
        },
        env=env,
    )
    assert cfg.seeds == ("https://a.example/", "http://b.example/x", "https://c.example/")
    assert cfg.labels == ("goldfish", "great white shark", "tench")


def test_every_problem_is_reported_at_once(env):
    problems = problems_of(
        {
            "seeds": ["ftp://files.example/a", "javascript:alert(1)"],
            "labels": ["goldfish"],
            "max_depth": -1,
            "threshold": 1.5,
            "top_k": 0,
            "destination": "ftp://x",
        },
        env,
    )
    assert len(problems) == 6
    text = "\n".join(problems)
    assert "ftp://files.example/a" in text
    assert "javascript:alert(1)" in text
    assert "max_depth must be >= 0, got -1" in text
    assert "threshold must be between 0 and 1, got 1.5" in text
    assert "top_k must be >= 1, got 0" in text
    assert "destination 'ftp://x'" in text


def test_missing_seeds_and_labels_are_both_reported(env):
    problems = problems_of({"seeds": [], "labels": "", "max_pages": 0}, env)
    assert len(problems) == 3
    assert any(p.startswith("seeds:") for p in problems)
    assert any(p.startswith("labels:") for p in problems)
    assert any("max_pages must be >= 1" in p for p in problems)


def test_seeds_may_be_omitted_when_not_required(env):
    assert build({"labels": ["goldfish"]}, env=env, require_seeds=False).seeds == ()


@pytest.mark.parametrize(
    ("params", "fragment"),
    [
        ({"seeds": ["example.com"]}, "only http and https"),
        ({"seeds": ["https://"]}, "no host name"),
        ({"max_depth": "two"}, "max_depth must be an integer"),
        ({"max_depth": 1.5}, "max_depth must be an integer"),
        ({"min_width": 0}, "min_width must be >= 1"),
        ({"top_k": 1001}, "top_k must be <= 1000"),
        ({"threshold": "high"}, "threshold must be a number"),
        ({"threshold": -0.1}, "threshold must be between 0 and 1"),
        ({"destination": "s3://"}, "expected s3://bucket/prefix"),
    ],
)
def test_single_bad_values_are_refused(env, params, fragment):
    problems = problems_of({**GOOD, **params}, env)
    assert len(problems) == 1
    assert fragment in problems[0]


def test_bad_shard_count_from_environment_is_refused(env):
    problems = problems_of(GOOD, {**env, "HARVEST_SHARDS": "0"})
    assert problems == ["HARVEST_SHARDS must be between 1 and 256, got 0"]


def test_s3_options_from_environment(env):
    cfg = build(
        env={
            **env,
            "AWS_ACCESS_KEY_ID": "AKIAEXAMPLE",
            "AWS_SECRET_ACCESS_KEY": "very-secret-value",
            "HARVEST_S3_ENDPOINT_URL": "http://minio:9000",
            "AWS_REGION": "eu-west-1",
        }
    )
    assert cfg.s3 == S3Options("http://minio:9000", "AKIAEXAMPLE", "very-secret-value", "eu-west-1")
    assert "very-secret-value" not in repr(cfg)


def test_explicit_s3_options_beat_the_environment(env):
    options = S3Options(endpoint_url="http://explicit:9000")
    assert build(env={**env, "AWS_ACCESS_KEY_ID": "AKIA"}, s3=options).s3 is options


def test_config_repr_hides_the_state_db_password(env):
    cfg = build(env=env, database_url="postgresql://harvest:db-secret-value@db:5432/harvest")
    assert "db-secret-value" not in repr(cfg) and "db-secret-value" in cfg.database_url


def test_s3_options_repr_hides_the_secret():
    options = S3Options("http://minio:9000", "AKIAEXAMPLE", "very-secret-value", "us-east-1")
    assert "very-secret-value" not in repr(options)
    assert "very-secret-value" not in str(options)
    assert "http://minio:9000" in repr(options)


def test_config_is_immutable_but_can_be_copied_with_changes(env):
    cfg = build(env=env)
    changed = cfg.with_(max_depth=7)
    assert (cfg.max_depth, changed.max_depth) == (2, 7)
    with pytest.raises(AttributeError):
        cfg.max_depth = 3  # type: ignore[misc]


@pytest.mark.parametrize("name", ["HARVEST_SHARDS", "HARVEST_DOWNLOAD_THREADS", "HARVEST_BATCH_SIZE"])
def test_non_integer_numeric_environment_variable_is_a_config_problem(env, name):
    problems = problems_of(GOOD, {**env, name: "many"})
    assert any(name in p for p in problems)


@pytest.mark.parametrize("name", ["HARVEST_DOWNLOAD_THREADS", "HARVEST_BATCH_SIZE"])
def test_zero_workers_or_batch_size_is_refused(env, name):
    problems = problems_of(GOOD, {**env, name: "0"})
    assert any(name in p for p in problems)


def test_shard_sizing_comes_from_the_environment(env):
    cfg = build_config(GOOD, "manual__1", env={**env, "HARVEST_SHARD_SIZE": "500", "HARVEST_MIN_SHARDS": "2"})
    assert (cfg.shard_size, cfg.min_shards, cfg.num_shards) == (500, 2, 32)
    problems = problems_of(GOOD, {**env, "HARVEST_SHARDS": "4", "HARVEST_MIN_SHARDS": "8"})
    assert problems == [
        "HARVEST_MIN_SHARDS (8) must not exceed HARVEST_SHARDS (4), the most shards a run is split into"
    ]
