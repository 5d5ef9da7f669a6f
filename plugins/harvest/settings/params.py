"""The run Params, specified once: default, type, bounds, title and description of each.

The DAGs' trigger forms, ``PARAM_DEFAULTS``, :class:`HarvestConfig`'s defaults and the bounds
``build_config`` checks are all read from here, so they cannot drift apart. Imports nothing beyond
the standard library: the DAG files read it while they are parsed.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

#: Probability a target class needs (besides being in the top_k) for an image to be kept. 0.2 keeps a
#: photo whose probability mass is shared between close classes (tabby / tiger cat) while rejecting
#: the flat, low-confidence predictions that logos, icons and unrelated photos get.
DEFAULT_THRESHOLD = 0.2


@dataclass(frozen=True)
class ParamSpec:
    """One Param: its JSON-schema type and bounds, the trigger form's words, and its default.

    ``env`` names the environment variable whose value, when set, is the form's default instead
    (a comma-separated list for an array)."""

    name: str
    default: Any  # arrays as tuples, so the spec cannot be changed through a default
    type: str
    title: str
    description: str | None = None
    minimum: int | float | None = None
    maximum: int | float | None = None
    min_length: int | None = None
    env: str | None = None
    enum: tuple[str, ...] | None = None  # the values a string Param may take (a select in the form)
    #: may be left empty in the trigger form: Airflow's form treats a Param as required unless its
    #: schema type allows null, and keeps the Trigger button disabled while a required field is empty
    optional: bool = False

    def value(self, env: Mapping[str, str] | None = None) -> Any:
        """The default as the form shows it: from ``env[self.env]`` when set there, lists as lists."""
        raw = (env or {}).get(self.env or "", "") if self.env else ""
        if self.type == "array":
            if raw:
                return [item.strip() for item in raw.split(",") if item.strip()]
            return list(self.default)
        return raw or self.default

    def schema(self) -> dict[str, Any]:
        """The keyword arguments of Airflow's ``Param`` besides the default (the trigger form's widget)."""
        keywords: dict[str, Any] = {"type": ["null", self.type] if self.optional else self.type}
        if self.type == "array":
            keywords["items"] = {"type": "string"}
        if self.enum is not None:
            keywords["enum"] = list(self.enum)
        for key, bound in (
            ("minimum", self.minimum),
            ("maximum", self.maximum),
            ("minLength", self.min_length),
        ):
            if bound is not None:
                keywords[key] = bound
        keywords["title"] = self.title
        if self.description is not None:
            keywords["description"] = self.description
        return keywords


def _specs(*specs: ParamSpec) -> dict[str, ParamSpec]:
    return {spec.name: spec for spec in specs}


#: The search APIs the search_sources Param accepts (harvest.sources.CONNECTORS implements each).
SEARCH_SOURCES = ("wikimedia", "flickr")

#: The image_harvest Params, in the trigger form's order.
HARVEST_PARAMS: dict[str, ParamSpec] = _specs(
    ParamSpec(
        "profile",
        "",
        "string",
        "Harvest profile",
        "A named profile from include/profiles/; its settings replace the ones below. "
        "Leave empty to use the form.",
        env="HARVEST_PROFILE",
        optional=True,
    ),
    ParamSpec(
        "seeds",
        (),
        "array",
        "Seed URLs",
        "Pages to start crawling from, one http(s) URL per line.",
        env="HARVEST_SEEDS",
    ),
    ParamSpec(
        "labels",
        (),
        "array",
        "Labels",
        "ImageNet-1k class names, WordNet groups (dog, bird, vehicle) or WordNet ids to keep, "
        "one per line (e.g. goldfish, great white shark, n01443537, dog).",
        env="HARVEST_LABELS",
    ),
    ParamSpec(
        "max_depth",
        2,
        "integer",
        "Max depth",
        "How many links deep to crawl: the seed is depth 0, a page it links to depth 1.",
        minimum=0,
        maximum=20,
    ),
    ParamSpec(
        "max_pages",
        1000,
        "integer",
        "Max pages",
        "Pages fetched per run at most, seeds included.",
        minimum=1,
        maximum=1_000_000,
    ),
    ParamSpec(
        "same_domain",
        True,
        "boolean",
        "Stay on the seed's domain",
        "Follow links only within each seed's site (www.example.com and img.example.com count as one).",
    ),
    ParamSpec(
        "url_allow",
        (),
        "array",
        "Only crawl URLs matching",
        "Regular expressions; when given, a page URL must match one of them.",
    ),
    ParamSpec(
        "url_deny",
        (),
        "array",
        "Never crawl URLs matching",
        "Regular expressions; a page URL matching any of them is not crawled.",
    ),
    ParamSpec(
        "min_width",
        64,
        "integer",
        "Minimum width (px)",
        "Narrower images are skipped (declared sizes before download, real size after).",
        minimum=1,
    ),
    ParamSpec("min_height", 64, "integer", "Minimum height (px)", "Lower images are skipped.", minimum=1),
    ParamSpec(
        "top_k",
        5,
        "integer",
        "Top k",
        "A target label must be among the image's k most probable classes.",
        minimum=1,
        maximum=1000,
    ),
    ParamSpec(
        "threshold",
        DEFAULT_THRESHOLD,
        "number",
        "Threshold",
        "Keep an image when a target label is among its top_k predictions with at least this probability.",
        minimum=0,
        maximum=1,
    ),
    ParamSpec(
        "url_list",
        "",
        "string",
        "URL list",
        "Optional CSV/TSV/Parquet/JSONL of image URLs (column url, optional label, caption, "
        "page_url), local path or s3://bucket/key; downloaded like crawled images.",
        optional=True,
    ),
    ParamSpec(
        "search_sources",
        (),
        "array",
        "Search APIs",
        "Also find images through these search APIs, with licence and author: wikimedia (Wikimedia "
        "Commons), flickr (needs the flickr_default connection's API key). Empty searches none.",
    ),
    ParamSpec(
        "search_terms",
        (),
        "array",
        "Search terms",
        "Per label, the terms to search for, in any language, one line per label: "
        "'espresso: espresso; café expreso; Espresso Kaffee'. A label without a line is searched by its name.",
    ),
    ParamSpec(
        "search_limit",
        100,
        "integer",
        "Search results per term",
        "At most this many images per search term and API.",
        minimum=1,
        maximum=10_000,
    ),
    ParamSpec(
        "domains",
        (),
        "array",
        "Allowed image domains",
        "Only download images from these hosts and their subdomains (e.g. staticflickr.com); "
        "empty allows all.",
    ),
    ParamSpec(
        "quota",
        0,
        "integer",
        "Quota per label",
        "With a labelled URL list: stop downloading a label once it has this many images "
        "and report labels that fell short. 0 = no quota.",
        minimum=0,
    ),
    ParamSpec(
        "model",
        "efficientnet_lite0",
        "string",
        "Model",
        "efficientnet_lite0 (bundled, fastest), efficientnet_lite2 (bundled, more accurate, about twice "
        "the cost), a filter from `make train-filter`, a path to a .keras / .tflite file or SavedModel "
        "folder with its .json class list, or keras.applications.<Name>.",
        env="HARVEST_MODEL",
    ),
    ParamSpec(
        "render",
        "profiles",
        "string",
        "Render pages in a browser",
        "profiles: only pages whose site profile says render: true or auto. auto: also every other "
        "page whose HTML names no content image but has scripts (a gallery a script fills); its "
        "scripts' requests go through the crawler's robots, politeness and network guard.",
        env="HARVEST_RENDER",
        enum=("profiles", "auto"),
    ),
    ParamSpec(
        "text_prefilter",
        False,
        "boolean",
        "Text pre-filter",
        "Skip downloading candidates whose alt text, title or file name name only other "
        "ImageNet classes; empty or generic alt text never causes a skip.",
    ),
    ParamSpec(
        "licenses",
        (),
        "array",
        "Licences to keep",
        "SPDX ids (CC-BY-4.0, CC0-1.0, ...) or groups: open (CC0, public domain, CC BY, CC BY-SA), "
        "commercial (no NC, no ND). Images under another licence, or none found, are skipped with "
        "the reason. Empty keeps every licence.",
    ),
    ParamSpec(
        "destination",
        "",
        "string",
        "Destination",
        "s3://bucket/prefix or a local folder; empty uses HARVEST_DESTINATION or the local default.",
        optional=True,
    ),
    ParamSpec(
        "publish_format",
        "original",
        "string",
        "Publish format",
        "original publishes each image's own bytes only; jpeg also writes a training copy of every "
        "image as an RGB JPEG (quality 90) under training/, the originals kept in images/.",
        enum=("original", "jpeg"),
    ),
)

#: The Param only image_rethreshold has: which harvest run to decide again.
HARVEST_RUN_ID = ParamSpec(
    "harvest_run_id",
    "",
    "string",
    "Harvest run id",
    "The image_harvest run whose images are decided again: its Airflow run id "
    "(e.g. scheduled__2026-11-01T00:00:00+00:00) or the gallery's run id.",
    min_length=1,
)

#: What image_rethreshold's form says instead of the harvest form's description, per shared Param
#: (None: no description); an empty labels or destination there means "as the harvest run had it".
RETHRESHOLD_DESCRIPTIONS: dict[str, str | None] = {
    "labels": "Labels to keep; empty keeps the labels the harvest run asked for.",
    "top_k": None,
    "threshold": None,
    "model": None,
    "destination": "Where to publish; empty publishes where the harvest run did.",
}


def default_params(env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Every harvest Param's default, those with an ``env`` variable read from ``env`` when given."""
    return {name: spec.value(env) for name, spec in HARVEST_PARAMS.items()}


