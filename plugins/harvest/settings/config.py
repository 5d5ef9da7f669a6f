"""One typed settings object for a harvest run.

Every stage receives the same :class:`HarvestConfig`, built from the DAG Params (or the CLI) plus the
environment, so defaults live in exactly one place and a bad value is refused before any work starts.
"""

from __future__ import annotations

import configparser
import ipaddress
import json
import os
import re
import shutil
import site
import sysconfig
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from harvest.settings.params import DEFAULT_THRESHOLD, HARVEST_PARAMS, default_params

_P = {name: spec.default for name, spec in HARVEST_PARAMS.items()}  # HarvestConfig's Param defaults

#: The default pixel cap: see HarvestConfig.max_pixels.
DEFAULT_MAX_PIXELS = 40_000_000
#: The default decode budget of a process, in MB: a 40-megapixel lossless WebP (779 MB, the
#: costliest image the default pixel cap lets through) fits, so that no image under the cap is
#: refused for its cost alone; the budget only makes decodes wait for each other.
DEFAULT_DECODE_BUDGET_MB = 900


PACKAGE_DIR = Path(__file__).resolve().parents[1]
PROJECT_DIR = PACKAGE_DIR.parents[1]
DEFAULT_MODELS_DIR = PROJECT_DIR / "include" / "models"
DEFAULT_PROFILES_DIR = PROJECT_DIR / "include" / "profiles"

DEFAULT_USER_AGENT = "image-harvester/0.1 (+https://github.com/image-harvester/image-harvester)"


