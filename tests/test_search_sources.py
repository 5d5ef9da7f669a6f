"""The search API connectors against loopback stand-ins answering in each API's documented JSON
(tests/search_apis.py): paging, licence and author, empty answers, API errors, rate-limit answers and
the rate limit itself; then a harvest through the stages from both APIs, real photos, real classifier."""

from __future__ import annotations

import json

import pytest
from PIL import Image
from search_apis import Answer, File, serve_api
from sqlalchemy import select
from staged import jpeg, sample_photos

from harvest.pipeline import run_all
from harvest.settings.config import ConfigError, build_config
from harvest.settings.connections import connection_secret
from harvest.sources import CONNECTORS, SearchError
from harvest.sources.flickr import Flickr
from harvest.sources.wikimedia import WikimediaCommons
from harvest.state.db import session_scope
from harvest.state.models import Candidate, Publication


@pytest.fixture(scope="module")
def photos() -> dict[str, File]:
    images = sample_photos()
    made = {}
    for name, licence, flickr in (
        ("coffee", "CC BY-SA 4.0", "5"),
        ("flower", "CC0", "9"),
        ("grace_hopper", "Public domain", "10"),
    ):
        image: Image.Image = images[name]
        made[name] = File(
            f"{name}.jpg", jpeg(image), image.width, image.height, license=licence, flickr_license=flickr
        )
    made["diagram"] = File(
        "diagram.svg", b"<svg xmlns='http://www.w3.org/2000/svg'/>", 2000, 1000, mime="image/svg+xml"
    )
    return made


def test_commons_pages_through_the_search_and_keeps_licence_and_author(photos):
    files = list(photos.values())
    with serve_api(
        "commons", files, {"espresso": ["coffee.jpg", "diagram.svg", "flower.jpg", "grace_hopper.jpg"]}
    ) as api:
        commons = WikimediaCommons(api["endpoint"], "test-agent", rate=50)
        hits = list(commons.search("espresso", 10))
    assert [h.title for h in hits] == ["coffee.jpg", "flower.jpg", "grace_hopper.jpg"]  # the SVG is no photo
    queries = [q for _, q in api["requests"]]
    assert [q.get("gsroffset") for q in queries] == [None, "2"]  # two per page, then continued
    assert all(
        q["generator"] == "search" and q["gsrnamespace"] == "6" and q["prop"] == "imageinfo" for q in queries
    )
    assert "extmetadata" in queries[0]["iiprop"]
    coffee = hits[0]
    assert coffee.page_url == f"{api['base']}/wiki/File:coffee.jpg"
    assert coffee.record["license"] == "CC BY-SA 4.0" and coffee.record["spdx"] == "CC-BY-SA-4.0"
    assert coffee.record["author"] == "Jane Doe"
    assert coffee.record["author_url"] == "https://commons.wikimedia.org/wiki/User:Jane"
    assert hits[1].record["spdx"] == "CC0-1.0" and hits[2].record["spdx"] is None


def test_commons_limit_empty_answer_errors_and_rate_limits(photos):
    files = list(photos.values())
    with serve_api("commons", files, {"espresso": ["coffee.jpg", "flower.jpg", "grace_hopper.jpg"]}) as api:
        commons = WikimediaCommons(api["endpoint"], "test-agent", rate=5)
        assert len(list(commons.search("espresso", 1))) == 1 and api["requests"][-1][1]["gsrlimit"] == "1"
        assert list(commons.search("no such thing", 10)) == []
        # rate-limited twice (HTTP 429 with Retry-After, then MediaWiki's maxlag error), then answered
        api["fail_next"] += [
            Answer(429, {"error": {"code": "ratelimited", "info": "slow down"}}, {"Retry-After": "0"}),
            Answer(
                200, {"error": {"code": "maxlag", "info": "Waiting for a database server: 6 seconds lagged"}}
            ),
        ]
        sent = commons.api.sent
        assert len(list(commons.search("espresso", 2))) == 2
        assert commons.api.sent - sent == 3
        # an API error stops that search with the request URL and the API's reason
        api["fail_next"].append(Answer(200, {"error": {"code": "badvalue", "info": "Unrecognized value"}}))
        with pytest.raises(SearchError) as caught:
            list(commons.search("espresso", 2))
        assert (
            "api.php?" in caught.value.url and caught.value.reason == "API error badvalue: Unrecognized value"
        )
        # rate-limited past the retries: a clear error, not an endless wait
        api["fail_next"] += [Answer(429, {}, {"Retry-After": "0"})] * 4
        with pytest.raises(SearchError, match="HTTP 429 after 4 attempts"):
            list(commons.search("espresso", 2))
    times = [t for t, _ in api["requests"]]
    assert min(b - a for a, b in zip(times, times[1:], strict=False)) >= 0.2 - 0.02  # 5 requests a second


