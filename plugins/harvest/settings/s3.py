"""Where the S3-compatible store is and the credentials for it, from Airflow or the environment."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class S3Options:
    """Connection details for an S3-compatible store (from the Airflow connection ``aws_default``).

    ``session`` is a boto3 Session that already holds the credentials (Airflow's Amazon provider builds it
    from the connection: keys, session token, an assumed role, a profile or the instance role) and refreshes
    them when they expire; without one the keys below, else boto3's own chain (environment, profile, instance
    role) apply.
    """

    endpoint_url: str | None = None
    aws_access_key_id: str | None = None
    aws_secret_access_key: str | None = None
    region_name: str | None = None
    aws_session_token: str | None = None
    session: Any = field(default=None, compare=False)

    def __repr__(self) -> str:  # never print the secret
        return f"S3Options(endpoint_url={self.endpoint_url!r}, region_name={self.region_name!r})"


def s3_options_from_env(env: Mapping[str, str]) -> S3Options | None:
    """Outside Airflow, the standard AWS variables (plus an endpoint URL) describe the S3 store."""
    endpoint = env.get("HARVEST_S3_ENDPOINT_URL") or env.get("AWS_ENDPOINT_URL")
    key = env.get("AWS_ACCESS_KEY_ID")
    if not (endpoint or key):
        return None
    return S3Options(
        endpoint_url=endpoint,
        aws_access_key_id=key,
        aws_secret_access_key=env.get("AWS_SECRET_ACCESS_KEY"),
        region_name=env.get("AWS_DEFAULT_REGION") or env.get("AWS_REGION"),
        aws_session_token=env.get("AWS_SESSION_TOKEN"),
    )


def s3_options_from_connection(conn: Any) -> S3Options:
    """An Airflow ``aws`` connection read by hand (login/password, extra endpoint_url, region_name and
    aws_session_token), for a deployment without the Amazon provider.

    Takes any object with those attributes, so this package needs no Airflow import."""
    extra = conn.extra_dejson
    return S3Options(
        endpoint_url=extra.get("endpoint_url") or conn.host or None,
        aws_access_key_id=conn.login or extra.get("aws_access_key_id"),
        aws_secret_access_key=conn.password or extra.get("aws_secret_access_key"),
        region_name=extra.get("region_name"),
        aws_session_token=extra.get("aws_session_token"),
    )
