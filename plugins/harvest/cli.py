"""``harvest``: run one stage of a harvest, or the whole pipeline, without Airflow.

Each stage does exactly what its DAG task does (same settings, same state DB rows, same report in the
run's counters), so a stage that died can be re-run from a shell, a cron job or another scheduler::

    harvest stage prepare --run-id manual__1 --params '{"seeds": ["https://example.com/"], "labels": ["goldfish"]}'
    harvest stage crawl --run-id manual__1
    harvest stage download --run-id manual__1 --shard 2
    harvest run --run-id manual__2 --params-file settings.json --destination s3://bucket/prefix

Settings come from ``--params`` (the DAG's Params as JSON) and the same ``HARVEST_*`` variables the DAG
reads; S3 credentials from ``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY`` / ``AWS_ENDPOINT_URL``.
Without ``--params`` a stage after ``prepare`` reuses the settings the run was prepared with.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from sqlalchemy.exc import SQLAlchemyError

from harvest.report import StageReport
from harvest.settings.config import PARAM_DEFAULTS, ConfigError, HarvestConfig, build_config
from harvest.settings.params import env_params
from harvest.stages import STAGE_NAMES

log = logging.getLogger("harvest.cli")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="harvest", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    stage = commands.add_parser("stage", help="run one stage, as its DAG task would")
    stage.add_argument("stage", choices=STAGE_NAMES)
    stage.add_argument(
        "--shard",
        type=int,
        help="run only this shard of a sharded stage (download, classify; default: every shard)",
    )
    run = commands.add_parser("run", help="run every stage in order")
    for sub in (stage, run):
        sub.add_argument("--run-id", required=True, help="the run's scope in the state DB")
        sub.add_argument("--manifest-id", default="", help="names the manifest (default: the run id)")
        given = sub.add_mutually_exclusive_group()
        given.add_argument("--params", help="the DAG Params as a JSON object")
        given.add_argument("--params-file", type=Path, help="a JSON file holding the Params")
        sub.add_argument("--database-url", help="state DB (default: HARVEST_DATABASE_URL or local SQLite)")
        sub.add_argument("--destination", help="s3://bucket/prefix or a folder; overrides the Params")
    return parser


def recorded_params(database_url: str | None, run_id: str, env: Mapping[str, str]) -> dict[str, Any]:
    """The Params a prepared run recorded, so a later stage needs only its run id."""
    from harvest.settings.env import default_database_url, normalize_database_url
    from harvest.state.db import session_scope
    from harvest.state.models import Run

    url = normalize_database_url(database_url or default_database_url(env))
    try:
        with session_scope(url) as session:
            run = session.get(Run, run_id)
            recorded = dict(run.params or {}) if run is not None else None
    except SQLAlchemyError as exc:  # no schema yet, or no database at all
        raise ConfigError(
            [f"cannot read run {run_id!r} from the state DB: {exc.__class__.__name__}"]
        ) from exc
    if recorded is None:
        raise ConfigError([f"run {run_id!r} is not in the state DB: run `harvest stage prepare` first"])
    return {k: v for k, v in recorded.items() if k in PARAM_DEFAULTS}


def settings(args: argparse.Namespace, env: Mapping[str, str] | None = None) -> HarvestConfig:
    env = os.environ if env is None else env
    if args.params is not None:
        given = json.loads(args.params)
    elif args.params_file is not None:
        given = json.loads(args.params_file.read_text())
    elif args.command == "stage" and args.stage != "prepare":
        given = recorded_params(args.database_url, args.run_id, env)
    else:
        given = {}
    if not isinstance(given, dict):
        raise ConfigError(["params: expected a JSON object of DAG Params"])
    params = {**env_params(env), **given}
    if args.destination:
        params["destination"] = args.destination
    return build_config(
        params, args.run_id, env=env, database_url=args.database_url, manifest_id=args.manifest_id
    )


def run_stage(cfg: HarvestConfig, stage: str, shard: int | None = None, classifier=None) -> list[StageReport]:
    """One stage with the calls and bookkeeping of its DAG task (harvest.pipeline.run_stage)."""
    from harvest.pipeline import run_stage as run_one

    return run_one(cfg, stage, shard, classifier)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    for noisy in ("botocore", "boto3", "urllib3", "s3transfer", "alembic"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        cfg = settings(args)
        if args.command == "stage" and args.shard is not None and not 0 <= args.shard < cfg.num_shards:
            raise ConfigError([f"--shard must be between 0 and {cfg.num_shards - 1}, got {args.shard}"])
    except (ConfigError, ValueError, OSError) as exc:
        print(f"harvest: {exc}", file=sys.stderr)
        return 2
    started = time.monotonic()
    name = args.stage if args.command == "stage" else "run"
    log.info("%s of run %s starting (state DB %s)", name, cfg.run_id, _safe(cfg.database_url))
    try:
        if args.command == "run":
            from harvest.pipeline import run_all

            reports = run_all(cfg)
        else:
            reports = run_stage(cfg, args.stage, args.shard)
    except ConfigError as exc:
        print(f"harvest: {exc}", file=sys.stderr)
        return 2
    for report in reports:
        print(json.dumps(report.as_dict(), sort_keys=True, default=str), flush=True)
    log.info("%s of run %s finished in %.2f s", name, cfg.run_id, time.monotonic() - started)
    return 0


def _safe(url: str) -> str:
    """The database URL without its password, for the log."""
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


if __name__ == "__main__":
    sys.exit(main())