def test_flickr_pages_licences_and_errors(photos):
    files = list(photos.values())
    with serve_api(
        "flickr", files, {"daisy": ["flower.jpg", "coffee.jpg", "grace_hopper.jpg"]}, key="k3y-f0r-tests"
    ) as api:
        flickr = Flickr("k3y-f0r-tests", api["endpoint"], "test-agent", rate=50)
        hits = list(flickr.search("daisy", 10))
        assert [h.record["license"] for h in hits] == ["CC0 1.0", "CC BY-SA 2.0", "Public Domain Mark 1.0"]
        assert [h.record["spdx"] for h in hits] == ["CC0-1.0", "CC-BY-SA-2.0", None]
        assert hits[0].record["author"] == "Jane Doe" and hits[0].page_url.startswith(
            "https://www.flickr.com/photos/"
        )
        queries = [q for _, q in api["requests"]]
        assert [q["page"] for q in queries] == ["1", "2"]
        assert {"license", "owner_name", "url_l"} <= set(queries[0]["extras"].split(","))
        assert queries[0]["nojsoncallback"] == "1" and queries[0]["license"] == "4,5,7,8,9,10,11,12"
        assert list(flickr.search("nothing here", 10)) == []  # an empty page: pages 0, no photo
        # service unavailable (code 105) and HTTP 429: retried; then the answer
        api["fail_next"] += [
            Answer(200, {"stat": "fail", "code": 105, "message": "Service currently unavailable"}),
            Answer(429, b"Too Many Requests", {"Retry-After": "0"}),
        ]
        assert len(list(flickr.search("daisy", 1))) == 1
        with pytest.raises(SearchError) as caught:
            list(Flickr("wrong-key", api["endpoint"], "test-agent", rate=50).search("daisy", 5))
    assert caught.value.reason == "Flickr error 100: Invalid API Key (Key has invalid format)"
    assert "wrong-key" not in str(caught.value) and "api_key=%2A%2A%2A" in caught.value.url
    with pytest.raises(SearchError, match="no Flickr API key"):
        list(Flickr(None, "http://127.0.0.1:9/").search("daisy", 1))


def test_flickr_key_comes_from_the_airflow_connection_in_either_form(monkeypatch, tmp_path):
    assert connection_secret(json.dumps({"conn_type": "http", "password": "p4ss"})) == "p4ss"
    assert connection_secret(json.dumps({"conn_type": "http", "extra": {"api_key": "x1"}})) == "x1"
    assert connection_secret("http://:s%2Fecret@api.flickr.com") == "s/ecret"
    assert connection_secret("http://api.flickr.com/?api_key=q2") == "q2"
    params = {"search_sources": ["flickr"], "labels": ["daisy"], "destination": str(tmp_path / "d")}
    with pytest.raises(ConfigError, match="flickr needs an API key"):
        build_config(params, "manual__x")
    monkeypatch.setenv(
        "AIRFLOW_CONN_FLICKR_DEFAULT", json.dumps({"conn_type": "http", "password": "from-conn"})
    )
    cfg = build_config(params, "manual__x")
    assert cfg.flickr_api_key == "from-conn" and "from-conn" not in repr(cfg)
    with pytest.raises(ConfigError) as caught:
        build_config(
            {**params, "search_sources": ["bing"], "search_terms": ["cat: Katze", "daisy"]}, "manual__x"
        )
    assert len(caught.value.problems) == 3
    assert set(CONNECTORS) == {"wikimedia", "flickr"}


def test_harvest_from_both_apis_records_licences(photos, postgres_url, classifier, monkeypatch, tmp_path):
    files = list(photos.values())
    with (
        serve_api(
            "commons", files, {"espresso": ["coffee.jpg", "grace_hopper.jpg"], "café expreso": ["coffee.jpg"]}
        ) as commons,
        serve_api("flickr", files, {"daisy": ["flower.jpg"], "espresso": []}, key="k3y") as flickr,
    ):
        monkeypatch.setenv("HARVEST_WIKIMEDIA_API", commons["endpoint"])
        monkeypatch.setenv("HARVEST_FLICKR_API", flickr["endpoint"])
        monkeypatch.setenv("HARVEST_WIKIMEDIA_RATE", "20")
        monkeypatch.setenv("HARVEST_FLICKR_RATE", "20")
        monkeypatch.setenv("AIRFLOW_CONN_FLICKR_DEFAULT", "http://:k3y@api.flickr.example")
        flickr["fail_next"].append(
            Answer(200, {"stat": "fail", "code": 105, "message": "Service currently unavailable"})
        )
        cfg = build_config(
            {
                "search_sources": ["wikimedia", "flickr"],
                "labels": ["espresso", "daisy"],
                "search_terms": ["espresso: espresso; café expreso"],
                "destination": str(tmp_path / "dataset"),
            },
            "manual__search",
            database_url=postgres_url,
        )
        reports = run_all(cfg, classifier)
    search = next(r for r in reports if r.stage == "search")
    assert search.extra["hits"] == {"wikimedia": 3, "flickr": 1} and search.failed == 0
    with session_scope(postgres_url) as session:
        rows = session.execute(
            select(Candidate.source, Candidate.label_hint, Candidate.source_record, Candidate.status).where(
                Candidate.run_id == cfg.run_id
            )
        ).all()
        published = session.execute(select(Publication.label, Publication.sha256)).all()
    assert sorted((r.source, r.label_hint) for r in rows) == [
        ("flickr", "daisy"),
        ("wikimedia", "espresso"),
        ("wikimedia", "espresso"),
    ]  # the café expreso hit is the same URL as the espresso one: one candidate
    by_api = {(r.source, r.source_record["title"]): r.source_record for r in rows}
    assert by_api[("wikimedia", "File:coffee.jpg")]["spdx"] == "CC-BY-SA-4.0"
    assert by_api[("wikimedia", "File:coffee.jpg")]["author"] == "Jane Doe"
    assert (
        by_api[("flickr", "flower")]["license"] == "CC0 1.0"
        and by_api[("flickr", "flower")]["author"] == "Jane Doe"
    )
    assert all(r.status == "done" for r in rows)
    assert sorted(label for label, _ in published) == ["daisy", "espresso"]  # the classifier kept both photos
