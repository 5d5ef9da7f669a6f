"""The image_takedown DAG as Airflow runs it: a light file whose form follows the specification, and a
run through ``dag.test()`` that takes an image down, records who ran it and announces asset events."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

from helpers import sha256_file
from sqlalchemy import select
from stage_setup import make_config, record_answers, seed_candidates
from test_dag import HEAVY, REPO, _airflow_env

from harvest.settings.params import TAKEDOWN_PARAMS
from harvest.stages.download import run_download
from harvest.stages.publish import run_publish
from harvest.state.db import session_scope
from harvest.state.models import Takedown
from harvest.storage import open_store


def _probe(tmp_path: Path, body: str, **env: str) -> str:
    probe = (
        "import importlib.util, json, sys\n"
        f"spec = importlib.util.spec_from_file_location('image_takedown', {str(REPO / 'dags/image_takedown.py')!r})\n"
        "module = importlib.util.module_from_spec(spec); spec.loader.exec_module(module)\n"
        "dag = module.takedown_dag\n" + body
    )
    out = subprocess.run(
        [sys.executable, "-c", probe],
        env=_airflow_env(tmp_path, **env),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-4000:]
    return out.stdout


def test_takedown_dag_is_light_and_its_form_follows_the_specification(tmp_path):
    out = _probe(
        tmp_path,
        "print(json.dumps({'modules': sorted(sys.modules), 'tasks': sorted(dag.task_ids), 'schedule': dag.schedule,\n"
        "  'params': {k: [dag.params.get_param(k).value, dag.params.get_param(k).schema] for k in dag.params.keys()}}))\n",
    )
    info = json.loads(out.strip().splitlines()[-1])
    assert [m for m in info["modules"] if m.startswith(HEAVY)] == []
    assert info["tasks"] == ["take_down"] and info["schedule"] is None
    assert list(info["params"]) == list(TAKEDOWN_PARAMS)
    for name, spec in TAKEDOWN_PARAMS.items():
        value, schema = info["params"][name]
        assert value == spec.value() and schema == {
            k: v for k, v in spec.schema().items() if k != "description"
        }


def test_takedown_dag_removes_records_and_announces(site, site_root, postgres_url, tmp_path):
    destination = tmp_path / "dataset"
    cfg = make_config(postgres_url, "manual__dag_takedown", str(destination))
    seed_candidates(cfg, [f"{site}/photos/chelsea.jpg", f"{site}/photos/coffee-large.jpg"])
    run_download(cfg, 0)
    cat, coffee = (
        sha256_file(site_root / "photos/chelsea.jpg"),
        sha256_file(site_root / "photos/coffee-large.jpg"),
    )
    record_answers(cfg, {cat: "egyptian_cat", coffee: "espresso"})
    assert run_publish(cfg).done == 2
    store = open_store(str(destination))
    before = sorted(store.keys(""))
    assert any(k.startswith("images/egyptian_cat/") for k in before)

    db = postgres_url.replace("postgresql+psycopg2://", "postgresql://")
    migrated = subprocess.run(
        [sys.executable, "-m", "airflow", "db", "migrate"],
        env=_airflow_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert migrated.returncode == 0, migrated.stdout[-3000:] + migrated.stderr[-3000:]
    conf = {"sha256s": [cat], "reason": "photographer's request", "requested_by": "jane@example.org"}
    body = f"run = dag.test(run_conf={conf!r})\nprint('STATE', run.state)\n"
    out = _probe(tmp_path, body, AIRFLOW_CONN_HARVEST_DB=db)
    assert "STATE success" in out, out[-4000:]
    after = sorted(store.keys(""))
    assert not [k for k in after if k.startswith("images/egyptian_cat/")]
    assert [k for k in after if k.startswith("images/espresso/")]
    with session_scope(postgres_url) as session:
        audit = session.scalars(select(Takedown)).one()
    assert audit.reason == "photographer's request" and audit.requested_by == "jane@example.org"
    assert audit.triggered_by.endswith("(manual)") and audit.run_id.startswith("manual__")
    assert audit.counts[str(destination)] == {"before": len(before), "after": len(after)}

    with sqlite3.connect(tmp_path / "airflow" / "airflow.db") as airflow_db:
        events = airflow_db.execute(
            "SELECT asset.uri, asset_event.extra FROM asset_event JOIN asset ON asset.id = asset_event.asset_id"
        ).fetchall()
    by_uri = {uri: json.loads(extra) for uri, extra in events}
    base = destination.resolve().as_uri()
    assert set(by_uri) == {base, f"{base}/images/egyptian_cat"}
    assert by_uri[f"{base}/images/egyptian_cat"]["removed"] == 1
    assert by_uri[base]["before"] == len(before) and by_uri[base]["after"] == len(after)

    # triggered again with the same request: nothing to do, no event
    out = _probe(tmp_path, body, AIRFLOW_CONN_HARVEST_DB=db)
    assert "STATE success" in out
    with sqlite3.connect(tmp_path / "airflow" / "airflow.db") as airflow_db:
        assert airflow_db.execute("SELECT count(*) FROM asset_event").fetchone()[0] == len(events)