class ConfigError(ValueError):
    """Raised for invalid run settings; the message lists every problem so a user fixes them at once."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("invalid harvest settings: " + "; ".join(problems))


@dataclass(frozen=True)
class S3Options:
    """Connection details for an S3-compatible store (from the Airflow connection ``aws_default``)."""

    endpoint_url: str | None = None
    aws_access_key_id: str | None = None
    aws_secret_access_key: str | None = None
    region_name: str | None = None

    def __repr__(self) -> str:  # never print the secret
        return f"S3Options(endpoint_url={self.endpoint_url!r}, region_name={self.region_name!r})"


@dataclass(frozen=True)
class HarvestConfig:
    #: the scope of the run's rows in the state DB; a re-run of the same interval shares it
    run_id: str
    seeds: tuple[str, ...]
    labels: tuple[str, ...]
    destination: str
    staging: str
    #: may carry a password: left out of repr(), like the S3 secret and the metadata key
    database_url: str = field(repr=False)
    max_depth: int = _P["max_depth"]
    max_pages: int = _P["max_pages"]
    same_domain: bool = _P["same_domain"]
    min_width: int = _P["min_width"]
    min_height: int = _P["min_height"]
    top_k: int = _P["top_k"]
    threshold: float = _P["threshold"]
    num_shards: int = 4
    download_threads: int = 8
    batch_size: int = 32
    max_attempts: int = 3
    connect_timeout: float = 5.0
    read_timeout: float = 20.0
    max_page_bytes: int = 5 * 1024 * 1024
    max_image_bytes: int = 20 * 1024 * 1024
    # crawler behaviour (README "Crawling"): robots, politeness, scope, junk filters, site profiles
    respect_robots: bool = True
    host_concurrency: int = 2
    host_delay: float = 0.5
    host_failure_limit: int = 5
    #: the longest robots.txt Crawl-delay waited for; a host asking for more is deferred to a later run
    max_crawl_delay: float = 30.0
    status_retries: int = 3
    max_retry_after: float = 120.0
    total_timeout: float = 60.0
    allowed_networks: tuple[str, ...] = ()
    max_pages_per_host: int = 500
    max_query_variants: int = 20
    url_allow: tuple[str, ...] = _P["url_allow"]
    url_deny: tuple[str, ...] = _P["url_deny"]
    honour_nofollow: bool = True
    allow_svg: bool = False
    #: what extracting one page may take: seconds, and images named (every mention counts); a page
    #: over either is recorded as failed with the reason instead of holding the stage
    extract_seconds: float = 20.0
    extract_max_images: int = 10_000
    site_profiles_dir: str | None = None
    user_agent: str = DEFAULT_USER_AGENT
    allow_private_networks: bool = False
    #: look up the country (public) and nearest town (private) of photos with a GPS position, offline
    reverse_geocode: bool = False
    model: str = _P["model"]
    profile: str = _P["profile"]
    url_list: str = _P["url_list"]
    domains: tuple[str, ...] = _P["domains"]
    quota: int = _P["quota"]
    text_prefilter: bool = _P["text_prefilter"]
    models_dir: Path = DEFAULT_MODELS_DIR
    s3: S3Options | None = field(default=None, repr=True)
    #: names the manifest (the Airflow run id); empty means run_id
    manifest_id: str = ""
    # dataset quality (environment only; see README "Dataset quality")
    near_dup_distance: int = 6
    placeholder_min_urls: int = 10
    placeholder_distance: int = 4
    min_entropy: float = 2.0
    exports: tuple[str, ...] = ("parquet", "card")
    webdataset_shard_size: int = 1000
    variant_widths: tuple[int, ...] = ()
    thumbnail_size: int = 0
    #: processes that decode and hash downloaded images; 0 keeps them in the download threads, None
    #: ("auto") decides per shard from the cores and the shard's size (harvest.stages.download)
    inspect_processes: int | None = None
    #: images with more pixels are refused before decoding (HARVEST_MAX_PIXELS)
    max_pixels: int = DEFAULT_MAX_PIXELS
    #: MB of decoded pixels a download process holds at once, its inspecting processes included
    #: (HARVEST_DECODE_BUDGET_MB); see harvest.images.decoding
    decode_budget_mb: int = DEFAULT_DECODE_BUDGET_MB
    #: Fernet key that encrypts private EXIF fields in the state DB; without it they are not stored
    metadata_key: str | None = field(default=None, repr=False)

    def with_(self, **changes: Any) -> HarvestConfig:
        return replace(self, **changes)


#: The DAG Params and their defaults (harvest.settings.params holds the rest of each Param).
PARAM_DEFAULTS: dict[str, Any] = default_params()


#: How long a task of each kind may run before Airflow fails it, in minutes: far above a normal run's
#: needs, so only a stuck task meets it. HARVEST_<KIND>_TIMEOUT_MINUTES sets one kind,
#: HARVEST_TASK_TIMEOUT_MINUTES every kind without its own setting.
TASK_TIMEOUT_MINUTES: dict[str, float] = {
    "validate": 15,
    "crawl": 240,
    "extract": 120,
    "download": 180,
    "classify": 180,
    "publish": 120,
    "rethreshold": 240,
}
#: How long a whole image_harvest run may take (HARVEST_RUN_TIMEOUT_HOURS): under a day, so a run that
#: is stuck anyway is failed before the next night's run is due (the DAG runs one run at a time).
RUN_TIMEOUT_HOURS = 20.0
MAX_TASK_TIMEOUT_MINUTES = 7 * 24 * 60
MAX_RUN_TIMEOUT_HOURS = 24.0


def _positive(env: Mapping[str, str], name: str, default: float, maximum: float) -> float:
    """A number of minutes or hours above 0; a bad value stops the DAG file from loading, naming it."""
    problems: list[str] = []
    value = _env_float(env, name, default, 0.0, maximum, problems)
    if value <= 0 and not problems:
        problems.append(f"{name} must be above 0, got {value}")
    if problems:
        raise ConfigError(problems)
    return value


def task_timeout_minutes(kind: str, env: Mapping[str, str] | None = None) -> float:
    """The execution timeout of one kind of task: HARVEST_<KIND>_TIMEOUT_MINUTES, else
    HARVEST_TASK_TIMEOUT_MINUTES, else the kind's default. Read when the DAG file is parsed."""
    env = os.environ if env is None else env
    default = _positive(
        env, "HARVEST_TASK_TIMEOUT_MINUTES", TASK_TIMEOUT_MINUTES[kind], MAX_TASK_TIMEOUT_MINUTES
    )
    return _positive(env, f"HARVEST_{kind.upper()}_TIMEOUT_MINUTES", default, MAX_TASK_TIMEOUT_MINUTES)


