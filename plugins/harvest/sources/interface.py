"""What every search connector offers, and the one error it raises."""

from __future__ import annotations

import importlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol


class SearchError(Exception):
    """A search request failed for good (a bad API key, an API error, rate-limited past the retries):
    carries the request URL (the API key masked) and the API's own reason."""

    def __init__(self, url: str, reason: str):
        self.url = url
        self.reason = reason
        super().__init__(f"{url}: {reason}")


@dataclass(frozen=True)
class Hit:
    """One image a search returned."""

    #: the URL to download (a rendition of reasonable size where the API offers one)
    url: str
    #: the page that shows the image (the file page on Commons, the photo page on Flickr)
    page_url: str
    title: str | None
    #: other URLs of the same image, in the candidates' variants form: [{"url": ..., "descriptor": ...}]
    variants: tuple[dict, ...] = ()
    #: what the API said: {"api", "id", "license", "license_url", "spdx", "author", "author_url",
    #: "credit", "term", ...}; stored as the candidate's source_record
    record: Mapping[str, Any] = field(default_factory=dict)


class SearchSource(Protocol):
    #: the name users give in the search_sources Param, and the candidates' ``source``
    name: str

    def search(self, term: str, limit: int) -> Iterator[Hit]:
        """Up to ``limit`` hits for ``term``, page after page; raises SearchError when a page fails."""
        ...


#: search_sources names -> the connector class, imported when it is used
CONNECTORS: dict[str, str] = {
    "wikimedia": "harvest.sources.wikimedia:WikimediaCommons",
    "flickr": "harvest.sources.flickr:Flickr",
}


def open_source(name: str, env: Mapping[str, str], user_agent: str) -> SearchSource:
    module, _, attr = CONNECTORS[name].partition(":")
    return getattr(importlib.import_module(module), attr).from_env(env, user_agent)
