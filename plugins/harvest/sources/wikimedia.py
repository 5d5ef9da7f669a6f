"""Wikimedia Commons through the MediaWiki Action API: a full-text search in the File namespace as
the generator, ``imageinfo`` for each file's URL, a scaled rendition and ``extmetadata`` (licence
and author), continued page by page with the ``continue`` object the API returns.

Request (formatversion 2): ``action=query&generator=search&gsrsearch=<term>&gsrnamespace=6
&gsrlimit=<n>&prop=imageinfo&iiprop=url|size|mime|extmetadata&iiurlwidth=<w>``. Errors come as
``{"error": {"code", "info"}}``; ``ratelimited`` and ``maxlag`` mean "retry later".
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping

from harvest.sources.api import JsonApi, RetryLater
from harvest.sources.interface import Hit, SearchError
from harvest.sources.licences import html_text, spdx_of

log = logging.getLogger(__name__)

ENDPOINT = "https://commons.wikimedia.org/w/api.php"
#: Wikimedia asks API clients to send requests one at a time; one a second stays far below its limits
RATE = 1.0
#: files per request (gsrlimit): 50 is the most an ordinary client may ask for
PAGE = 50
#: the width of the rendition downloaded (the original may be tens of megapixels)
WIDTH = 1024
#: still images the classifier reads; SVG drawings, PDFs and videos are left out
MIME_TYPES = ("image/jpeg", "image/png", "image/webp", "image/gif", "image/tiff")
RETRY_CODES = ("ratelimited", "maxlag", "readonly")


def _check(answer: dict) -> None:
    error = answer.get("error")
    if not error:
        return
    code = str(error.get("code", "unknown"))
    info = str(error.get("info", "")).strip()
    if code in RETRY_CODES:
        raise RetryLater(f"API error {code}: {info}", None)
    raise SearchError("", f"API error {code}: {info}")


def _value(extmetadata: Mapping, name: str) -> str | None:
    field = extmetadata.get(name)
    value = field.get("value") if isinstance(field, Mapping) else None
    return str(value).strip() if value not in (None, "") else None


class WikimediaCommons:
    name = "wikimedia"

    def __init__(
        self, endpoint: str = ENDPOINT, user_agent: str = "", rate: float = RATE, width: int = WIDTH
    ):
        self.api = JsonApi(endpoint, user_agent, rate)
        self.width = width

    @classmethod
    def from_env(cls, env: Mapping[str, str], user_agent: str) -> WikimediaCommons:
        return cls(
            env.get("HARVEST_WIKIMEDIA_API") or ENDPOINT,
            user_agent,
            float(env.get("HARVEST_WIKIMEDIA_RATE") or RATE),
        )

    def _params(self, term: str, limit: int, cont: Mapping[str, str]) -> dict:
        return {
            "action": "query",
            "format": "json",
            "formatversion": "2",
            "generator": "search",
            "gsrsearch": term,
            "gsrnamespace": "6",
            "gsrlimit": str(min(PAGE, limit)),
            "prop": "imageinfo",
            "iiprop": "url|size|mime|extmetadata",
            "iiurlwidth": str(self.width),
            "iiextmetadatafilter": "LicenseShortName|LicenseUrl|License|Artist|Credit|UsageTerms|AttributionRequired",
            **cont,
        }

    def search(self, term: str, limit: int) -> Iterator[Hit]:
        given, cont = 0, {}
        while given < limit:
            answer = self.api.get(self._params(term, limit - given, cont), _check)
            pages = (answer.get("query") or {}).get("pages") or []
            if isinstance(pages, Mapping):  # formatversion 1 shape, from an older wiki
                pages = list(pages.values())
            for page in sorted(pages, key=lambda p: p.get("index", 0)):
                hit = self._hit(page, term)
                if hit is not None and given < limit:
                    given += 1
                    yield hit
            cont = answer.get("continue") or {}
            if not cont or not pages:
                return

    def _hit(self, page: Mapping, term: str) -> Hit | None:
        infos = page.get("imageinfo") or []
        if not infos:
            return None
        info = infos[0]
        if info.get("mime") not in MIME_TYPES or not info.get("url"):
            return None
        meta = info.get("extmetadata") or {}
        licence = _value(meta, "LicenseShortName")
        author, author_url = html_text(_value(meta, "Artist"))
        credit, _ = html_text(_value(meta, "Credit"))
        scaled = info.get("thumburl")
        url = scaled if scaled and (info.get("width") or 0) > self.width else info["url"]
        variants = ({"url": info["url"], "descriptor": "original"},) if url != info["url"] else ()
        title = str(page.get("title") or "")
        return Hit(
            url=url,
            page_url=info.get("descriptionurl") or "",
            title=title.removeprefix("File:") or None,
            variants=variants,
            record={
                "api": self.name,
                "id": page.get("pageid"),
                "title": title,
                "license": licence,
                "license_url": _value(meta, "LicenseUrl"),
                "spdx": spdx_of(licence),
                "author": author,
                "author_url": author_url,
                "credit": credit,
                "attribution_required": _value(meta, "AttributionRequired"),
                "term": term,
            },
        )
