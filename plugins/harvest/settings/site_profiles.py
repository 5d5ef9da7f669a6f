"""Site profiles: a YAML file per site says which links to follow, which images to take and which
page fields to attach to every image, so a site with a known layout needs no code.

Example (``covers.yaml`` in ``HARVEST_SITE_PROFILES_DIR``)::

    hosts: [covers.example.com]
    follow: ["a.next", "ul.archive a"]     # only these links are followed
    images: ["div.cover img"]              # only these images are taken
    fields:                                # attached to each image of the page
      title: "h1.cover-title"
      date: "time@datetime"                # selector@attribute
    render: auto                           # true: run the page's JavaScript first (web/render.py);
                                           # auto: only when the HTML as sent names no content image
                                           # but has scripts (docs/script-fed-pages.md); false: never

Without a profile, the generic rules apply.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import soupsieve
import yaml

KNOWN_KEYS = {"hosts", "follow", "images", "fields", "render"}
AUTO = "auto"


class SiteProfileError(ValueError):
    """A profile file that cannot be used; the message names the file and the problem."""


@dataclass(frozen=True)
class SiteProfile:
    name: str
    hosts: tuple[str, ...]
    follow: tuple[str, ...] = ()
    images: tuple[str, ...] = ()
    fields: tuple[tuple[str, str, str | None], ...] = field(default=())  # (name, selector, attribute)
    #: True: run the page's JavaScript in headless Chromium before reading it; "auto": only when its
    #: HTML as sent names no content image but has scripts; False: never; None: as the run says
    render: bool | str | None = None

    def matches(self, host: str) -> bool:
        host = host.lower()
        return any(host == h or host.endswith("." + h) for h in self.hosts)


def _strings(value, where: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
        raise SiteProfileError(f"{where}: expected a list of non-empty strings")
    return tuple(v.strip() for v in value)


def _check_selector(selector: str, where: str) -> None:
    try:
        soupsieve.compile(selector)
    except (soupsieve.SelectorSyntaxError, ValueError) as exc:
        raise SiteProfileError(f"{where}: invalid CSS selector {selector!r} ({exc})") from exc


def parse_profile(text: str, name: str) -> SiteProfile:
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise SiteProfileError(f"{name}: not valid YAML ({exc})") from exc
    if not isinstance(data, dict):
        raise SiteProfileError(f"{name}: expected a mapping with hosts, follow, images, fields")
    unknown = sorted(set(data) - KNOWN_KEYS)
    if unknown:
        raise SiteProfileError(f"{name}: unknown keys {unknown} (known: {sorted(KNOWN_KEYS)})")
    hosts = tuple(h.lower().strip(".") for h in _strings(data.get("hosts"), f"{name}: hosts"))
    if not hosts:
        raise SiteProfileError(f"{name}: hosts: give at least one host name")
    follow = _strings(data.get("follow"), f"{name}: follow")
    images = _strings(data.get("images"), f"{name}: images")
    for selector in follow + images:
        _check_selector(selector, name)
    raw_fields = data.get("fields") or {}
    if not isinstance(raw_fields, dict):
        raise SiteProfileError(
            f"{name}: fields: expected a mapping of name to 'selector' or 'selector@attribute'"
        )
    fields = []
    for field_name, spec in raw_fields.items():
        if not isinstance(spec, str) or not spec.strip():
            raise SiteProfileError(
                f"{name}: fields.{field_name}: expected 'selector' or 'selector@attribute'"
            )
        selector, _, attribute = spec.strip().rpartition("@") if "@" in spec else (spec.strip(), "", "")
        _check_selector(selector, f"{name}: fields.{field_name}")
        fields.append((str(field_name), selector, attribute or None))
    render = data.get("render")
    if isinstance(render, str) and render.strip().lower() == AUTO:
        render = AUTO
    elif render is not None and not isinstance(render, bool):
        raise SiteProfileError(f"{name}: render: expected true, false or auto")
    return SiteProfile(name, hosts, follow, images, tuple(fields), render)


def load_site_profiles(directory: str | Path | None) -> list[SiteProfile]:
    """Every ``*.yaml``/``*.yml`` profile in ``directory``; raises SiteProfileError listing all bad files."""
    if directory is None:
        return []
    profiles, problems = [], []
    for path in sorted(Path(directory).glob("*.y*ml")):
        try:
            profiles.append(parse_profile(path.read_text(encoding="utf-8"), path.name))
        except (SiteProfileError, UnicodeDecodeError) as exc:
            problems.append(str(exc))
    if problems:
        raise SiteProfileError("; ".join(problems))
    return profiles


def site_profile_for(profiles: list[SiteProfile], host: str) -> SiteProfile | None:
    return next((p for p in profiles if p.matches(host)), None)


def render_mode(profile: SiteProfile | None, run_render: str) -> str:
    """How a page is rendered: "always", "auto" or "never". The site's profile decides when it says;
    else the run's ``render`` setting ("auto" renders script-fed pages, anything else never)."""
    if profile is not None and profile.render is not None:
        return "always" if profile.render is True else (AUTO if profile.render == AUTO else "never")
    return AUTO if run_render == AUTO else "never"
