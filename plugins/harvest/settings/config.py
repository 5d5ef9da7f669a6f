"""One typed settings object for a harvest run.

Every stage receives the same :class:`HarvestConfig`, built from the DAG Params (or the CLI) plus the
environment, so defaults live in exactly one place and a bad value is refused before any work starts.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from harvest.settings.env import (
    DEFAULT_MODELS_DIR,
    as_list,
    chromium_path,
    default_database_url,
    default_destination,
    env_float,
    env_int,
    falsy,
    harvest_home,
    normalize_database_url,
    profiles_dir,
    truthy,
)
from harvest.settings.errors import ConfigError
from harvest.settings.keys import unknown_key_problems
from harvest.settings.params import DEFAULT_THRESHOLD, HARVEST_PARAMS, default_params
from harvest.settings.paths import destination_problem, is_s3, location_problem
from harvest.settings.quality import DEFAULT_DECODE_BUDGET_MB, DEFAULT_MAX_PIXELS, quality_settings
from harvest.settings.s3 import S3Options, s3_options_from_env
from harvest.settings.s3 import s3_options_from_connection as s3_options_from_connection
from harvest.settings.timeouts import RUN_TIMEOUT_HOURS as RUN_TIMEOUT_HOURS
from harvest.settings.timeouts import TASK_TIMEOUT_MINUTES as TASK_TIMEOUT_MINUTES

# The names imported "as" themselves above, and several used here (ConfigError, S3Options, is_s3,
# chromium_path, harvest_home, the database URL and default helpers), are imported from this module
# across the package, the gallery, the scripts and the tests; their homes are the modules above.

_P = {name: spec.default for name, spec in HARVEST_PARAMS.items()}  # HarvestConfig's Param defaults

DEFAULT_USER_AGENT = "image-harvester/0.1 (+https://github.com/image-harvester/image-harvester)"


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
    #: the most shards (mapped download, classify and publish tasks) a run is split into
    #: (HARVEST_SHARDS); a run gets one shard per ``shard_size`` candidates, at least ``min_shards``
    #: (harvest.state.shards.shard_count)
    num_shards: int = 32
    min_shards: int = 1
    shard_size: int = 2000
    download_threads: int = 8
    batch_size: int = 32
    max_attempts: int = 3
    connect_timeout: float = 5.0
    read_timeout: float = 20.0
    max_page_bytes: int = 5 * 1024 * 1024
    #: a linked stylesheet (or one it @imports) longer than this is not read; the cap is recorded
    max_stylesheet_bytes: int = 1024 * 1024
    max_image_bytes: int = 20 * 1024 * 1024
    #: renditions of one image (preferred URL, then srcset/src/thumbnail variants) tried per download
    max_renditions: int = 4
    # crawler behaviour (README "Crawling"): robots, politeness, scope, junk filters, site profiles
    respect_robots: bool = True
    host_concurrency: int = 2
    host_delay: float = 0.5
    host_failure_limit: int = 5
    #: the longest robots.txt Crawl-delay waited for; a host asking for more is deferred to a later run
    max_crawl_delay: float = 30.0
    #: adaptive politeness (docs/politeness.md): the ceiling a host's rate rises to while it answers
    #: fast and cleanly, and the concurrency and ceiling of a host that serves only images
    host_max_rate: float = 10.0
    cdn_concurrency: int = 8
    cdn_max_rate: float = 50.0
    host_fast_seconds: float = 0.5
    host_slow_seconds: float = 5.0
    #: "auto": one budget per host for every worker through the state DB on Postgres, the task's own
    #: on SQLite; "local": the task's own everywhere
    host_budget: str = "auto"
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
    search_sources: tuple[str, ...] = _P["search_sources"]
    #: "label: term; term" lines as given (validated); harvest.stages.sources reads them per label
    search_terms: tuple[str, ...] = _P["search_terms"]
    search_limit: int = _P["search_limit"]
    #: the Flickr API key (the flickr_default connection's password); left out of repr() and run params
    flickr_api_key: str | None = field(default=None, repr=False)
    quota: int = _P["quota"]
    text_prefilter: bool = _P["text_prefilter"]
    #: SPDX ids and groups (harvest.pages.licences.GROUPS) to keep; empty keeps every licence
    licenses: tuple[str, ...] = _P["licenses"]
    #: honour X-Robots-Tag, robots meta and TDMRep opt-outs (harvest.web.optout); HARVEST_RESPECT_OPTOUTS
    respect_optouts: bool = True
    #: the X-Robots-Tag / robots meta directives that opt an image out (HARVEST_OPTOUT_DIRECTIVES)
    optout_directives: tuple[str, ...] = ("noai", "noimageai", "noindex", "noimageindex")
    #: other crawlers' robots.txt groups obeyed as ours, e.g. GPTBot, CCBot (HARVEST_OBEY_AGENTS)
    obey_robots_agents: tuple[str, ...] = ()
    #: "auto": pages whose HTML names no content image but has scripts are rendered (script_fed.py)
    render: str = _P["render"]
    #: "jpeg" also publishes an RGB JPEG training copy of every image (harvest.images.variants)
    publish_format: str = _P["publish_format"]
    models_dir: Path = DEFAULT_MODELS_DIR
    s3: S3Options | None = field(default=None, repr=True)
    #: names the manifest (the Airflow run id); empty means run_id
    manifest_id: str = ""
    # dataset quality (environment only; see README "Dataset quality")
    near_dup_distance: int = 6
    placeholder_min_urls: int = 10
    placeholder_distance: int = 4
    min_entropy: float = 2.0
    min_detail: float = 3.0
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


def _int(params: Mapping[str, Any], name: str, problems: list[str]) -> int:
    """An integer Param, at least its specified minimum (the form also caps some; the CLI does not)."""
    minimum = HARVEST_PARAMS[name].minimum
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


def _patterns(value: Any, name: str, problems: list[str]) -> tuple[str, ...]:
    """URL patterns, each compiled by the engine the crawl matches them with (RE2: linear time on
    any URL a site makes up); one it cannot run, such as a backreference or a lookaround, is a
    problem naming the pattern and the reason."""
    from harvest.urls import PatternError, compile_url_pattern

    patterns = as_list(value) if not isinstance(value, str) else [p.strip() for p in value.splitlines()]
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
    for item in as_list(raw):
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


def build_config(
    params: Mapping[str, Any],
    run_id: str,
    *,
    env: Mapping[str, str] | None = None,
    database_url: str | None = None,
    s3: S3Options | None = None,
    require_seeds: bool = True,
    manifest_id: str = "",
    overrides: Mapping[str, Any] | None = None,
    extra_keys: Iterable[str] = (),
    checks: Callable[[HarvestConfig], list[str]] | None = None,
) -> HarvestConfig:
    """Validate Params + environment into a config, collecting every problem into one ConfigError.

    ``overrides`` (a trigger conf) win over ``params`` and over the profile either names, key by key,
    so a re-run given only a threshold keeps everything else. A key that is no Param (nor one of
    ``extra_keys``) is a problem with the nearest Param's name. ``checks`` see the assembled config
    (the labels against the model, the destination's writability) and add their problems to the same
    message, so one round of fixes is enough. Each section below appends its problems in turn, so
    the message lists them in the form's order."""
    env = os.environ if env is None else env
    overrides = dict(overrides or {})
    problems = unknown_key_problems([*params, *overrides], [*HARVEST_PARAMS, *extra_keys])
    params = {**params, **overrides}
    if str(params.get("profile") or "").strip():
        from harvest.settings.profiles import apply_profile

        try:
            params = {**apply_profile(params, profiles_dir(env)), **overrides}
        except ConfigError as exc:
            problems.extend(exc.problems)
    sections = {
        **_scope(params, env, require_seeds, problems),
        **_labels(params, problems),
        **_search(params, env, problems),
        **_numbers(params, problems),
        **_places(params, env, problems),
        **_form_choices(params, env, problems),
        **_publishing(params, problems),
        **_network(env, problems),
        **_crawler(params, env, problems),
        **_consent(params, env, problems),
        **quality_settings(env, problems),
    }
    if sections["min_shards"] > sections["num_shards"] and not any("SHARDS" in p for p in problems):
        problems.append(
            f"HARVEST_MIN_SHARDS ({sections['min_shards']}) must not exceed HARVEST_SHARDS "
            f"({sections['num_shards']}), the most shards a run is split into"
        )
    cfg = HarvestConfig(
        run_id=run_id,
        database_url=normalize_database_url(database_url or default_database_url(env)),
        models_dir=Path(env.get("HARVEST_MODELS_DIR") or DEFAULT_MODELS_DIR),
        profile=str(params.get("profile") or "").strip(),
        manifest_id=manifest_id,
        s3=s3 or s3_options_from_env(env),
        **sections,
    )
    if checks is not None:
        problems.extend(p for p in checks(cfg) if p not in problems)
    if problems:
        raise ConfigError(problems)
    return cfg


def nothing_to_crawl(params: Mapping[str, Any], overrides: Mapping[str, Any] | None = None) -> bool:
    """True when neither seeds, a URL list, search sources nor a profile is given: a run that could
    only be skipped."""
    merged = {**params, **(overrides or {})}
    return not (
        as_list(merged.get("seeds"))
        or str(merged.get("url_list") or "").strip()
        or str(merged.get("profile") or "").strip()
        or as_list(merged.get("search_sources"))
    )


def _scope(
    params: Mapping[str, Any], env: Mapping[str, str], require_seeds: bool, problems: list[str]
) -> dict[str, Any]:
    """Where the images come from: the seeds, the URL list, and the image domains allowed."""
    seeds = as_list(params.get("seeds"))
    url_list = str(params.get("url_list") or "").strip()
    if require_seeds and not seeds and not url_list and not as_list(params.get("search_sources")):
        problems.append("seeds: give at least one http(s) URL to crawl (or a url_list or search_sources)")
    if url_list and "://" in url_list and not is_s3(url_list):
        problems.append(f"url_list {url_list!r}: use a local path or s3://bucket/key")
    elif url_list:
        problem = location_problem(url_list, "url_list", env)
        if problem:
            problems.append(problem)
    domains = [d.lower().removeprefix("*.").strip(".") for d in as_list(params.get("domains"))]
    problems.extend(
        f"domains: {d!r} is not a host name (e.g. flickr.com)" for d in domains if "/" in d or ":" in d
    )
    problems.extend(_public_suffix_domains(domains))
    problems.extend(p for p in (_validate_seed(s) for s in seeds) if p)
    return {"seeds": tuple(seeds), "url_list": url_list, "domains": tuple(domains)}


def _labels(params: Mapping[str, Any], problems: list[str]) -> dict[str, Any]:
    labels = as_list(params.get("labels"))
    if not labels:
        problems.append("labels: give at least one ImageNet class name or WordNet id, e.g. 'goldfish'")
    return {"labels": tuple(labels)}


def search_terms_by_label(labels: tuple[str, ...], lines: tuple[str, ...]) -> dict[str, tuple[str, ...]]:
    """Each label's search terms: those of its ``label: term; term`` line, else the label itself."""
    given: dict[str, tuple[str, ...]] = {}
    for line in lines:
        label, _, terms = line.partition(":")
        given[label.strip().casefold()] = tuple(t.strip() for t in terms.split(";") if t.strip())
    return {label: given.get(label.casefold(), (label,)) for label in labels}


def _search(params: Mapping[str, Any], env: Mapping[str, str], problems: list[str]) -> dict[str, Any]:
    """The search APIs, the terms per label and how many results each term may bring."""
    from harvest.settings.connections import api_key
    from harvest.settings.params import SEARCH_SOURCES

    sources = [s.lower() for s in as_list(params.get("search_sources"))]
    for source in sources:
        if source not in SEARCH_SOURCES:
            problems.append(f"search_sources: unknown {source!r}; choose from {list(SEARCH_SOURCES)}")
    if "flickr" in sources and not api_key(env, "flickr", "flickr_default"):
        problems.append(
            "search_sources: flickr needs an API key: the password of the flickr_default connection "
            "(AIRFLOW_CONN_FLICKR_DEFAULT) or HARVEST_FLICKR_API_KEY"
        )
    raw = params.get("search_terms")
    lines = [
        line.strip() for line in (raw.splitlines() if isinstance(raw, str) else as_list(raw)) if line.strip()
    ]
    labels = {label.casefold() for label in as_list(params.get("labels"))}
    for line in lines:
        label, colon, terms = line.partition(":")
        if not colon or not [t for t in terms.split(";") if t.strip()]:
            problems.append(f"search_terms: {line!r} is not 'label: term; term'")
        elif label.strip().casefold() not in labels:
            problems.append(f"search_terms: {label.strip()!r} is not one of the labels")
    return {
        "flickr_api_key": api_key(env, "flickr", "flickr_default") if "flickr" in sources else None,
        "search_sources": tuple(dict.fromkeys(sources)),
        "search_terms": tuple(lines),
        "search_limit": _int(params, "search_limit", problems),
    }


def _numbers(params: Mapping[str, Any], problems: list[str]) -> dict[str, Any]:
    """The form's numbers: crawl limits, image size, top_k and quota, then the threshold."""
    numbers = {
        name: _int(params, name, problems)
        for name in ("max_depth", "max_pages", "min_width", "min_height", "top_k", "quota")
    }
    top_k_max = HARVEST_PARAMS["top_k"].maximum
    if numbers["top_k"] > top_k_max:
        problems.append(f"top_k must be <= {top_k_max}, got {numbers['top_k']}")
    raw_threshold = params.get("threshold", DEFAULT_THRESHOLD)
    try:
        threshold = float(raw_threshold)
    except (TypeError, ValueError):
        problems.append(f"threshold must be a number between 0 and 1, got {raw_threshold!r}")
        threshold = DEFAULT_THRESHOLD
    if not 0.0 <= threshold <= 1.0:
        problems.append(f"threshold must be between 0 and 1, got {threshold}")
    return {**numbers, "threshold": threshold}


def _places(params: Mapping[str, Any], env: Mapping[str, str], problems: list[str]) -> dict[str, Any]:
    """Where the run publishes, and where it stages downloads (in the destination's bucket for S3)."""
    destination = str(params.get("destination") or "").strip() or default_destination(env)
    problem = destination_problem(destination, env)
    if problem:
        problems.append(problem)
    destination = destination.rstrip("/") if is_s3(destination) else str(Path(destination).expanduser())
    staging = env.get("HARVEST_STAGING") or (
        f"{destination}/_staging" if is_s3(destination) else str(harvest_home(env) / "staging")
    )
    if env.get("HARVEST_STAGING") or not is_s3(destination):  # else in the destination's bucket
        problem = location_problem(staging, "staging area", env)
        if problem:
            problems.append(problem)
    return {"destination": destination, "staging": staging}


def _form_choices(params: Mapping[str, Any], env: Mapping[str, str], problems: list[str]) -> dict[str, Any]:
    """The form's switches (a string from the CLI reads as a yes or no), the model's name and the
    render mode."""
    same_domain = params.get("same_domain", PARAM_DEFAULTS["same_domain"])
    if isinstance(same_domain, str):
        same_domain = truthy(same_domain)
    model = str(params.get("model") or env.get("HARVEST_MODEL") or PARAM_DEFAULTS["model"]).strip()
    text_prefilter = params.get("text_prefilter", PARAM_DEFAULTS["text_prefilter"])
    if isinstance(text_prefilter, str):
        text_prefilter = truthy(text_prefilter)
    return {
        "same_domain": bool(same_domain),
        "model": model,
        "text_prefilter": bool(text_prefilter),
        "render": _render(params, env, problems),
    }


def _render(params: Mapping[str, Any], env: Mapping[str, str], problems: list[str]) -> str:
    """The run's render mode; "auto" needs a browser, so a missing one stops the run before it starts."""
    spec = HARVEST_PARAMS["render"]
    render = str(params.get("render") or env.get("HARVEST_RENDER") or spec.default).strip().lower()
    if render not in (spec.enum or ()):
        problems.append(f"render must be one of {', '.join(spec.enum or ())}, got {render!r}")
        return str(spec.default)
    if render == "auto" and chromium_path(env) is None:
        problems.append(
            "render: auto needs a browser but no Chromium was found (install Debian's chromium "
            "package or set HARVEST_CHROMIUM)"
        )
    return render


def _publishing(params: Mapping[str, Any], problems: list[str]) -> dict[str, Any]:
    """How images are published: their own bytes only, or with an RGB JPEG training copy too."""
    choices = HARVEST_PARAMS["publish_format"].enum or ()
    value = str(params.get("publish_format") or PARAM_DEFAULTS["publish_format"]).strip().lower()
    if value not in choices:
        problems.append(f"publish_format must be one of {list(choices)}, got {value!r}")
    return {"publish_format": value}


def _network(env: Mapping[str, str], problems: list[str]) -> dict[str, Any]:
    """Parallelism and politeness towards each host (README "Crawling")."""
    return {
        "num_shards": env_int(env, "HARVEST_SHARDS", 32, 1, 256, problems),
        "min_shards": env_int(env, "HARVEST_MIN_SHARDS", 1, 1, 256, problems),
        "shard_size": env_int(env, "HARVEST_SHARD_SIZE", 2000, 1, 10_000_000, problems),
        "download_threads": env_int(env, "HARVEST_DOWNLOAD_THREADS", 8, 1, 128, problems),
        "max_renditions": env_int(env, "HARVEST_MAX_RENDITIONS", 4, 1, 16, problems),
        "batch_size": env_int(env, "HARVEST_BATCH_SIZE", 32, 1, 1024, problems),
        "host_concurrency": env_int(env, "HARVEST_HOST_CONCURRENCY", 2, 1, 64, problems),
        "host_delay": env_float(env, "HARVEST_HOST_DELAY", 0.5, 0.0, 600.0, problems),
        "host_failure_limit": env_int(env, "HARVEST_HOST_FAILURE_LIMIT", 5, 1, 10_000, problems),
        # at most the request deadline (60 s), which counts time queued for the host: a longer delay
        # could never be waited for
        "max_crawl_delay": env_float(env, "HARVEST_MAX_CRAWL_DELAY", 30.0, 0.0, 60.0, problems),
        "host_max_rate": env_float(env, "HARVEST_HOST_MAX_RATE", 10.0, 0.01, 10_000.0, problems),
        "cdn_concurrency": env_int(env, "HARVEST_CDN_CONCURRENCY", 8, 1, 64, problems),
        "cdn_max_rate": env_float(env, "HARVEST_CDN_MAX_RATE", 50.0, 0.01, 10_000.0, problems),
        "host_fast_seconds": env_float(env, "HARVEST_HOST_FAST_SECONDS", 0.5, 0.0, 60.0, problems),
        "host_slow_seconds": env_float(env, "HARVEST_HOST_SLOW_SECONDS", 5.0, 0.01, 600.0, problems),
        "host_budget": _host_budget(env, problems),
        "extract_seconds": env_float(env, "HARVEST_EXTRACT_SECONDS", 20.0, 0.1, 3_600.0, problems),
        "extract_max_images": env_int(env, "HARVEST_EXTRACT_MAX_IMAGES", 10_000, 1, 10_000_000, problems),
        "max_pages_per_host": env_int(env, "HARVEST_MAX_PAGES_PER_HOST", 500, 1, 10_000_000, problems),
        "max_query_variants": env_int(env, "HARVEST_MAX_QUERY_VARIANTS", 20, 1, 10_000_000, problems),
    }


def _host_budget(env: Mapping[str, str], problems: list[str]) -> str:
    value = (env.get("HARVEST_HOST_BUDGET") or "auto").strip().lower()
    if value not in ("auto", "local"):
        problems.append(f"HARVEST_HOST_BUDGET: {value!r} is not one of auto, local")
        return "auto"
    return value


def _crawler(params: Mapping[str, Any], env: Mapping[str, str], problems: list[str]) -> dict[str, Any]:
    """What the crawler follows and fetches: URL patterns, networks, site profiles, robots, SVG."""
    return {
        "url_allow": _patterns(params.get("url_allow"), "url_allow", problems),
        "url_deny": _patterns(params.get("url_deny"), "url_deny", problems),
        "allowed_networks": _networks(env.get("HARVEST_ALLOWED_NETWORKS"), problems),
        "site_profiles_dir": _site_profiles_dir(env, problems),
        "respect_robots": not falsy(env.get("HARVEST_RESPECT_ROBOTS")),
        "honour_nofollow": not truthy(env.get("HARVEST_FOLLOW_NOFOLLOW")),
        "allow_svg": truthy(env.get("HARVEST_ALLOW_SVG")),
        "user_agent": env.get("HARVEST_USER_AGENT") or DEFAULT_USER_AGENT,
        "allow_private_networks": truthy(env.get("HARVEST_ALLOW_PRIVATE_NETWORKS")),
        "reverse_geocode": truthy(env.get("HARVEST_REVERSE_GEOCODE")),
    }


def _consent(params: Mapping[str, Any], env: Mapping[str, str], problems: list[str]) -> dict[str, Any]:
    """Opt-outs honoured and licences kept (docs/consent-and-licences.md)."""
    from harvest.licences import licence_filter_problems

    licenses = tuple(as_list(params.get("licenses")))
    problems.extend(licence_filter_problems(licenses))
    directives = tuple(d.lower() for d in as_list(env.get("HARVEST_OPTOUT_DIRECTIVES") or ""))
    return {
        "licenses": licenses,
        "respect_optouts": not falsy(env.get("HARVEST_RESPECT_OPTOUTS")),
        "optout_directives": directives or HarvestConfig.optout_directives,
        "obey_robots_agents": tuple(as_list(env.get("HARVEST_OBEY_AGENTS") or "")),
    }


def _site_profiles_dir(env: Mapping[str, str], problems: list[str]) -> str | None:
    """HARVEST_SITE_PROFILES_DIR, its profiles loaded once here so a broken one stops the run early."""
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
                    "HARVEST_SITE_PROFILES_DIR: a site profile asks for rendering (render: true or auto) but no Chromium was "
                    "found (install Debian's chromium package or set HARVEST_CHROMIUM)"
                )
    return str(Path(site_profiles_dir).expanduser()) if site_profiles_dir else None
