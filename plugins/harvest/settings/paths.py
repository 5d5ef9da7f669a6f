"""Where a run may read and write: local paths inside the roots and outside every folder code is
loaded from, S3 buckets among the allowed ones."""

from __future__ import annotations

import configparser
import json
import os
import re
import site
import sysconfig
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import urlsplit

from harvest.settings.env import PACKAGE_DIR, PROJECT_DIR, harvest_home


def is_s3(location: str) -> bool:
    return location.startswith("s3://")


def _validate_destination(dest: str) -> str | None:
    if is_s3(dest):
        parts = urlsplit(dest)
        if not parts.netloc:
            return f"destination {dest!r}: expected s3://bucket/prefix"
        return None
    if "://" in dest:
        return f"destination {dest!r}: use s3://bucket/prefix or a local folder path"
    return None


#: what each protected folder is, in the refusal message
AIRFLOW_DAGS = "Airflow's DAGs folder"
AIRFLOW_PLUGINS = "Airflow's plugins folder"
PROJECT_CODE = "the project's code"
PYTHON_LIBRARY = "a folder Python imports from"


def _setting_list(raw: str | None) -> list[str]:
    """An os.pathsep- or comma-separated setting as its non-empty items."""
    return [item.strip() for item in re.split(f"[,{re.escape(os.pathsep)}]", raw or "") if item.strip()]


def _absolute(path: str | Path) -> Path:
    """``path`` made absolute and ``..`` collapsed, by text alone (the file system is not asked)."""
    return Path(os.path.abspath(os.path.expanduser(str(path))))


def _real(path: str | Path) -> Path:
    """``path`` with every symbolic link and ``..`` resolved, as far as it exists (the part that does
    not exist yet is appended to its nearest existing parent's real path)."""
    return Path(os.path.realpath(os.path.expanduser(str(path))))