def env_params(env: Mapping[str, str]) -> dict[str, Any]:
    """The Param defaults the environment sets (HARVEST_PROFILE, HARVEST_SEEDS, HARVEST_LABELS,
    HARVEST_MODEL), as a DAG run gets them from its form; the rest are ``build_config``'s."""
    return {name: spec.value(env) for name, spec in HARVEST_PARAMS.items() if spec.env}


#: The image_takedown Params, in the trigger form's order (harvest.takedown.request reads them).
TAKEDOWN_PARAMS: dict[str, ParamSpec] = _specs(
    ParamSpec(
        "image_urls",
        (),
        "array",
        "Image URLs",
        "Images to take down by the URL they were downloaded from, one per line; the same picture "
        "found at any other URL goes too.",
    ),
    ParamSpec(
        "page_urls",
        (),
        "array",
        "Page URLs",
        "Take down every image found on these pages, one URL per line.",
    ),
    ParamSpec(
        "domains",
        (),
        "array",
        "Domains",
        "Take down every image served from, or found on, these hosts and their subdomains.",
    ),
    ParamSpec(
        "sha256s",
        (),
        "array",
        "SHA-256s",
        "Images by the SHA-256 of the downloaded file or of the published file (its name in the dataset).",
    ),
    ParamSpec(
        "reason",
        "",
        "string",
        "Reason",
        "Why the images are taken down (kept in the audit record), e.g. the notice's reference.",
        min_length=1,
    ),
    ParamSpec(
        "requested_by",
        "",
        "string",
        "Requested by",
        "Who asked for the takedown (name, e-mail or ticket), for the audit record.",
        optional=True,
    ),
)
