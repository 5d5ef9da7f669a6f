"""Where the S3-compatible store is and the credentials for it, from Airflow or the environment."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class S3Options:
    """Connection details for an S3-compatible store (from the Airflow connection ``aws_default``)."""

    endpoint_url: str | None = None
    aws_access_key_id: str | None = None
    aws_secret_access_key: str | None = None
    region_name: str | None = None

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
    )


def s3_options_from_connection(conn: Any) -> S3Options:
    """An Airflow ``aws`` connection (login/password, extra endpoint_url and region_name) as S3Options.

    Takes any object with those attributes, so this package needs no Airflow import."""
    extra = conn.extra_dejson
    return S3Options(
        endpoint_url=extra.get("endpoint_url") or conn.host or None,
        aws_access_key_id=conn.login or extra.get("aws_access_key_id"),
        aws_secret_access_key=conn.password or extra.get("aws_secret_access_key"),
        region_name=extra.get("region_name"),
    )
