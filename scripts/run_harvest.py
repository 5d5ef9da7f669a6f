"""Run the ``image_harvest`` DAG once, in this process, through Airflow's ``dag.test()``.

``make harvest`` uses it with ``--demo``: the bundled offline demo site is built and served on
loopback, the embedded defaults apply (SQLite state and a local output folder under ``.harvest/``),
and the DAG runs exactly as the scheduler would run it, task by task. Pass seeds, labels and a
destination to harvest real sites the same way.

Every DAG Param is an option (generated from harvest/settings/params.py: ``--threshold 0.5
--top-k 3 --no-same-domain``), and ``--params-file`` (JSON or YAML) / ``--params`` (JSON) give
several at once; options win over ``--params``, which wins over the file. See docs/command-line.md.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import time
from contextlib import ExitStack
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _parser() -> argparse.ArgumentParser:
    """The script's options plus one per DAG Param (harvest.settings.cli_options)."""
    from harvest.settings.cli_options import add_param_options

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument(
        "--demo",
        action="store_true",
        help="serve the bundled demo site; its seeds and labels apply unless the Params give seeds or a profile",
    )
    parser.add_argument("--summary-json", help="also write the run summary to this file")
    parser.add_argument(
        "--progress",
        choices=("auto", "always", "never"),
        default="auto",
        help="a progress line per stage, updated in place (auto: when stdout is a terminal)",
    )
    add_param_options(parser)
    return parser


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    return _parser().parse_args(argv)


def _conf(args: argparse.Namespace) -> dict:
    """The run's conf: options > --params > --params-file (the demo's seeds and labels below them)."""
    from harvest.settings.cli_options import given_params
    from harvest.settings.errors import ConfigError

    try:
        return given_params(args)
    except ConfigError as exc:
        sys.exit(f"run_harvest: {exc}")


def _prepare_environment() -> Path:
    """Airflow reads its settings at import time, so they are set before the first airflow import."""
    home = Path(os.environ.setdefault("HARVEST_HOME", str(REPO / ".harvest")))
    home.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("AIRFLOW_HOME", str(home / "airflow"))
    os.environ.setdefault("AIRFLOW__CORE__DAGS_FOLDER", str(REPO / "dags"))
    os.environ.setdefault("AIRFLOW__CORE__PLUGINS_FOLDER", str(REPO / "plugins"))
    os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
    os.environ.setdefault("AIRFLOW__CORE__UNIT_TEST_MODE", "False")
    Path(os.environ["AIRFLOW_HOME"]).mkdir(parents=True, exist_ok=True)
    return home


def _migrate_airflow_db(home: Path) -> None:
    log = home / "airflow-db-migrate.log"
    with log.open("w") as handle:
        result = subprocess.run(
            [sys.executable, "-m", "airflow", "db", "migrate"], stdout=handle, stderr=subprocess.STDOUT
        )
    if result.returncode:
        sys.exit(f"`airflow db migrate` failed; see {log}")


def _ensure_network_pool() -> None:
    """The DAG's network tasks run in this pool; a scheduler leaves tasks of a missing pool queued."""
    from airflow.models.pool import Pool

    name = os.environ.get("HARVEST_NETWORK_POOL") or "default_pool"
    if Pool.get_pool(name) is None:
        Pool.create_or_update_pool(
            name, slots=4, description="harvest tasks that fetch from the network", include_deferred=False
        )


def _load_dag():
    spec = importlib.util.spec_from_file_location("image_harvest", REPO / "dags" / "image_harvest.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.harvest_dag


def _database_url() -> str:
    """The state DB the DAG used: same precedence as the DAG (env, then `harvest_db`, then SQLite)."""
    from harvest.settings.env import default_database_url, normalize_database_url

    if os.environ.get("HARVEST_DATABASE_URL"):
        return normalize_database_url(os.environ["HARVEST_DATABASE_URL"])
    from airflow.exceptions import AirflowNotFoundException
    from airflow.models.connection import Connection

    try:
        return normalize_database_url(Connection.get_connection_from_secrets("harvest_db").get_uri())
    except AirflowNotFoundException:
        return normalize_database_url(default_database_url(os.environ))


def _summary(run, state: str, seconds: float) -> dict:
    from harvest.state.db import session_scope
    from harvest.state.models import Run
    from harvest_airflow import run_scope

    summary = {"run_id": run.run_id, "state": state, "seconds": round(seconds, 1)}
    with session_scope(_database_url()) as session:
        run = session.get(Run, run_scope(run.run_id, run.logical_date))
        if run is not None:
            summary["counters"] = run.counters
            publish = (run.counters or {}).get("publish", {})
            summary["kept"] = publish.get("kept")
            summary["manifest"] = publish.get("manifest")
            summary["destination"] = (run.params or {}).get("destination")
            summary["params"] = run.params  # what the run recorded: the options, file and defaults merged
    return summary


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    conf = _conf(args)
    display = _progress_display(args.progress)
    home = _prepare_environment()
    with ExitStack() as stack:
        if args.demo and not conf.get("seeds") and not conf.get("profile"):
            from harvest import demo_site

            os.environ.setdefault("HARVEST_ALLOW_PRIVATE_NETWORKS", "1")
            root = demo_site.build_site(home / "demo-site")
            base = stack.enter_context(demo_site.serve(root))
            print(f"Serving the demo site at {base}/ (from {root})", flush=True)
            conf["seeds"] = [f"{base}/index.html"]
            conf.setdefault("labels", list(demo_site.DEMO_LABELS))
        if not conf.get("profile") and (not conf.get("seeds") or not conf.get("labels")):
            sys.exit("give --seeds and --labels (or --demo, --profile or --params-file); see --help")

        started = time.monotonic()
        _migrate_airflow_db(home)
        _ensure_network_pool()
        dag = _load_dag()
        if display is not None:
            stack.enter_context(display)
        run = dag.test(run_conf=conf)
        stack.close()  # the progress lines end before the summary is printed
        state = str(getattr(run.state, "value", run.state))
        summary = _summary(run, state, time.monotonic() - started)

    print(json.dumps(summary.get("counters", {}), indent=1, sort_keys=True))
    if args.summary_json:
        Path(args.summary_json).write_text(json.dumps(summary, indent=1, sort_keys=True))
    if state != "success":
        print(
            f"\nHarvest run {run.run_id} ended {state} after {summary['seconds']} s; see the task logs above."
        )
        return 1
    print(
        f"\nHarvest run {run.run_id} succeeded in {summary['seconds']} s: {summary.get('kept')} images kept."
        f"\nDataset:  {summary.get('destination')}\nManifest: {summary.get('manifest')}"
    )
    return 0


def _progress_display(mode: str):
    """On a terminal, a progress line per stage (harvest.progress) instead of Airflow's INFO task
    logs, which would scroll it away: warnings and errors still print."""
    if mode == "never" or (mode == "auto" and not sys.stdout.isatty()):
        return None
    from harvest.progress import ProgressDisplay

    os.environ.setdefault("AIRFLOW__LOGGING__LOGGING_LEVEL", "WARNING")
    return ProgressDisplay(sys.stdout)


if __name__ == "__main__":
    sys.exit(main())