def run_timeout_hours(env: Mapping[str, str] | None = None) -> float:
    """The image_harvest DAG's run timeout (HARVEST_RUN_TIMEOUT_HOURS). Read when the DAG file is parsed."""
    env = os.environ if env is None else env
    return _positive(env, "HARVEST_RUN_TIMEOUT_HOURS", RUN_TIMEOUT_HOURS, MAX_RUN_TIMEOUT_HOURS)


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


def is_s3(location: str) -> bool:
    return location.startswith("s3://")


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in {"1", "true", "yes", "on"}


def _falsy(value: str | None) -> bool:
    return (value or "").strip().lower() in {"0", "false", "no", "off"}


def _as_list(value: Any) -> list[str]:
    """Params arrive as lists from the form, but a newline/comma separated string is accepted too."""
    if value is None:
        return []
    if isinstance(value, str):
        parts = value.replace(",", "\n").splitlines()
    else:
        parts = [str(v) for v in value]
    return [p.strip() for p in parts if p and p.strip()]


def _int(params: Mapping[str, Any], name: str, minimum: int, problems: list[str]) -> int:
    raw = params.get(name, PARAM_DEFAULTS[name])
    try:
        value = int(raw)
        if isinstance(raw, float) and raw != value:
            raise ValueError
    except (TypeError, ValueError):
        problems.append(f"{name} must be an integer, got {raw!r}")
        return int(PARAM_DEFAULTS[name])
    if value < minimum:
        problems.append(f"{name} must be >= {minimum}, got {value}")
    return value


def _env_number(env: Mapping[str, str], name: str, default, minimum, maximum, problems: list[str], cast):
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


def _env_int(
    env: Mapping[str, str], name: str, default: int, minimum: int, maximum: int, problems: list[str]
) -> int:
    return _env_number(env, name, default, minimum, maximum, problems, int)


def _env_float(
    env: Mapping[str, str], name: str, default: float, minimum: float, maximum: float, problems: list[str]
) -> float:
    return _env_number(env, name, default, minimum, maximum, problems, float)


def _patterns(value: Any, name: str, problems: list[str]) -> tuple[str, ...]:
    """URL patterns, each compiled by the engine the crawl matches them with (RE2: linear time on
    any URL a site makes up); one it cannot run, such as a backreference or a lookaround, is a
    problem naming the pattern and the reason."""
    from harvest.urls import PatternError, compile_url_pattern

    patterns = _as_list(value) if not isinstance(value, str) else [p.strip() for p in value.splitlines()]
    for pattern in patterns:
        try:
            compile_url_pattern(pattern)
        except PatternError as exc:
            problems.append(
                f"{name}: {pattern!r} is not a valid regular expression ({exc}); patterns run on "
                "RE2, which has no backreferences or lookaround"
            )
    return tuple(p for p in patterns if p)


def _public_suffix_domains(domains: list[str]) -> list[str]:
    """A domain filter of ``co.uk`` or ``github.io`` would admit every site registered under it."""
    from harvest.urls import is_public_suffix

    return [
        f"domains: {d!r} is a public suffix, shared by unrelated sites; name a site under it (e.g. example.{d})"
        for d in domains
        if is_public_suffix(d)
    ]


def _networks(raw: str | None, problems: list[str]) -> tuple[str, ...]:
    networks = []
    for item in _as_list(raw):
        try:
            networks.append(str(ipaddress.ip_network(item, strict=False)))
        except ValueError:
            problems.append(f"HARVEST_ALLOWED_NETWORKS: {item!r} is not an IP network")
    return tuple(networks)


def _validate_seed(url: str) -> str | None:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        return f"seed {url!r}: only http and https URLs can be crawled"
    if not parts.hostname:
        return f"seed {url!r}: no host name"
    return None


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