def _within(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def local_roots(env: Mapping[str, str]) -> tuple[Path, ...]:
    """The folders local destinations, staging areas and URL lists must lie in: HARVEST_LOCAL_ROOTS
    (os.pathsep- or comma-separated), else the harvest home."""
    return tuple(_absolute(root) for root in _setting_list(env.get("HARVEST_LOCAL_ROOTS"))) or (
        _absolute(harvest_home(env)),
    )


def allowed_buckets(env: Mapping[str, str]) -> frozenset[str]:
    """HARVEST_ALLOWED_BUCKETS: the S3 buckets a run may use; empty allows any."""
    return frozenset(_setting_list(env.get("HARVEST_ALLOWED_BUCKETS")))


def _airflow_cfg(source: Mapping[str, str], home: Path) -> configparser.ConfigParser:
    """The airflow.cfg the environment points at (an empty parser when there is none or it is unreadable)."""
    parser = configparser.ConfigParser(interpolation=None, strict=False)
    try:
        parser.read(Path(source.get("AIRFLOW_CONFIG") or home / "airflow.cfg").expanduser())
    except (configparser.Error, OSError, UnicodeDecodeError):
        pass
    return parser


def _bundle_paths(raw: str | None) -> list[str]:
    """Local folders named by Airflow 3's DAG bundle list (a JSON list of bundles with kwargs.path)."""
    try:
        bundles = json.loads(raw or "[]")
    except ValueError:
        return []
    paths = (
        [(b.get("kwargs") or {}).get("path") for b in bundles if isinstance(b, dict)]
        if isinstance(bundles, list)
        else []
    )
    return [p for p in paths if isinstance(p, str) and p]


def _airflow_code_folders(source: Mapping[str, str]) -> list[tuple[str, str]]:
    """(folder, what) for the folders Airflow loads code from, as one environment configures it: the
    variables, its airflow.cfg, the DAG bundles and the defaults under AIRFLOW_HOME."""
    home = Path(source.get("AIRFLOW_HOME") or "~/airflow").expanduser()
    cfg = _airflow_cfg(source, home)

    def from_cfg(section: str, option: str) -> str:
        return cfg.get(section, option, fallback="").replace("{AIRFLOW_HOME}", str(home))

    folders = [
        (source.get("AIRFLOW__CORE__DAGS_FOLDER", ""), AIRFLOW_DAGS),
        (from_cfg("core", "dags_folder"), AIRFLOW_DAGS),
        (str(home / "dags"), AIRFLOW_DAGS),
        (source.get("AIRFLOW__CORE__PLUGINS_FOLDER", ""), AIRFLOW_PLUGINS),
        (from_cfg("core", "plugins_folder"), AIRFLOW_PLUGINS),
        (str(home / "plugins"), AIRFLOW_PLUGINS),
    ]
    bundles = source.get("AIRFLOW__DAG_PROCESSOR__DAG_BUNDLE_CONFIG_LIST") or from_cfg(
        "dag_processor", "dag_bundle_config_list"
    )
    folders.extend((path, AIRFLOW_DAGS) for path in _bundle_paths(bundles))
    return [(folder, what) for folder, what in folders if folder.strip()]


def protected_folders(env: Mapping[str, str]) -> list[tuple[Path, str]]:
    """(real path, what) of the folders no run may read or write, whatever the roots say: a file put
    there can become code that Airflow or Python runs (Airflow loads any zip archive in its DAGs folder
    as DAGs, whatever its name). Airflow's settings are read from ``env`` and from this process's own
    environment, so a mapping passed in cannot hide the real ones."""
    found: dict[Path, str] = {}
    for source in (env, os.environ):
        for folder, what in _airflow_code_folders(source):
            found.setdefault(_real(folder), what)
    for folder in (
        PROJECT_DIR / "dags",
        PROJECT_DIR / "plugins",
        PROJECT_DIR / "include",
        PACKAGE_DIR.parent,
    ):
        found.setdefault(_real(folder), PROJECT_CODE)
    libraries = [sysconfig.get_path(name) for name in ("stdlib", "platstdlib", "purelib", "platlib")]
    for folder in [*libraries, site.getusersitepackages()]:
        if folder:
            found.setdefault(_real(folder), PYTHON_LIBRARY)
    return list(found.items())


def _local_problem(location: str, role: str, env: Mapping[str, str]) -> str | None:
    """Why a run may not use this local path, or None.

    The path is judged against the roots by its text first, so one outside them is refused before
    the file system is asked anything, with the same words whether it exists or not. Then again with
    symbolic links and ``..`` resolved, against the roots and the protected folders."""
    if "\0" in location:  # no file name holds one; the system calls below would raise on it
        return f"{role} {location!r}: a path cannot contain a NUL character"
    roots = local_roots(env)
    real_roots = [_real(root) for root in roots]
    outside = (
        f"{role} {location!r}: outside the folders runs may use "
        f"({', '.join(str(root) for root in roots)}); an operator adds folders with HARVEST_LOCAL_ROOTS"
    )
    given = _absolute(location)
    if not any(_within(given, root) for root in (*roots, *real_roots)):
        return outside
    real = _real(location)  # not ``given``: "link/.." is the link target's parent, not the link's
    for folder, what in protected_folders(env):
        if _within(real, folder) or _within(given, folder):
            return f"{role} {location!r}: inside {what} ({folder}), where a file can be run as code"
    if not any(_within(real, root) for root in real_roots):
        return outside + " (it leads out of them through a symbolic link)"
    return None


def _bucket_problem(location: str, role: str, env: Mapping[str, str]) -> str | None:
    buckets = allowed_buckets(env)
    bucket = urlsplit(location).netloc
    if buckets and bucket not in buckets:
        return f"{role} {location!r}: bucket {bucket!r} is not in HARVEST_ALLOWED_BUCKETS ({', '.join(sorted(buckets))})"
    return None


def location_problem(location: str, role: str, env: Mapping[str, str]) -> str | None:
    """Why a run may not read or write at ``location`` (a local path or s3:// URI), or None: local
    paths must lie in the roots and outside every protected folder, buckets in the allowed ones."""
    if is_s3(location):
        return _bucket_problem(location, role, env)
    return _local_problem(location, role, env)


def destination_problem(dest: str, env: Mapping[str, str]) -> str | None:
    """Why ``dest`` cannot be published to, or None: its form, then where it is."""
    return _validate_destination(dest) or location_problem(dest, "destination", env)
