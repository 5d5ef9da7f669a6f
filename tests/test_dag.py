"""The DAG as Airflow sees it: a thin, instantly parsed file, and a whole run through ``dag.test()``."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import DEFAULT_EXPORT_KEYS, bucket_objects, expected_image_keys, manifest_rows

from harvest.dataset.layout import manifest_key
from harvest.demo_site import DEMO_LABELS

REPO = Path(__file__).resolve().parents[1]
HEAVY = (
    "tensorflow",
    "keras",
    "boto3",
    "bs4",
    "harvest.stages.crawl",
    "harvest.stages.classify",
    "harvest.state",
)


def _airflow_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "HARVEST_"))}
    env.update(
        AIRFLOW_HOME=str(tmp_path / "airflow"),
        AIRFLOW__CORE__DAGS_FOLDER=str(REPO / "dags"),
        AIRFLOW__CORE__PLUGINS_FOLDER=str(REPO / "plugins"),
        AIRFLOW__CORE__LOAD_EXAMPLES="False",
        HARVEST_HOME=str(tmp_path / "harvest-home"),
        HARVEST_ALLOW_PRIVATE_NETWORKS="1",
        **extra,
    )
    return env


def test_dag_file_does_no_work_at_import(tmp_path):
    probe = (
        "import importlib.util, json, sys\n"
        f"spec = importlib.util.spec_from_file_location('image_harvest', {str(REPO / 'dags/image_harvest.py')!r})\n"
        "module = importlib.util.module_from_spec(spec); spec.loader.exec_module(module)\n"
        "dag = module.harvest_dag\n"
        "print(json.dumps({'modules': sorted(sys.modules), 'tasks': sorted(dag.task_ids),\n"
        "  'schedule': str(dag.schedule), 'catchup': dag.catchup, 'params': sorted(dag.params.keys()),\n"
        "  'retries': dag.default_args.get('retries')}))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], env=_airflow_env(tmp_path), capture_output=True, text=True, check=True
    )
    info = json.loads(out.stdout.strip().splitlines()[-1])
    loaded = [m for m in info["modules"] if m.startswith(HEAVY)]
    assert loaded == [], f"the DAG file imported {loaded} at parse time"
    assert info["tasks"] == [
        "classify_images",
        "crawl_seeds",
        "curate_keepers",
        "download_images",
        "extract_links",
        "publish_images",
        "select_keepers",
        "upload_images",
        "validate",
    ]
    assert info["schedule"] == "@daily" and info["catchup"] is False and info["retries"] >= 1
    assert set(info["params"]) >= {
        "profile",
        "seeds",
        "labels",
        "max_depth",
        "max_pages",
        "same_domain",
        "min_width",
        "min_height",
        "top_k",
        "threshold",
        "destination",
        "model",
    }


def test_index_dag_is_asset_triggered_and_light(tmp_path):
    probe = (
        "import importlib.util, json, sys\n"
        f"spec = importlib.util.spec_from_file_location('ix', {str(REPO / 'dags/harvest_dataset_index.py')!r})\n"
        "module = importlib.util.module_from_spec(spec); spec.loader.exec_module(module)\n"
        "from airflow.sdk import DAG\n"
        "dag = next(v for v in vars(module).values() if isinstance(v, DAG))\n"
        "print(json.dumps({'modules': sorted(sys.modules), 'tasks': sorted(dag.task_ids),\n"
        "  'schedule': repr(dag.schedule)}))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], env=_airflow_env(tmp_path), capture_output=True, text=True, check=True
    )
    info = json.loads(out.stdout.strip().splitlines()[-1])
    assert [m for m in info["modules"] if m.startswith(HEAVY)] == []
    assert info["tasks"] == ["rebuild_index"]
    assert "harvest_images" in info["schedule"]


def test_rethreshold_dag_file_does_no_work_at_import(tmp_path):
    probe = (
        "import importlib.util, json, sys\n"
        f"spec = importlib.util.spec_from_file_location('image_rethreshold', {str(REPO / 'dags/image_rethreshold.py')!r})\n"
        "module = importlib.util.module_from_spec(spec); spec.loader.exec_module(module)\n"
        "dag = module.rethreshold_dag\n"
        "print(json.dumps({'modules': sorted(sys.modules), 'tasks': sorted(dag.task_ids),\n"
        "  'schedule': dag.schedule, 'params': sorted(dag.params.keys())}))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], env=_airflow_env(tmp_path), capture_output=True, text=True, check=True
    )
    info = json.loads(out.stdout.strip().splitlines()[-1])
    loaded = [m for m in info["modules"] if m.startswith(HEAVY)]
    assert loaded == [], f"the DAG file imported {loaded} at parse time"
    assert info["tasks"] == ["rethreshold"]
    assert info["schedule"] is None
    assert set(info["params"]) == {"harvest_run_id", "labels", "top_k", "threshold", "model", "destination"}


@pytest.mark.slow
def test_whole_dag_on_postgres_and_s3(postgres_url, s3, bucket, site, site_root, models_dir, tmp_path):
    """The DAG, run by Airflow task by task, with the state DB and S3 reached through Airflow connections."""
    aws = {
        "conn_type": "aws",
        "login": s3.aws_access_key_id,
        "password": s3.aws_secret_access_key,
        "extra": {"endpoint_url": s3.endpoint_url, "region_name": s3.region_name},
    }
    env = _airflow_env(
        tmp_path,
        AIRFLOW_CONN_AWS_DEFAULT=json.dumps(aws),
        AIRFLOW_CONN_HARVEST_DB=postgres_url.replace("postgresql+psycopg2://", "postgresql://"),
        HARVEST_SHARDS="3",
        HARVEST_MIN_SHARDS="3",  # the demo site's few candidates would make one shard
    )
    summary_path = tmp_path / "summary.json"
    result = subprocess.run(
        [
            sys.executable,
            str(REPO / "scripts" / "run_harvest.py"),
            "--seeds",
            f"{site}/index.html",
            "--labels",
            ",".join(DEMO_LABELS),
            "--destination",
            f"s3://{bucket}/nightly",
            "--summary-json",
            str(summary_path),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    summary = json.loads(summary_path.read_text())
    assert summary["state"] == "success"
    for step in ("download", "classify", "select", "upload"):
        assert {f"{step}[{shard}]" for shard in range(3)} <= set(summary["counters"]), step
    assert summary["counters"]["extract"]["shards"] == 3

    objects = bucket_objects(s3, bucket, "nightly")
    run_manifest = manifest_key(summary["run_id"])
    assert set(objects) == expected_image_keys(site_root) | {run_manifest} | DEFAULT_EXPORT_KEYS
    rows = manifest_rows(objects[run_manifest])
    assert sorted(row["label"] for row in rows) == ["daisy", "egyptian_cat", "espresso", "palace"]
    assert len({row["sha256"] for row in rows}) == 4
    # the domain package logged its progress and the per-domain table into the task logs
    assert "download shard" in result.stdout + result.stderr
    # not a terminal: plain log lines, no progress display and no control characters
    assert "\r" not in result.stdout + result.stderr and "\x1b" not in result.stdout + result.stderr
    assert summary["counters"]["domains"][0]["domain"] == "127.0.0.1"

    # the re-threshold DAG decides again from the stored scores, given the harvest's Airflow run id and no
    # labels (so the run's own), and rewrites that run's manifest
    probe = (
        "import importlib.util, sys\n"
        f"spec = importlib.util.spec_from_file_location('rt', {str(REPO / 'dags/image_rethreshold.py')!r})\n"
        "module = importlib.util.module_from_spec(spec); spec.loader.exec_module(module)\n"
        f"run = module.rethreshold_dag.test(run_conf={{'harvest_run_id': {summary['run_id']!r}, 'threshold': 0.9}})\n"
        "print('STATE', run.state)\n"
    )
    rethreshold = subprocess.run(
        [sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=300
    )
    assert "STATE success" in rethreshold.stdout, rethreshold.stdout[-6000:] + rethreshold.stderr[-6000:]
    after = manifest_rows(bucket_objects(s3, bucket, "nightly")[run_manifest])
    assert [row["label"] for row in after] == ["espresso"]
    assert "tensorflow" not in rethreshold.stdout + rethreshold.stderr.replace("TF_ENABLE", "")

    # publishing announced the new images as asset events, per label and for the whole destination
    with sqlite3.connect(tmp_path / "airflow" / "airflow.db") as db:
        events = db.execute(
            "SELECT asset.uri, asset_event.extra FROM asset_event JOIN asset ON asset.id = asset_event.asset_id"
        ).fetchall()
    by_uri = {uri: json.loads(extra) for uri, extra in events}
    base = f"s3://{bucket}/nightly"
    assert set(by_uri) == {base} | {
        f"{base}/images/{label}" for label in ("daisy", "egyptian_cat", "espresso", "palace")
    }
    assert by_uri[f"{base}/images/daisy"]["new"] == 1 and by_uri[base]["kept"] == 4


def _form_schema(spec) -> dict:
    """What Airflow keeps as a Param's schema: everything but the description, which it keeps apart."""
    return {k: v for k, v in spec.schema().items() if k != "description"}


