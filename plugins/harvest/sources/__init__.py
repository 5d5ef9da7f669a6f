"""Search APIs as a source of images, beside crawling seed pages and reading URL lists.

A connector (:mod:`.wikimedia`, :mod:`.flickr`) turns a search term into :class:`~.interface.Hit`s:
the image URL to download, the page that shows it, and what the API says about it (licence, author,
its own id), recorded with the candidate. :mod:`.api` is the one JSON-over-HTTP client they share,
with a rate limit per API and retries of rate-limit answers. No Airflow, no database: the stage in
``harvest.stages.sources`` stores the hits.
"""

from __future__ import annotations

from harvest.sources.interface import CONNECTORS, Hit, SearchError, SearchSource, open_source

__all__ = ["CONNECTORS", "Hit", "SearchError", "SearchSource", "open_source"]