def build_config(
    params: Mapping[str, Any],
    run_id: str,
    *,
    env: Mapping[str, str] | None = None,
    database_url: str | None = None,
    s3: S3Options | None = None,
    require_seeds: bool = True,
    manifest_id: str = "",
) -> HarvestConfig:
    """Validate Params + environment into a config, collecting every problem into one ConfigError."""
    env = os.environ if env is None else env
    if str(params.get("profile") or "").strip():
        from harvest.settings.profiles import apply_profile

        params = apply_profile(params, profiles_dir(env))
    problems: list[str] = []

    seeds = _as_list(params.get("seeds"))
    url_list = str(params.get("url_list") or "").strip()
    if require_seeds and not seeds and not url_list:
        problems.append("seeds: give at least one http(s) URL to crawl (or a url_list)")
    if url_list and "://" in url_list and not is_s3(url_list):
        problems.append(f"url_list {url_list!r}: use a local path or s3://bucket/key")
    elif url_list:
        problem = location_problem(url_list, "url_list", env)
        if problem:
            problems.append(problem)
    domains = [d.lower().removeprefix("*.").strip(".") for d in _as_list(params.get("domains"))]
    problems.extend(
        f"domains: {d!r} is not a host name (e.g. flickr.com)" for d in domains if "/" in d or ":" in d
    )
    problems.extend(_public_suffix_domains(domains))
    problems.extend(p for p in (_validate_seed(s) for s in seeds) if p)

    labels = _as_list(params.get("labels"))
    if not labels:
        problems.append("labels: give at least one ImageNet class name or WordNet id, e.g. 'goldfish'")

    max_depth = _int(params, "max_depth", 0, problems)
    max_pages = _int(params, "max_pages", 1, problems)
    min_width = _int(params, "min_width", 1, problems)
    min_height = _int(params, "min_height", 1, problems)
    top_k = _int(params, "top_k", 1, problems)
    quota = _int(params, "quota", 0, problems)
    if top_k > 1000:
        problems.append(f"top_k must be <= 1000, got {top_k}")

    raw_threshold = params.get("threshold", DEFAULT_THRESHOLD)
    try:
        threshold = float(raw_threshold)
    except (TypeError, ValueError):
        problems.append(f"threshold must be a number between 0 and 1, got {raw_threshold!r}")
        threshold = DEFAULT_THRESHOLD
    if not 0.0 <= threshold <= 1.0:
        problems.append(f"threshold must be between 0 and 1, got {threshold}")

    same_domain = params.get("same_domain", True)
    if isinstance(same_domain, str):
        same_domain = _truthy(same_domain)

    destination = str(params.get("destination") or "").strip() or default_destination(env)
    problem = destination_problem(destination, env)
    if problem:
        problems.append(problem)
    destination = destination.rstrip("/") if is_s3(destination) else str(Path(destination).expanduser())

    model = str(params.get("model") or env.get("HARVEST_MODEL") or PARAM_DEFAULTS["model"]).strip()
    text_prefilter = params.get("text_prefilter", PARAM_DEFAULTS["text_prefilter"])
    if isinstance(text_prefilter, str):
        text_prefilter = _truthy(text_prefilter)

    staging = env.get("HARVEST_STAGING") or (
        f"{destination}/_staging" if is_s3(destination) else str(harvest_home(env) / "staging")
    )
    if env.get("HARVEST_STAGING") or not is_s3(destination):  # else in the destination's bucket
        problem = location_problem(staging, "staging area", env)
        if problem:
            problems.append(problem)

    num_shards = _env_int(env, "HARVEST_SHARDS", 4, 1, 256, problems)
    download_threads = _env_int(env, "HARVEST_DOWNLOAD_THREADS", 8, 1, 128, problems)
    batch_size = _env_int(env, "HARVEST_BATCH_SIZE", 32, 1, 1024, problems)

    host_concurrency = _env_int(env, "HARVEST_HOST_CONCURRENCY", 2, 1, 64, problems)
    host_delay = _env_float(env, "HARVEST_HOST_DELAY", 0.5, 0.0, 600.0, problems)
    host_failure_limit = _env_int(env, "HARVEST_HOST_FAILURE_LIMIT", 5, 1, 10_000, problems)
    # at most the request deadline (60 s), which counts time queued for the host: a longer delay
    # could never be waited for
    max_crawl_delay = _env_float(env, "HARVEST_MAX_CRAWL_DELAY", 30.0, 0.0, 60.0, problems)
    extract_seconds = _env_float(env, "HARVEST_EXTRACT_SECONDS", 20.0, 0.1, 3_600.0, problems)
    extract_max_images = _env_int(env, "HARVEST_EXTRACT_MAX_IMAGES", 10_000, 1, 10_000_000, problems)
    max_pages_per_host = _env_int(env, "HARVEST_MAX_PAGES_PER_HOST", 500, 1, 10_000_000, problems)
    max_query_variants = _env_int(env, "HARVEST_MAX_QUERY_VARIANTS", 20, 1, 10_000_000, problems)
    url_allow = _patterns(params.get("url_allow"), "url_allow", problems)
    url_deny = _patterns(params.get("url_deny"), "url_deny", problems)
    allowed_networks = _networks(env.get("HARVEST_ALLOWED_NETWORKS"), problems)
    site_profiles_dir = env.get("HARVEST_SITE_PROFILES_DIR")
    if site_profiles_dir and not Path(site_profiles_dir).expanduser().is_dir():
        problems.append(f"HARVEST_SITE_PROFILES_DIR: {site_profiles_dir!r} is not a directory")
    elif site_profiles_dir:
        from harvest.settings.site_profiles import SiteProfileError, load_site_profiles

        try:
            site_profiles = load_site_profiles(Path(site_profiles_dir).expanduser())
        except SiteProfileError as exc:
            problems.append(f"HARVEST_SITE_PROFILES_DIR: {exc}")
        else:
            if any(p.render for p in site_profiles) and chromium_path(env) is None:
                problems.append(
                    "HARVEST_SITE_PROFILES_DIR: a site profile asks for render: true but no Chromium was "
                    "found (install Debian's chromium package or set HARVEST_CHROMIUM)"
                )
    quality = _quality_settings(env, problems)

    if problems:
        raise ConfigError(problems)

    return HarvestConfig(
        run_id=run_id,
        seeds=tuple(seeds),
        labels=tuple(labels),
        destination=destination,
        staging=staging,
        database_url=normalize_database_url(database_url or default_database_url(env)),
        max_depth=max_depth,
        max_pages=max_pages,
        same_domain=bool(same_domain),
        min_width=min_width,
        min_height=min_height,
        top_k=top_k,
        threshold=threshold,
        num_shards=num_shards,
        download_threads=download_threads,
        batch_size=batch_size,
        respect_robots=not _falsy(env.get("HARVEST_RESPECT_ROBOTS")),
        host_concurrency=host_concurrency,
        host_delay=host_delay,
        host_failure_limit=host_failure_limit,
        max_crawl_delay=max_crawl_delay,
        extract_seconds=extract_seconds,
        extract_max_images=extract_max_images,
        allowed_networks=allowed_networks,
        max_pages_per_host=max_pages_per_host,
        max_query_variants=max_query_variants,
        url_allow=url_allow,
        url_deny=url_deny,
        honour_nofollow=not _truthy(env.get("HARVEST_FOLLOW_NOFOLLOW")),
        allow_svg=_truthy(env.get("HARVEST_ALLOW_SVG")),
        site_profiles_dir=str(Path(site_profiles_dir).expanduser()) if site_profiles_dir else None,
        user_agent=env.get("HARVEST_USER_AGENT") or DEFAULT_USER_AGENT,
        allow_private_networks=_truthy(env.get("HARVEST_ALLOW_PRIVATE_NETWORKS")),
        reverse_geocode=_truthy(env.get("HARVEST_REVERSE_GEOCODE")),
        model=model,
        text_prefilter=bool(text_prefilter),
        models_dir=Path(env.get("HARVEST_MODELS_DIR") or DEFAULT_MODELS_DIR),
        profile=str(params.get("profile") or "").strip(),
        url_list=url_list,
        domains=tuple(domains),
        quota=quota,
        manifest_id=manifest_id,
        s3=s3 or s3_options_from_env(env),
        **quality,
    )


