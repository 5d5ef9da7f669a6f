"""Dataset quality settings (environment only; README "Dataset quality"): deduplication,
placeholders, exports, variants, decoding limits and the metadata key."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from harvest.settings.env import as_list, env_int

#: The default pixel cap: see HarvestConfig.max_pixels.
DEFAULT_MAX_PIXELS = 40_000_000
#: The default decode budget of a process, in MB: a 40-megapixel lossless WebP (779 MB, the
#: costliest image the default pixel cap lets through) fits, so that no image under the cap is
#: refused for its cost alone; the budget only makes decodes wait for each other.
DEFAULT_DECODE_BUDGET_MB = 900

EXPORTS = ("parquet", "card", "webdataset")
#: the whole-dataset Parquet manifest and the dataset card are cheap and wanted by every user; the
#: WebDataset shards copy every image once more, so they are asked for by name
DEFAULT_EXPORTS = ("parquet", "card")


def quality_settings(env: Mapping[str, str], problems: list[str]) -> dict[str, Any]:
    """Dedup, placeholder, privacy, export and variant settings from HARVEST_* variables."""
    settings: dict[str, Any] = {
        "near_dup_distance": env_int(env, "HARVEST_NEAR_DUP_DISTANCE", 6, 0, 24, problems),
        "placeholder_min_urls": env_int(env, "HARVEST_PLACEHOLDER_MIN_URLS", 10, 2, 100_000, problems),
        "placeholder_distance": env_int(env, "HARVEST_PLACEHOLDER_DISTANCE", 4, 0, 24, problems),
        "webdataset_shard_size": env_int(env, "HARVEST_WEBDATASET_SHARD_SIZE", 1000, 1, 1_000_000, problems),
        "thumbnail_size": env_int(env, "HARVEST_THUMBNAIL_SIZE", 0, 0, 4096, problems),
        # above 89,478,485 pixels Pillow itself refuses images as decompression bombs
        "max_pixels": env_int(env, "HARVEST_MAX_PIXELS", DEFAULT_MAX_PIXELS, 4096, 89_478_485, problems),
        "decode_budget_mb": env_int(
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
    raw = env.get("HARVEST_MIN_DETAIL")
    settings["min_detail"] = 3.0
    if raw is not None and raw.strip():
        try:
            settings["min_detail"] = float(raw)
            if not 0.0 <= settings["min_detail"] <= 8.0:
                raise ValueError
        except ValueError:
            problems.append(f"HARVEST_MIN_DETAIL must be a number of bits between 0 and 8, got {raw!r}")
    exports = as_list((env.get("HARVEST_EXPORTS") or "").lower())
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
    for part in as_list(env.get("HARVEST_VARIANT_WIDTHS")):
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
