"""A run's settings: the Params its date was prepared with, overridden key by key by its conf.

The context is what Airflow hands a task (Params with the DAG's defaults, run id, logical date, the
dag run's conf); the state DB is real (SQLite here; Postgres in tests/test_airflow_walkthrough.py).
"""

from __future__ import annotations

from datetime import UTC, datetime
from types import SimpleNamespace

import pytest

from harvest.settings.config import build_config, nothing_to_crawl
from harvest.settings.params import default_params
from harvest.state.db import migrate, session_scope
from harvest.state.models import Run, utcnow
from harvest_airflow import run_params

DATE = datetime(2026, 11, 1, tzinfo=UTC)
SCOPE = "interval__2026-11-01T00:00:00+00:00"


@pytest.fixture
def state_db(tmp_path, monkeypatch) -> str:
    url = f"sqlite:///{tmp_path / 'state.db'}"
    monkeypatch.setenv("HARVEST_DATABASE_URL", url)
    return url


def context(conf: dict, run_id: str = "backfill__2026-11-01T00:00:00+00:00", logical_date=DATE) -> dict:
    return {
        "params": {**default_params(), **conf},  # Airflow merges the conf into the Params too
        "run_id": run_id,
        "logical_date": logical_date,
        "dag_run": SimpleNamespace(conf=conf),
    }


def record(url: str, params: dict) -> None:
    migrate(url)
    with session_scope(url) as session:
        session.add(Run(run_id=SCOPE, params=params, started_at=utcnow(), counters={}))


def test_a_reprocess_keeps_the_dates_settings_and_changes_only_the_conf_keys(state_db, tmp_path):
    record(
        state_db,
        {
            "seeds": ["https://example.com/"],
            "labels": ["goldfish"],
            "max_depth": 1,
            "threshold": 0.2,
            "destination": str(tmp_path / "out"),
            "manifest_id": "scheduled__2026-11-01T00:00:00+00:00",  # not a Param: left out
        },
    )
    base, conf = run_params(context({"threshold": 0.5}))
    assert "manifest_id" not in base and conf == {"threshold": 0.5}
    cfg = build_config(base, SCOPE, overrides=conf)
    assert cfg.seeds == ("https://example.com/",) and cfg.labels == ("goldfish",)
    assert (cfg.max_depth, cfg.threshold, cfg.destination) == (1, 0.5, str(tmp_path / "out"))


def test_a_date_that_never_ran_starts_from_the_nightlys_defaults(state_db, monkeypatch):
    record(state_db, {"seeds": ["https://example.com/"], "labels": ["goldfish"]})
    base, conf = run_params(
        context({"max_depth": 1}, "backfill__2026-11-02T00:00:00+00:00", datetime(2026, 11, 2, tzinfo=UTC))
    )
    assert base["seeds"] == [] and nothing_to_crawl(base, conf)  # skipped, like the nightly would be


def test_no_state_schema_yet_means_the_dags_defaults(state_db):
    base, _ = run_params(context({"threshold": 0.5}))
    assert base == {**default_params(), "threshold": 0.5}


def test_a_manual_run_without_a_date_is_its_own_scope(state_db):
    record(state_db, {"seeds": ["https://example.com/"], "labels": ["goldfish"]})
    base, _ = run_params(context({}, "manual__2026-12-04T10:00:00+00:00", None))
    assert base["seeds"] == []
