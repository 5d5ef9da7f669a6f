"""A takedown request, normalised: the same request typed twice has the same key (and so the same
audit record), whatever the order, case or spelling of its URLs."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from harvest.urls import canonicalize

_SHA256 = re.compile(r"[0-9a-f]{64}")
_HOST = re.compile(r"[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*")


class TakedownError(ValueError):
    """The request cannot be carried out as given (nothing named, a value that is not what its field
    says); every problem is listed, so the operator fixes them in one go."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("; ".join(problems))


@dataclass(frozen=True)
class TakedownRequest:
    image_urls: tuple[str, ...] = ()
    page_urls: tuple[str, ...] = ()
    domains: tuple[str, ...] = ()
    sha256s: tuple[str, ...] = ()
    reason: str = ""
    #: the claimant (a name, an e-mail, a ticket), as the operator recorded it
    requested_by: str = ""

    def scope(self) -> dict[str, list[str]]:
        return {
            "image_urls": list(self.image_urls),
            "page_urls": list(self.page_urls),
            "domains": list(self.domains),
            "sha256s": list(self.sha256s),
        }

    @property
    def key(self) -> str:
        """What the request removes, hashed: the reason and claimant do not change what is removed."""
        return hashlib.sha256(json.dumps(self.scope(), sort_keys=True).encode("utf-8")).hexdigest()


def _lines(value: Any) -> list[str]:
    if value is None:
        return []
    items: Iterable = value.splitlines() if isinstance(value, str) else value
    return [str(item).strip() for item in items if str(item).strip()]


def _urls(values: list[str], field: str, problems: list[str]) -> tuple[str, ...]:
    urls = set()
    for raw in values:
        url = canonicalize(raw)
        if url is None:
            problems.append(f"{field}: {raw!r} is not an http(s) URL")
        else:
            urls.add(url)
    return tuple(sorted(urls))


def parse_request(params: Mapping[str, Any]) -> TakedownRequest:
    """The request from the DAG's Params (or the CLI): lists of lines, a reason, who asked."""
    problems: list[str] = []
    image_urls = _urls(_lines(params.get("image_urls")), "image_urls", problems)
    page_urls = _urls(_lines(params.get("page_urls")), "page_urls", problems)
    domains = set()
    for raw in _lines(params.get("domains")):
        domain = raw.lower().removeprefix("*.").strip(".")
        if not _HOST.fullmatch(domain):
            problems.append(f"domains: {raw!r} is not a host name (e.g. photos.example.org)")
        else:
            domains.add(domain)
    sha256s = set()
    for raw in _lines(params.get("sha256s")):
        if not _SHA256.fullmatch(raw.lower()):
            problems.append(f"sha256s: {raw!r} is not a SHA-256 (64 hex digits)")
        else:
            sha256s.add(raw.lower())
    reason = str(params.get("reason") or "").strip()
    if not reason:
        problems.append("reason: say why the images are taken down (it goes into the audit record)")
    if not (image_urls or page_urls or domains or sha256s) and not problems:
        problems.append("name at least one image URL, page URL, domain or SHA-256 to take down")
    if problems:
        raise TakedownError(problems)
    return TakedownRequest(
        image_urls=image_urls,
        page_urls=page_urls,
        domains=tuple(sorted(domains)),
        sha256s=tuple(sorted(sha256s)),
        reason=reason,
        requested_by=str(params.get("requested_by") or "").strip(),
    )
