"""HARVEST_* environment settings: how a value is read, and the locations they default to.

Light on purpose (standard library only): the DAG files read it while they are parsed.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

PACKAGE_DIR = Path(__file__).resolve().parents[1]
PROJECT_DIR = PACKAGE_DIR.parents[1]
DEFAULT_MODELS_DIR = PROJECT_DIR / "include" / "models"
DEFAULT_PROFILES_DIR = PROJECT_DIR / "include" / "profiles"


def profiles_dir(env: Mapping[str, str]) -> Path:
    return Path(env.get("HARVEST_PROFILES_DIR") or DEFAULT_PROFILES_DIR)


def harvest_home(env: Mapping[str, str]) -> Path:
    return Path(env.get("HARVEST_HOME") or Path.home() / ".image-harvester").expanduser()


def default_destination(env: Mapping[str, str]) -> str:
    return env.get("HARVEST_DESTINATION") or str(harvest_home(env) / "dataset")


def default_database_url(env: Mapping[str, str]) -> str:
    if env.get("HARVEST_DATABASE_URL"):
        return env["HARVEST_DATABASE_URL"]
    return f"sqlite:///{harvest_home(env) / 'state.db'}"


def normalize_database_url(url: str) -> str:
    """Accept the ``postgres://`` form Airflow connections produce and pick the installed driver."""
    if url.startswith("postgres://"):
        url = "postgresql://" + url[len("postgres://") :]
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg2://" + url[len("postgresql://") :]
    return url


def truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in {"1", "true", "yes", "on"}


def falsy(value: str | None) -> bool:
    return (value or "").strip().lower() in {"0", "false", "no", "off"}


def as_list(value: Any) -> list[str]:
    """Params arrive as lists from the form, but a newline/comma separated string is accepted too."""
    if value is None:
        return []
    if isinstance(value, str):
        parts = value.replace(",", "\n").splitlines()
    else:
        parts = [str(v) for v in value]
    return [p.strip() for p in parts if p and p.strip()]


def env_number(env: Mapping[str, str], name: str, default, minimum, maximum, problems: list[str], cast):
    """An environment setting parsed with ``cast`` and bounded; a bad value is a problem, not a crash."""
    raw = env.get(name)
    if raw is None or not raw.strip():
        return default
    try:
        value = cast(raw)
    except ValueError:
        kind = "an integer" if cast is int else "a number"
        problems.append(f"{name} must be {kind} between {minimum} and {maximum}, got {raw!r}")
        return default
    if not minimum <= value <= maximum:
        problems.append(f"{name} must be between {minimum} and {maximum}, got {value}")
    return value


def env_int(
    env: Mapping[str, str], name: str, default: int, minimum: int, maximum: int, problems: list[str]
) -> int:
    return env_number(env, name, default, minimum, maximum, problems, int)


def env_float(
    env: Mapping[str, str], name: str, default: float, minimum: float, maximum: float, problems: list[str]
) -> float:
    return env_number(env, name, default, minimum, maximum, problems, float)


def chromium_path(env: Mapping[str, str] | None = None) -> str | None:
    """``HARVEST_CHROMIUM``, else Debian's chromium binary (the ``/usr/bin`` launcher is a shell script)."""
    env = os.environ if env is None else env
    if env.get("HARVEST_CHROMIUM"):
        return env["HARVEST_CHROMIUM"]
    for candidate in (
        "/usr/lib/chromium/chromium",
        shutil.which("chromium"),
        shutil.which("chromium-browser"),
    ):
        if candidate and Path(candidate).exists():
            return candidate
    return None
