"""Opt-outs and licences end to end: a loopback site declaring each opt-out in each place and
licensing its photos in each markup and file form, harvested through every stage against Postgres
with the real classifier; the harvest keeps and records exactly the images allowed."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
from consent_site import AGENT, build, jpeg_bytes, with_iptc, with_xmp
from loopback_site import Response, serve
from sqlalchemy import select
from staged import sample_photos

from harvest.dataset.stats import domain_stats
from harvest.demo_site import DEMO_LABELS
from harvest.images.imagecheck import inspect_image
from harvest.licences import allowed, resolve, spdx_from_text, spdx_from_url
from harvest.pipeline import run_all
from harvest.settings.config import ConfigError, build_config
from harvest.state.db import session_scope
from harvest.state.models import Candidate, Image, Page
from harvest.web.optout import from_headers, from_meta, parse_tdmrep, robots_directives

DIRECTIVES = ("noai", "noimageai", "noindex", "noimageindex")


def test_x_robots_tag_scopes_and_directives():
    assert robots_directives("noai, noimageai", AGENT) == ["noai", "noimageai"]
    assert robots_directives(f"{AGENT}: noai", AGENT) == ["noai"]
    assert robots_directives("googlebot: noindex, nofollow", AGENT) == []
    assert robots_directives("unavailable_after: 25 Jun 2010 15:00:00 PST, noai", AGENT)[-1] == "noai"
    assert from_headers({"x-robots-tag": "nofollow"}, AGENT, DIRECTIVES, "the image") is None
    found = from_headers(
        {"x-robots-tag": "googlebot: noindex, image-harvester: noimageai"}, AGENT, DIRECTIVES, "x"
    )
    assert found is not None and found.directive == "noimageai"
    assert from_headers({"tdm-reservation": "0"}, AGENT, DIRECTIVES, "x") is None
    # the directive list is a setting: noindex alone is not honoured when the list leaves it out
    assert from_meta([("robots", "noindex")], AGENT, ("noai",)) is None
    assert from_meta([("ROBOTS", "NoAI")], AGENT, ("noai",)).directive == "noai"


def test_tdmrep_rules_longest_location_wins():
    rules = parse_tdmrep(
        "https://a.example",
        json.dumps(
            [
                {"location": "/", "tdm-reservation": 0},
                {"location": "/img/*.jpg$", "tdm-reservation": 1},
                {"location": "/img/free/*.jpg", "tdm-reservation": 0},
                {"location": "no-slash", "tdm-reservation": 1},
            ]
        ),
    )
    assert rules.verdict("https://a.example/img/a.jpg") is not None
    assert rules.verdict("https://a.example/img/a.jpg?x=1") is None  # "$" anchors the end
    assert rules.verdict("https://a.example/img/free/a.jpg") is None
    assert rules.verdict("https://a.example/page.html") is None
    assert parse_tdmrep("https://a.example", "{not json").rules == []


@pytest.mark.parametrize(
    "text, spdx",
    [
        ("https://creativecommons.org/licenses/by-nc-sa/3.0/deed.fr", "CC-BY-NC-SA-3.0"),
        ("https://licensebuttons.net/l/by-nd/4.0/88x31.png", "CC-BY-ND-4.0"),
        ("http://creativecommons.org/publicdomain/mark/1.0/", "PDM"),
        ("CC BY-SA 4.0", "CC-BY-SA-4.0"),
        ("Public domain (CC0)", "CC0-1.0"),
        ("© 2026 Someone. All rights reserved.", None),
    ],
)
def test_licences_normalised_to_spdx(text, spdx):
    assert (spdx_from_url(text) or spdx_from_text(text)) == spdx


def test_licence_groups_and_unknown_param():
    assert allowed("CC-BY-NC-4.0", ()) and allowed("unknown", ())
    assert allowed("PDM", ("open",)) and allowed("CC-BY-SA-4.0", ("open",))
    assert not allowed("CC-BY-NC-4.0", ("open",)) and not allowed("unknown", ("open",))
    assert allowed("CC-BY-ND-4.0", ("CC-BY-ND-4.0",)) and not allowed("CC-BY-ND-4.0", ("commercial",))
    assert allowed("unknown", ("unknown",))
    with pytest.raises(ConfigError, match="licenses: 'MIT-ish'"):
        build_config({"seeds": ["http://a.example/"], "labels": ["goldfish"], "licenses": ["MIT-ish"]}, "r")


def test_file_authors_stay_private_unless_attribution_is_required():
    photo = jpeg_bytes(next(iter(sample_photos().values())))
    reserved = inspect_image(with_xmp(photo, rights="All rights reserved", creator="Rita"), 64, 64)
    assert "creator" not in reserved.rights and reserved.sensitive["xmp_creator"] == ["Rita"]
    assert resolve(None, reserved.rights)["author"] is None
    licensed = inspect_image(with_iptc(photo, {80: "Ivan", 116: "CC BY 4.0"}), 64, 64)
    assert licensed.rights["license"] == "CC-BY-4.0" and licensed.rights["creator"] == ["Ivan"]
    # a page's image-specific evidence outranks the file; the file outranks a page-wide link
    page_wide = {"license": "CC-BY-SA-4.0", "url": "u", "found": "rel=license of the page", "scope": "page"}
    assert resolve(page_wide, licensed.rights)["license"] == "CC-BY-4.0"
    in_figure = {**page_wide, "license": "CC0-1.0", "scope": "image"}
    assert resolve(in_figure, licensed.rights)["license"] == "CC0-1.0"


def test_consent_site_harvest(postgres_url, tmp_path: Path, classifier, monkeypatch, capsys):
    monkeypatch.setenv("HARVEST_OBEY_AGENTS", "GPTBot")
    monkeypatch.setenv("HARVEST_NEAR_DUP_DISTANCE", "0")  # each photo is distinct; keep them all
    monkeypatch.setenv("HARVEST_EXPORTS", "parquet,webdataset,card")
    with serve() as server:
        expect = build(server)
        cfg = build_config(
            {
                "seeds": [f"{server.base}/index.html"],
                "labels": list(DEMO_LABELS),
                "destination": str(tmp_path / "dataset"),
                "licenses": ["open"],
                # every photo the classifier scores is a keeper: this test is about consent
                "top_k": 1000,
                "threshold": 0.0,
                "max_depth": 1,
            },
            "manual__consent",
            database_url=postgres_url,
        )
        run_all(cfg, classifier)
        tdmrep_fetches = server.paths().count("/.well-known/tdmrep.json")
        requested = set(server.paths())

    base = server.base
    with session_scope(postgres_url) as session:
        rows = {
            row.url.removeprefix(base): row
            for row in session.execute(
                select(
                    Candidate.url,
                    Candidate.status,
                    Candidate.error,
                    Candidate.optout,
                    Candidate.license,
                    Candidate.license_evidence,
                    Candidate.author,
                    Candidate.sha256,
                ).where(Candidate.run_id == cfg.run_id)
            )
        }
        page_optouts = {
            url.removeprefix(base): optout
            for url, optout in session.execute(select(Page.url, Page.optout).where(Page.run_id == cfg.run_id))
        }
        private = dict(session.execute(select(Image.first_url, Image.private_fields)).all())

    assert tdmrep_fetches == 1  # once per host, like robots.txt
    # what the page, robots.txt or tdmrep.json says is known before download: never requested
    known_before = {p for p, w in expect.items() if w.directive and "of the image" not in w.reason}
    assert known_before and not known_before & requested
    assert "/l/figure-badge.jpg" not in requested  # licensed CC BY-NC in its figure: not fetched
    assert {"/o/image-header.jpg", "/f/xmp-by-nc.jpg"} <= requested
    assert page_optouts["/o/page-header.html"] == {
        "directive": "noai",
        "found": "X-Robots-Tag header of the page",
    }
    per_directive: Counter = Counter()
    per_licence: Counter = Counter()
    for path, want in expect.items():
        row = rows[path]
        assert row.status == want.status, (path, row.error)
        if want.directive:
            assert row.optout["directive"] == want.directive, path
            assert want.reason in row.optout["found"], (path, row.optout)
            own_robots = want.directive == f"Disallow for {AGENT}"  # the reason robots.txt always gave
            assert row.error.startswith(
                "disallowed by robots.txt" if own_robots else f"opt-out: {want.directive}"
            ), path
            per_directive[f"{row.optout['directive']} ({row.optout['found']})"] += 1
            continue
        assert row.optout is None, path
        assert row.license == want.license, (path, row.license, row.license_evidence)
        per_licence[row.license] += 1
        if want.reason:
            assert row.error.startswith(want.reason) and "(open)" in row.error, (path, row.error)
        if want.author is not None or path.startswith("/f/xmp-reserved"):
            assert row.author == want.author, (path, row.author)
    assert rows["/l/figure-rel.jpg"].license_evidence["found"] == "rel=license in the figure"
    assert rows["/l/json-ld.jpg"].license_evidence["acquire"].endswith("/licensing")
    assert rows["/f/xmp-by.jpg"].license_evidence["scope"] == "file"  # over the page-wide CC BY-SA
    # the name found only in a reserved file's metadata is among the private fields, not in clear
    assert "xmp_creator" in private[f"{base}/f/xmp-reserved.jpg"]

    kept = {path for path, want in expect.items() if want.status == "done"}
    dataset = tmp_path / "dataset"
    manifest = [
        json.loads(line) for line in (dataset / "manifests" / f"{cfg.run_id}.jsonl").read_text().splitlines()
    ]
    assert {row["url"].removeprefix(base) for row in manifest} == kept
    for row in manifest:
        want = expect[row["url"].removeprefix(base)]
        assert row["license"] == want.license
        if want.author:
            assert row["author"] == want.author

    import pyarrow.parquet as pq

    table = pq.read_table(dataset / "manifests" / "dataset.parquet").to_pylist()
    assert {r["url"].removeprefix(base): (r["license"], r["author"]) for r in table} == {
        path: (expect[path].license, expect[path].author) for path in kept
    }
    assert all(r["license_url"] for r in table)

    import tarfile

    samples = []
    for shard in sorted((dataset / "webdataset").glob("*.tar")):
        with tarfile.open(shard) as tar:
            samples += [json.load(tar.extractfile(m)) for m in tar.getmembers() if m.name.endswith(".json")]
    assert {s["url"].removeprefix(base): s["license"] for s in samples} == {
        p: expect[p].license for p in kept
    }

    card = (dataset / "README.md").read_text()
    assert "| CC-BY-4.0 |" in card and "| CC0-1.0 |" in card and "| CC-BY-SA-4.0 |" in card
    assert "noai (X-Robots-Tag header of the page)" in card and "tdm-reservation: 1 (tdmrep.json)" in card
    attribution = (dataset / "ATTRIBUTION.md").read_text()
    attributed = [p for p in kept if expect[p].license.startswith("CC-BY")]
    assert attribution.count(" | CC-BY-") == len(attributed) == 7
    for name in ("Ana Author", "Xavier Xmp", "Ivan Iptc"):
        assert name in attribution
    assert "Rita" not in attribution and "Rita" not in card

    stats = {s.domain: s for s in domain_stats(postgres_url, cfg.run_id)}
    assert sum(stats["127.0.0.1"].optouts.values()) == sum(1 for w in expect.values() if w.directive)

    with capsys.disabled():
        print("\nconsent site: images per opt-out directive (where found):")
        for key, count in sorted(per_directive.items()):
            print(f"  {count}  {key}")
        print("consent site: images per licence (kept with licenses=open):")
        for key, count in sorted(per_licence.items()):
            kept_count = sum(1 for p in kept if expect[p].license == key)
            print(f"  {count}  {key}  (kept {kept_count})")


def test_url_list_images_ask_tdmrep_and_honour_image_headers(postgres_url, tmp_path: Path):
    """Images named by a URL list were seen by no extraction: the download asks their origin's
    tdmrep.json (once) before requesting them, and reads their own response headers."""
    from stage_setup import make_config, record_run

    from harvest.stages.download import run_download
    from harvest.state.db import insert_ignore, migrate

    photos = [jpeg_bytes(photo) for photo in list(sample_photos().values())[:3]]
    with serve() as server:
        server.routes.update(
            {
                "/.well-known/tdmrep.json": Response(
                    json.dumps([{"location": "/reserved/", "tdm-reservation": 1}]).encode(),
                    content_type="application/json",
                ),
                "/reserved/a.jpg": Response(photos[0], content_type="image/jpeg"),
                "/free/b.jpg": Response(photos[1], content_type="image/jpeg"),
                "/free/c.jpg": Response(
                    photos[2], content_type="image/jpeg", headers={"X-Robots-Tag": "noindex, noimageai"}
                ),
            }
        )
        cfg = make_config(postgres_url, "manual__list", str(tmp_path / "out"))
        migrate(cfg.database_url)
        with session_scope(cfg.database_url) as session:
            record_run(session, cfg)
            insert_ignore(
                session,
                Candidate,
                [
                    {
                        "run_id": cfg.run_id,
                        "url": f"{server.base}{path}",
                        "page_url": "",
                        "source": "url_list",
                        "shard": 0,
                        "status": "pending",
                        "attempts": 0,
                    }
                    for path in ("/reserved/a.jpg", "/free/b.jpg", "/free/c.jpg")
                ],
                ["run_id", "url"],
            )
        report = run_download(cfg, 0)
        requested = server.paths()
    with session_scope(cfg.database_url) as session:
        rows = dict(session.execute(select(Candidate.url, Candidate.optout)).all())
    assert report.done == 1 and report.skipped == 2
    assert "/reserved/a.jpg" not in requested and requested.count("/.well-known/tdmrep.json") == 1
    assert rows[f"{server.base}/reserved/a.jpg"]["directive"] == "tdm-reservation: 1"
    assert rows[f"{server.base}/free/c.jpg"] == {
        "directive": "noindex",
        "found": "X-Robots-Tag header of the image",
    }
    assert rows[f"{server.base}/free/b.jpg"] is None


def test_licence_markup_on_real_page_shapes():
    """A news page's figure credit names the figure's photo only, not the photo beside it in the
    article; a bare CC badge next to a photo licenses it; JSON-LD ImageObject beats a page-wide link."""
    from harvest.pages.images import extract_page

    fixture = Path(__file__).parent / "fixtures" / "html" / "news_lazy.html"
    items = {
        i.url.rsplit("/", 1)[-1]: i.licence
        for i in extract_page(fixture.read_bytes(), "https://n.example/a").items
    }
    assert items["tiger-cubs.webp"]["author"] == "Photo: City Zoo"
    assert items["keeper-feeding.jpg"] is None
    page = (
        '<html><head><link rel="license" href="https://creativecommons.org/licenses/by-sa/4.0/">'
        '<script type="application/ld+json">{"@context": "https://schema.org", "@graph": [{"@type": "ImageObject",'
        ' "contentUrl": "/ld.jpg", "license": "https://creativecommons.org/publicdomain/zero/1.0/",'
        ' "creator": [{"@type": "Person", "name": "A"}, {"@type": "Person", "name": "B"}]}]}</script></head><body>'
        '<div class="photo"><img src="/badge.jpg" width="640" height="480">'
        '<img src="https://licensebuttons.net/l/by-nd/4.0/88x31.png" width="88" height="31"></div>'
        '<p><img src="/ld.jpg" width="640" height="480"></p><p><img src="/plain.jpg" width="640" height="480"></p>'
        "</body></html>"
    )
    found = {i.url.rsplit("/", 1)[-1]: i.licence for i in extract_page(page, "https://s.example/p").items}
    assert found["badge.jpg"]["license"] == "CC-BY-ND-4.0" and found["badge.jpg"]["scope"] == "image"
    assert found["ld.jpg"]["license"] == "CC0-1.0" and found["ld.jpg"]["author"] == "A, B"
    assert found["plain.jpg"] == {
        "license": "CC-BY-SA-4.0",
        "url": "https://creativecommons.org/licenses/by-sa/4.0/",
        "found": "rel=license of the page",
        "scope": "page",
    }
