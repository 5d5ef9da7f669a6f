"""``harvest``: run one stage of a harvest, or the whole pipeline, without Airflow.

Each stage does exactly what its DAG task does (same settings, same state DB rows, same report in the
run's counters), so a stage that died can be re-run from a shell, a cron job or another scheduler::

    harvest stage prepare --run-id manual__1 --params '{"seeds": ["https://example.com/"], "labels": ["goldfish"]}'
    harvest stage crawl --run-id manual__1
    harvest stage download --run-id manual__1 --shard 2
    harvest run --run-id manual__2 --params-file settings.json --destination s3://bucket/prefix
    harvest takedown --params '{"page_urls": ["https://example.com/a.html"], "reason": "DMCA 2026-7"}'

Every DAG Param is an option too (``--threshold 0.5 --top-k 3``), generated from
harvest/settings/params.py; options win over ``--params`` (JSON), which wins over ``--params-file``
(JSON or YAML), which wins over the same ``HARVEST_*`` variables the DAG reads; S3 credentials from ``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY`` / ``AWS_ENDPOINT_URL``.
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
from contextlib import nullcontext
from typing import Any, TextIO

from sqlalchemy.exc import SQLAlchemyError

from harvest.progress import ProgressDisplay
from harvest.report import StageReport
from harvest.settings.cli_options import add_param_options, given_params, merge
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
        sub.add_argument("--database-url", help="state DB (default: HARVEST_DATABASE_URL or local SQLite)")
        sub.add_argument(
            "--progress",
            choices=("auto", "always", "never"),
            default="auto",
            help="a progress line per stage, updated in place (auto: when stdout is a terminal)",
        )
        add_param_options(sub)
    takedown = commands.add_parser("takedown", help="take images down everywhere and block them")
    takedown.add_argument(
        "--params", required=True, help="image_takedown's Params as JSON (image_urls, ..., reason)"
    )
    takedown.add_argument("--database-url", help="state DB (default: HARVEST_DATABASE_URL or local SQLite)")
    return parser


def _takedown(args: argparse.Namespace) -> int:
    """``harvest takedown``: what the image_takedown DAG does, run by the user at this shell."""
    import getpass

    from harvest.settings.env import default_database_url, normalize_database_url
    from harvest.settings.s3 import s3_options_from_env
    from harvest.takedown.request import TakedownError, parse_request
    from harvest.takedown.run import run_takedown

    try:
        params = json.loads(args.params)
        if not isinstance(params, dict):
            raise ValueError("expected a JSON object of the takedown's Params")
        request = parse_request(params)
    except (TakedownError, ValueError) as exc:
        print(f"harvest: takedown: {exc}", file=sys.stderr)
        return 2
    url = normalize_database_url(args.database_url or default_database_url(os.environ))
    result = run_takedown(
        url, request, s3=s3_options_from_env(os.environ), triggered_by=f"{getpass.getuser()} (cli)"
    )
    print(json.dumps(result.as_dict(), sort_keys=True), flush=True)
    return 0


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
    """The run's settings: options > ``--params`` > ``--params-file`` > defaults, where the defaults
    are the Params a prepared run recorded (a stage after prepare, given no file or JSON) or else the
    environment's (HARVEST_SEEDS, ...)."""
    env = os.environ if env is None else env
    given = given_params(args)
    reuse = args.command == "stage" and args.stage != "prepare" and args.params is None
    if reuse and args.params_file is None:
        defaults = recorded_params(args.database_url, args.run_id, env)
    else:
        defaults = env_params(env)
    params = merge(defaults, given)
    return build_config(
        params, args.run_id, env=env, database_url=args.database_url, manifest_id=args.manifest_id
    )


def run_stage(cfg: HarvestConfig, stage: str, shard: int | None = None, classifier=None) -> list[StageReport]:
    """One stage with the calls and bookkeeping of its DAG task (harvest.pipeline.run_stage)."""
    from harvest.pipeline import run_stage as run_one

    return run_one(cfg, stage, shard, classifier)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "takedown":
        _configure_logging(None)
        return _takedown(args)
    display = progress_display(args.progress)
    _configure_logging(display)
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
        with display or nullcontext():
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


def progress_display(mode: str, stream: TextIO | None = None) -> ProgressDisplay | None:
    """The per-stage progress lines: on a terminal (``auto``), always, or never."""
    stream = stream or sys.stdout
    if mode == "never" or (mode == "auto" and not stream.isatty()):
        return None
    return ProgressDisplay(stream)


class _AboveProgress(logging.Handler):
    """Log records printed above the running stage's progress line, which is redrawn under them."""

    def __init__(self, display: ProgressDisplay) -> None:
        super().__init__()
        self.display = display

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.display.write_above(self.format(record))
        except Exception:  # noqa: BLE001 - logging must never break the run
            self.handleError(record)


def _configure_logging(display: ProgressDisplay | None) -> None:
    """INFO log lines on stderr; with a progress display, the lines replace the stages' own progress
    messages, so the terminal shows warnings and errors only, printed above the progress lines."""
    fmt = "%(asctime)s %(levelname)s %(name)s: %(message)s"
    if display is None:
        logging.basicConfig(level=logging.INFO, stream=sys.stderr, format=fmt)
    else:
        handler = _AboveProgress(display)
        handler.setFormatter(logging.Formatter(fmt))
        logging.basicConfig(level=logging.WARNING, handlers=[handler])
    for noisy in ("botocore", "boto3", "urllib3", "s3transfer", "alembic"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def _safe(url: str) -> str:
    """The database URL without its password, for the log."""
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


if __name__ == "__main__":
    sys.exit(main())
