"""Flickr through ``flickr.photos.search`` (REST, JSON without callback): photos matching a text,
with the ``license``, ``owner_name`` and ``url_*`` extras, page after page. The API key is the
password (or ``extra.api_key``) of the ``flickr_default`` connection.

Errors come as ``{"stat": "fail", "code": n, "message": ...}``: code 105 (service unavailable) and
10 (search API unavailable) mean "retry later"; 100 (invalid key) and the rest stop the search.
Flickr allows 3,600 requests an hour per key: one a second by default.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

from harvest.settings.connections import api_key
from harvest.sources.api import JsonApi, RetryLater
from harvest.sources.interface import Hit, SearchError
from harvest.sources.licences import FLICKR_LICENSES

ENDPOINT = "https://api.flickr.com/services/rest/"
RATE = 1.0
PAGE = 100
CONNECTION = "flickr_default"
#: licences searched by default: those that allow reuse with attribution at most (CC BY, CC BY-SA,
#: no known restrictions, US government work, CC0, public domain mark, CC BY 4.0, CC BY-SA 4.0)
OPEN_LICENSES = "4,5,7,8,9,10,11,12"
#: sizes asked for, preferred first: large 1024, medium 800, medium 640, original
SIZES = ("url_l", "url_c", "url_z", "url_o")
RETRY_CODES = {10, 105}


def _check(answer: dict) -> None:
    if answer.get("stat") == "ok":
        return
    code = answer.get("code")
    message = str(answer.get("message") or "no message")
    if code in RETRY_CODES:
        raise RetryLater(f"Flickr error {code}: {message}")
    raise SearchError("", f"Flickr error {code}: {message}")


class Flickr:
    name = "flickr"

    def __init__(
        self,
        key: str | None,
        endpoint: str = ENDPOINT,
        user_agent: str = "",
        rate: float = RATE,
        licenses: str = OPEN_LICENSES,
    ):
        self.key = key
        self.licenses = licenses
        self.api = JsonApi(endpoint, user_agent, rate)

    @classmethod
    def from_env(cls, env: Mapping[str, str], user_agent: str) -> Flickr:
        return cls(
            api_key(env, "flickr", CONNECTION),
            env.get("HARVEST_FLICKR_API") or ENDPOINT,
            user_agent,
            float(env.get("HARVEST_FLICKR_RATE") or RATE),
            env.get("HARVEST_FLICKR_LICENSES") or OPEN_LICENSES,
        )

    def search(self, term: str, limit: int) -> Iterator[Hit]:
        if not self.key:
            raise SearchError(
                self.api.endpoint,
                f"no Flickr API key: set the {CONNECTION} connection's password (or HARVEST_FLICKR_API_KEY)",
            )
        given, page = 0, 1
        while given < limit:
            params = {
                "method": "flickr.photos.search",
                "api_key": self.key,
                "text": term,
                "license": self.licenses,
                "content_type": "1",
                "media": "photos",
                "safe_search": "1",
                "sort": "relevance",
                "extras": ",".join(("license", "owner_name", *SIZES)),
                "per_page": str(min(PAGE, max(limit - given, 1))),
                "page": str(page),
                "format": "json",
                "nojsoncallback": "1",
            }
            photos = self.api.get(params, _check).get("photos") or {}
            found = photos.get("photo") or []
            for photo in found:
                hit = self._hit(photo, term)
                if hit is not None and given < limit:
                    given += 1
                    yield hit
            if not found or page >= int(photos.get("pages") or 0):
                return
            page += 1

    def _hit(self, photo: Mapping, term: str) -> Hit | None:
        sizes = [(size, photo[size]) for size in SIZES if photo.get(size)]
        if not sizes or not photo.get("id"):
            return None
        owner, photo_id = photo.get("owner") or "", str(photo["id"])
        licence_id = str(photo.get("license", ""))
        name, licence_url, spdx = FLICKR_LICENSES.get(licence_id, (None, None, None))
        return Hit(
            url=sizes[0][1],
            page_url=f"https://www.flickr.com/photos/{owner}/{photo_id}/",
            title=photo.get("title") or None,
            variants=tuple({"url": url, "descriptor": size} for size, url in sizes[1:]),
            record={
                "api": self.name,
                "id": photo_id,
                "title": photo.get("title") or None,
                "license_id": licence_id,
                "license": name,
                "license_url": licence_url,
                "spdx": spdx,
                "author": photo.get("ownername") or None,
                "author_url": f"https://www.flickr.com/people/{owner}/" if owner else None,
                "term": term,
            },
        )
