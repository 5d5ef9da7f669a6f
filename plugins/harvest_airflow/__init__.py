"""The thin layer between Airflow and the domain package: connections and Params -> HarvestConfig.

Both DAG files import it inside their tasks, so parsing a DAG file never pays for it.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import Any

from harvest.settings.config import HarvestConfig, build_config
from harvest.settings.connections import connection_secret
from harvest.settings.env import default_database_url, normalize_database_url
from harvest.settings.params import HARVEST_PARAMS
from harvest.settings.s3 import S3Options, s3_options_from_connection

log = logging.getLogger(__name__)


def connection(conn_id: str):
    """The Airflow connection, or None when it is not defined."""
    from airflow.sdk import BaseHook
    from airflow.sdk.exceptions import AirflowNotFoundException

    try:
        return BaseHook.get_connection(conn_id)
    except AirflowNotFoundException:
        return None


def database_url() -> str | None:
    """``HARVEST_DATABASE_URL``, else the ``harvest_db`` connection; None means the embedded default."""
    if os.environ.get("HARVEST_DATABASE_URL"):
        return os.environ["HARVEST_DATABASE_URL"]
    conn = connection("harvest_db")
    return conn.get_uri() if conn else None


AWS_CONN_ID = "aws_default"


def s3_options() -> S3Options | None:
    """Credentials and endpoint of the ``aws_default`` connection, for AWS or any S3-compatible server."""
    aws = connection(AWS_CONN_ID)
    return s3_options_for(aws) if aws else None


def s3_options_for(conn: Any) -> S3Options:
    """An Airflow ``aws`` connection as S3Options, read the way Airflow's Amazon provider reads it.

    With the provider installed its session factory builds the boto3 session, as for every other DAG: keys,
    session token, ``role_arn`` assumed through STS (``service_config.sts.endpoint_url`` for another STS),
    ``profile_name``, the instance role, region, ``endpoint_url`` and per-service ``service_config``; the
    data path stays boto3, fed that session (refreshing assumed-role credentials as they expire). Without
    the provider only login, password, endpoint_url, region_name and aws_session_token are read.
    """
    try:
        from airflow.providers.amazon.aws.hooks.base_aws import BaseSessionFactory
        from airflow.providers.amazon.aws.utils.connection_wrapper import AwsConnectionWrapper
    except ImportError:
        log.info("apache-airflow-providers-amazon is not installed: reading %s by hand", conn.conn_id)
        return s3_options_from_connection(conn)
    wrapper = AwsConnectionWrapper(conn=conn)
    session = BaseSessionFactory(conn=wrapper, region_name=wrapper.region_name).create_session()
    return S3Options(
        endpoint_url=wrapper.get_service_endpoint_url("s3"),
        region_name=wrapper.region_name or session.region_name,
        session=session,
    )


def run_scope(run_id: str, logical_date) -> str:
    """The state DB scope of a DAG run: its data interval when it has one, else the run itself.

    A backfill or a re-run for a past date gets a new run id but the same logical date, so it finds that
    interval's pages, candidates and images and re-does only classification and publishing.
    """
    if logical_date is None:
        return run_id
    return f"interval__{logical_date.isoformat()}"


#: The Airflow Variable holding the metadata key. Its name contains "secret", one of the words that make
#: Airflow hide a Variable's value in its Variables page and API.
METADATA_KEY_VARIABLE = "harvest_metadata_secret"
#: The name the key had before; still read (and masked in the logs), but the Variables page shows it.
LEGACY_METADATA_KEY_VARIABLE = "harvest_metadata_key"


def mask(secret: str | None) -> None:
    """Have Airflow replace ``secret`` with ``***`` in every log line of this task and its supervisor.

    Airflow masks a Variable's value only when the Variable's name sounds secret, and a value from the
    environment never, so every place that loads a secret says so itself."""
    if secret:
        from airflow.sdk.log import mask_secret

        mask_secret(secret)


def _variable(name: str) -> str | None:
    from airflow.sdk import Variable

    try:
        return Variable.get(name, default=None)
    except Exception:  # noqa: BLE001 - no variable backend reachable: run without encryption
        return None


def metadata_key() -> str | None:
    """The Fernet key for private EXIF fields, masked in the logs: the ``harvest_metadata_key``
    connection's password, else the Variable ``harvest_metadata_secret``, else the Variable under its
    old name ``harvest_metadata_key``."""
    conn = connection("harvest_metadata_key")
    if conn and conn.password:
        mask(conn.password)
        return conn.password
    key = _variable(METADATA_KEY_VARIABLE)
    if not key:
        key = _variable(LEGACY_METADATA_KEY_VARIABLE)
        if key:
            log.warning(
                "the metadata key is in the Variable %r, whose value the Variables page shows; move it to "
                "%r (masked there) or to the connection harvest_metadata_key",
                LEGACY_METADATA_KEY_VARIABLE,
                METADATA_KEY_VARIABLE,
            )
    mask(key)
    return key or None


def _environment() -> dict[str, str]:
    """This process's environment with HARVEST_METADATA_KEY (and HARVEST_FLICKR_API_KEY, from the
    flickr_default connection) filled from Airflow when the environment has none, masked in the task
    log either way."""
    env = dict(os.environ)
    if env.get("HARVEST_METADATA_KEY"):
        mask(env["HARVEST_METADATA_KEY"])
    else:
        env["HARVEST_METADATA_KEY"] = metadata_key() or ""
    if not env.get("HARVEST_FLICKR_API_KEY") and not env.get("AIRFLOW_CONN_FLICKR_DEFAULT"):
        flickr = connection("flickr_default")  # a connection made in the UI or a secrets backend
        if flickr is not None:
            env["HARVEST_FLICKR_API_KEY"] = (
                (flickr.extra_dejson or {}).get("api_key") or flickr.password or ""
            )
    mask(env.get("HARVEST_FLICKR_API_KEY"))
    mask(connection_secret(env.get("AIRFLOW_CONN_FLICKR_DEFAULT", "")))
    return env


def airflow_config(
    params: Mapping[str, Any],
    run_id: str,
    *,
    manifest_id: str,
    require_seeds: bool = True,
    **options: Any,
) -> HarvestConfig:
    """A HarvestConfig from Params and the Airflow connections: the state DB, S3 and the metadata key.
    Both DAGs build theirs here, so they read the same connections and mask the same secrets.
    ``options`` go to build_config (a conf's ``overrides``, ``extra_keys``, ``checks``)."""
    return build_config(
        params,
        run_id,
        env=_environment(),
        database_url=database_url(),
        s3=s3_options(),
        require_seeds=require_seeds,
        manifest_id=manifest_id,
        **options,
    )


def run_conf(context: Mapping[str, Any]) -> dict[str, Any]:
    """The keys the run's trigger (form, REST call, CLI, backfill) gave explicitly."""
    dag_run = context.get("dag_run")
    return dict(getattr(dag_run, "conf", None) or {})


def recorded_params(scope: str) -> dict[str, Any]:
    """The Params the run scope (a date's interval) was last prepared with; empty when it never was,
    or when the state DB has no schema yet (a first run ever)."""
    from sqlalchemy.exc import SQLAlchemyError

    try:
        recorded = original_params(resolved_database_url(), scope)
    except SQLAlchemyError as exc:
        log.info("no recorded settings for %s (%s): the DAG's defaults apply", scope, type(exc).__name__)
        return {}
    return {name: value for name, value in recorded.items() if name in HARVEST_PARAMS}


def run_params(context: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """An image_harvest run's settings as (base, conf): the base is what the date was prepared with
    before (a reprocess or a backfill of a date that ran), else the DAG's Params with their profile
    and environment defaults (what the nightly uses); the conf overrides it key by key."""
    scope = run_scope(context["run_id"], context.get("logical_date"))
    base = {**dict(context["params"]), **recorded_params(scope)}
    return base, run_conf(context)


def settings(context: Mapping[str, Any], **options: Any) -> HarvestConfig:
    """An image_harvest run's HarvestConfig from its settings (:func:`run_params`), its run id and the
    Airflow connections. Every task of a run builds the same one: after validate, the recorded
    settings are the merged ones, and the conf applied on them again changes nothing."""
    base, conf = run_params(context)
    return airflow_config(
        base,
        run_scope(context["run_id"], context.get("logical_date")),
        manifest_id=context["run_id"],
        overrides=conf,
        **options,
    )


def rethreshold_settings(context: Mapping[str, Any]) -> HarvestConfig:
    """An image_rethreshold run's HarvestConfig: the harvest run's state scope, its labels and
    destination when the form leaves them empty, and its manifest named as before."""
    params = dict(context["params"])
    given = params["harvest_run_id"]
    scope = state_run_id(resolved_database_url(), given)
    original = original_params(resolved_database_url(), scope)
    for name in ("labels", "destination"):  # left empty: the harvest run's own
        if not params.get(name):
            params[name] = original.get(name) or params.get(name)
    return airflow_config(
        params,
        scope,
        require_seeds=False,
        manifest_id=given if scope != given else "",
        extra_keys=("harvest_run_id",),
    )


def state_run_id(database_url_: str, run_id: str) -> str:
    """The state DB scope of an Airflow run id: runs with a logical date are stored per interval."""
    from sqlalchemy import select

    from harvest.state.db import session_scope
    from harvest.state.models import Run

    with session_scope(database_url_) as session:
        if session.get(Run, run_id) is not None:
            return run_id
        for scope, params in session.execute(
            select(Run.run_id, Run.params)
            .where(Run.run_id.like("interval__%"))
            .order_by(Run.started_at.desc())
        ):
            if (params or {}).get("manifest_id") == run_id:
                return scope
    return run_id


def original_params(database_url_: str, scope: str) -> dict:
    """The settings a harvest run was started with (empty when the run is unknown)."""
    from harvest.state.db import session_scope
    from harvest.state.models import Run

    with session_scope(database_url_) as session:
        run = session.get(Run, scope)
        return dict(run.params or {}) if run else {}


def resolved_database_url() -> str:
    return normalize_database_url(database_url() or default_database_url(os.environ))
