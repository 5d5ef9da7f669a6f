"""Named harvest profiles: a YAML file per recurring harvest, selectable in the trigger form.

A nightly harvest is configured once, in a reviewed file in ``include/profiles/``, instead of in the
Param defaults of the DAG; the form and the CLI pick it by name.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from harvest.settings.errors import ConfigError
from harvest.settings.keys import unknown_key_problems
from harvest.settings.params import HARVEST_PARAMS

PROFILE_SUFFIXES = (".yaml", ".yml")
#: Keys a profile may set: the Params, plus a free-text description.
PROFILE_KEYS = set(HARVEST_PARAMS) | {"description"}


def list_profiles(profiles_dir: Path) -> list[str]:
    """Profile names (file stems), sorted; cheap enough to run while a DAG file is parsed."""
    try:
        return sorted(p.stem for p in Path(profiles_dir).iterdir() if p.suffix in PROFILE_SUFFIXES)
    except OSError:
        return []


def load_profile(name: str, profiles_dir: Path) -> dict[str, Any]:
    for suffix in PROFILE_SUFFIXES:
        path = Path(profiles_dir) / f"{name}{suffix}"
        if path.is_file():
            break
    else:
        known = ", ".join(list_profiles(profiles_dir)) or "none"
        raise ConfigError([f"profile {name!r} not found in {profiles_dir} (known profiles: {known})"])
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError([f"profile {path}: not valid YAML ({exc})"]) from exc
    if not isinstance(data, dict):
        raise ConfigError([f"profile {path}: expected a mapping of settings, got {type(data).__name__}"])
    unknown = unknown_key_problems(data, PROFILE_KEYS, f"profile {path}")
    if unknown:
        raise ConfigError(unknown)
    data.pop("description", None)
    return data


def apply_profile(params: Mapping[str, Any], profiles_dir: Path) -> dict[str, Any]:
    """The profile's settings win over the form's; settings the profile leaves out come from the form."""
    merged = dict(params)
    name = str(params.get("profile") or "").strip()
    if name:
        merged.update(load_profile(name, profiles_dir))
    return merged