def test_params_match_their_specification(tmp_path):
    """Both trigger forms, PARAM_DEFAULTS and HarvestConfig's defaults all come from one specification."""
    import dataclasses

    from harvest.settings.config import PARAM_DEFAULTS, HarvestConfig
    from harvest.settings.params import HARVEST_PARAMS, HARVEST_RUN_ID, RETHRESHOLD_DESCRIPTIONS

    probe = (
        "import importlib.util, json\n"
        "forms = {}\n"
        "for name, attr in (('image_harvest', 'harvest_dag'), ('image_rethreshold', 'rethreshold_dag')):\n"
        f"    spec = importlib.util.spec_from_file_location(name, {str(REPO / 'dags')!r} + f'/{{name}}.py')\n"
        "    module = importlib.util.module_from_spec(spec); spec.loader.exec_module(module)\n"
        "    params = getattr(module, attr).params\n"
        "    forms[name] = {k: [params.get_param(k).value, params.get_param(k).schema,\n"
        "                       params.get_param(k).description] for k in params.keys()}\n"
        "print(json.dumps(forms))\n"
    )
    env = _airflow_env(
        tmp_path, HARVEST_MODEL="a-model", HARVEST_SEEDS="https://a.example/,https://b.example/"
    )
    out = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, check=True)
    forms = json.loads(out.stdout.strip().splitlines()[-1])

    harvest = forms["image_harvest"]
    assert list(harvest) == list(HARVEST_PARAMS)
    for name, spec in HARVEST_PARAMS.items():
        value, schema, description = harvest[name]
        assert value == spec.value(env), name
        # the profile's choices are the files the DAG finds at parse time, not in the spec
        assert {k: v for k, v in schema.items() if name != "profile" or k != "enum"} == _form_schema(spec), (
            name
        )
        assert description == spec.description, name
    assert harvest["model"][0] == "a-model" and harvest["seeds"][0] == [
        "https://a.example/",
        "https://b.example/",
    ]
    assert harvest["profile"][1]["enum"][0] == ""

    rethreshold = forms["image_rethreshold"]
    assert list(rethreshold) == [HARVEST_RUN_ID.name, *RETHRESHOLD_DESCRIPTIONS]
    assert rethreshold[HARVEST_RUN_ID.name][1] == _form_schema(HARVEST_RUN_ID)
    for name, description in RETHRESHOLD_DESCRIPTIONS.items():
        value, schema, shown = rethreshold[name]
        assert schema == _form_schema(HARVEST_PARAMS[name]), name
        assert shown == description and value == HARVEST_PARAMS[name].value(env if name == "model" else None)

    assert {name: spec.value() for name, spec in HARVEST_PARAMS.items()} == PARAM_DEFAULTS
    defaults = {f.name: f.default for f in dataclasses.fields(HarvestConfig)}
    for name, spec in HARVEST_PARAMS.items():
        if name not in ("seeds", "labels", "destination"):  # required fields of the config
            assert defaults[name] == spec.default, name
