"""`harvest stage ...` runs one DAG task's work without Airflow; `harvest run` runs them all."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from helpers import expected_image_keys, manifest_rows

from harvest.cli import _parser, main, settings
from harvest.demo_site import DEMO_LABELS
from harvest.state.db import session_scope
from harvest.state.models import Run


def test_stages_one_at_a_time_publish_the_demo_dataset(tmp_path, site, site_root, models_dir, capsys):
    database = f"sqlite:///{tmp_path / 'state.db'}"
    params = json.dumps({"seeds": [f"{site}/index.html"], "labels": list(DEMO_LABELS)})
    common = ["--run-id", "manual__cli", "--database-url", database]
    out = tmp_path / "dataset"

    assert main(["stage", "prepare", *common, "--params", params, "--destination", str(out)]) == 0
    # later stages need only the run id: they reuse the settings the run was prepared with
    for stage in ("crawl", "extract", "download", "classify", "publish"):
        assert main(["stage", stage, *common]) == 0, stage

    published = {p.relative_to(out).as_posix() for p in (out / "images").rglob("*.jpg")}
    assert published == expected_image_keys(site_root)
    rows = manifest_rows((out / "manifests" / "manual__cli.jsonl").read_bytes())
    assert sorted(row["key"] for row in rows) == sorted(published)
    with session_scope(database) as session:
        run = session.get(Run, "manual__cli")
        counters, shards = run.counters, run.shards
    # the same bookkeeping as the DAG tasks: one report per task, the run statistics after publishing
    assert {"crawl", "extract", "classify", "publish", "domains"} <= set(counters)
    # a run of a few dozen candidates is one shard (one per HARVEST_SHARD_SIZE candidates)
    assert shards == 1 and counters["extract"]["shards"] == 1
    assert {key for key in counters if key.startswith("download")} == {"download[0]"}
    reports = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    assert reports[-1]["stage"] == "publish" and reports[-1]["kept"] == len(published)


def test_bad_settings_exit_with_every_problem(tmp_path):
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "harvest.cli",
            "stage",
            "prepare",
            "--run-id",
            "x",
            "--params",
            '{"seeds": []}',
        ],
        capture_output=True,
        text=True,
        env={**os.environ, "HARVEST_HOME": str(tmp_path)},
    )
    assert result.returncode == 2
    assert "seeds: give at least one" in result.stderr and "labels: give at least one" in result.stderr
    assert (
        main(["stage", "crawl", "--run-id", "never-prepared", "--database-url", f"sqlite:///{tmp_path}/s.db"])
        == 2
    )


def test_s3_credentials_and_endpoint_come_from_the_environment():
    args = _parser().parse_args(
        ["run", "--run-id", "r", "--params", '{"seeds": ["https://example.com/"], "labels": ["daisy"]}']
    )
    env = {
        "AWS_ENDPOINT_URL": "http://127.0.0.1:9000",
        "AWS_ACCESS_KEY_ID": "key",
        "AWS_SECRET_ACCESS_KEY": "secret",
        "HARVEST_DESTINATION": "s3://bucket/prefix",
    }
    cfg = settings(args, env)
    assert cfg.destination == "s3://bucket/prefix" and cfg.staging == "s3://bucket/prefix/_staging"
    assert (cfg.s3.endpoint_url, cfg.s3.aws_access_key_id, cfg.s3.aws_secret_access_key) == (
        "http://127.0.0.1:9000",
        "key",
        "secret",
    )


def test_a_misspelt_cli_param_is_refused_with_the_right_name(tmp_path, capsys):
    params = '{"seeds": ["https://example.com/"], "labels": ["goldfish"], "treshold": 0.5}'
    assert main(["stage", "prepare", "--run-id", "x", "--params", params]) == 2
    assert "unknown setting 'treshold'; did you mean 'threshold'?" in capsys.readouterr().err