EXPORTS = ("parquet", "card", "webdataset")
#: the whole-dataset Parquet manifest and the dataset card are cheap and wanted by every user; the
#: WebDataset shards copy every image once more, so they are asked for by name
DEFAULT_EXPORTS = ("parquet", "card")


def _quality_settings(env: Mapping[str, str], problems: list[str]) -> dict[str, Any]:
    """Dedup, placeholder, privacy, export and variant settings from HARVEST_* variables."""
    settings: dict[str, Any] = {
        "near_dup_distance": _env_int(env, "HARVEST_NEAR_DUP_DISTANCE", 6, 0, 24, problems),
        "placeholder_min_urls": _env_int(env, "HARVEST_PLACEHOLDER_MIN_URLS", 10, 2, 100_000, problems),
        "placeholder_distance": _env_int(env, "HARVEST_PLACEHOLDER_DISTANCE", 4, 0, 24, problems),
        "webdataset_shard_size": _env_int(env, "HARVEST_WEBDATASET_SHARD_SIZE", 1000, 1, 1_000_000, problems),
        "thumbnail_size": _env_int(env, "HARVEST_THUMBNAIL_SIZE", 0, 0, 4096, problems),
        # above 89,478,485 pixels Pillow itself refuses images as decompression bombs
        "max_pixels": _env_int(env, "HARVEST_MAX_PIXELS", DEFAULT_MAX_PIXELS, 4096, 89_478_485, problems),
        "decode_budget_mb": _env_int(
            env, "HARVEST_DECODE_BUDGET_MB", DEFAULT_DECODE_BUDGET_MB, 16, 1_048_576, problems
        ),
    }
    raw = (env.get("HARVEST_INSPECT_PROCESSES") or "").strip().lower()
    settings["inspect_processes"] = None  # "auto": decided per shard (harvest.stages.download)
    if raw not in ("", "auto"):
        if raw.isdigit() and int(raw) <= 64:
            settings["inspect_processes"] = int(raw)
        else:
            problems.append(f"HARVEST_INSPECT_PROCESSES must be 'auto' or a number from 0 to 64, got {raw!r}")
    raw = env.get("HARVEST_MIN_ENTROPY")
    settings["min_entropy"] = 2.0
    if raw is not None and raw.strip():
        try:
            settings["min_entropy"] = float(raw)
            if not 0.0 <= settings["min_entropy"] <= 8.0:
                raise ValueError
        except ValueError:
            problems.append(f"HARVEST_MIN_ENTROPY must be a number of bits between 0 and 8, got {raw!r}")
    exports = _as_list((env.get("HARVEST_EXPORTS") or "").lower())
    if not exports:
        exports = list(DEFAULT_EXPORTS)
    elif exports == ["all"]:
        exports = list(EXPORTS)
    elif exports == ["none"]:
        exports = []
    unknown = [e for e in exports if e not in EXPORTS]
    if unknown:
        problems.append(f"HARVEST_EXPORTS: unknown {unknown}; choose from {list(EXPORTS)}, 'all' or 'none'")
    settings["exports"] = tuple(e for e in EXPORTS if e in exports)
    widths: list[int] = []
    for part in _as_list(env.get("HARVEST_VARIANT_WIDTHS")):
        if not part.isdigit() or not 16 <= int(part) <= 8192:
            problems.append(f"HARVEST_VARIANT_WIDTHS: {part!r} is not a width between 16 and 8192")
        else:
            widths.append(int(part))
    settings["variant_widths"] = tuple(sorted(set(widths)))
    key = (env.get("HARVEST_METADATA_KEY") or "").strip() or None
    if key:
        from cryptography.fernet import Fernet

        try:
            Fernet(key)
        except (ValueError, TypeError):
            problems.append("HARVEST_METADATA_KEY is not a Fernet key (32 url-safe base64-encoded bytes)")
            key = None
    settings["metadata_key"] = key
    return settings


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
