"""Site profiles: YAML files that choose the links to follow, the images to take and the fields to
attach, tested on a loopback magazine-cover archive."""

from __future__ import annotations

import pytest
from crawl_helpers import candidates, crawl_config, pages
from loopback_site import html, serve

from harvest.settings.config import ConfigError
from harvest.settings.site_profiles import SiteProfileError, parse_profile, site_profile_for
from harvest.stages.crawl import run_crawl
from harvest.stages.extract import run_extract

PROFILE = """
hosts: [127.0.0.1]
follow: ["a.next"]
images: ["div.cover img"]
fields:
  title: "h1.issue"
  date: "time@datetime"
  missing: "span.nothing-here"
"""


def _issue(n: int, last: int) -> str:
    nxt = f'<a class="next" href="/archive/{n + 1}.html">Next</a>' if n < last else ""
    return f"""<header><img src="/static/masthead.jpg" width="600" height="100" alt="Masthead"></header>
        <aside><img src="/ads/ad-{n}.jpg" alt="ad"> <a href="/about.html">About</a></aside>
        <h1 class="issue">Issue {n}</h1><time datetime="2026-0{n}-01">{n} 2026</time>
        <div class="cover"><img src="/covers/{n}.jpg" alt="Cover {n}"></div>
        <p><a href="/archive/{n}.html?sort=old">same page, sorted</a></p>{nxt}"""


def test_profile_chooses_links_images_and_fields(tmp_path):
    profiles = tmp_path / "profiles"
    profiles.mkdir()
    (profiles / "covers.yaml").write_text(PROFILE)
    with serve() as server:
        for n in range(1, 4):
            server.routes[f"/archive/{n}.html"] = html(_issue(n, 3))
        server.routes["/about.html"] = html("about")
        cfg = crawl_config(
            f"{server.base}/archive/1.html",
            tmp_path,
            {"max_depth": 10},
            HARVEST_SITE_PROFILES_DIR=str(profiles),
        )
        run_crawl(cfg)
        run_extract(cfg)
    assert sorted(pages(cfg, server.base)) == ["/archive/1.html", "/archive/2.html", "/archive/3.html"]
    found = candidates(cfg, server.base)
    taken = {path: row for path, row in found.items() if row.status == "pending"}
    assert sorted(taken) == ["/covers/1.jpg", "/covers/2.jpg", "/covers/3.jpg"]
    assert taken["/covers/2.jpg"].page_fields == {"title": "Issue 2", "date": "2026-02-01"}
    assert taken["/covers/2.jpg"].alt == "Cover 2"
    skipped = {path: row.error for path, row in found.items() if row.status == "skipped"}
    assert skipped == {
        "/static/masthead.jpg": "not selected by site profile covers.yaml",
        **{f"/ads/ad-{n}.jpg": "not selected by site profile covers.yaml" for n in range(1, 4)},
    }


def test_without_a_profile_the_generic_rules_apply(tmp_path):
    with serve() as server:
        for n in range(1, 3):
            server.routes[f"/archive/{n}.html"] = html(_issue(n, 2))
        server.routes["/about.html"] = html("about")
        cfg = crawl_config(f"{server.base}/archive/1.html", tmp_path, {"max_depth": 10})
        run_crawl(cfg)
        run_extract(cfg)
    assert "/about.html" in pages(cfg, server.base)
    assert candidates(cfg, server.base)["/ads/ad-1.jpg"].status == "pending"


def test_a_profile_matches_its_hosts_and_subdomains():
    profile = parse_profile("hosts: [covers.example]\nimages: [img]", "c.yaml")
    assert site_profile_for([profile], "covers.example") is profile
    assert site_profile_for([profile], "www.covers.example") is profile
    assert site_profile_for([profile], "notcovers.example") is None


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("hosts: [a.example]\nfollow: ['a[']", "invalid CSS selector 'a['"),
        ("hosts: [a.example]\njs: true", "unknown keys ['js']"),
        ("hosts: [a.example]\nrender: maybe", "render: expected true, false or auto"),
        ("follow: [a]", "hosts: give at least one host name"),
        (
            "hosts: [a.example]\nfields: {date: ''}",
            "fields.date: expected 'selector' or 'selector@attribute'",
        ),
        ("hosts: [a.example\n", "not valid YAML"),
        ("- just\n- a list", "expected a mapping"),
        ("hosts: [a.example]\nimages: [1, 2]", "images: expected a list of non-empty strings"),
    ],
)
def test_bad_profiles_are_refused_with_file_and_reason(text, message):
    with pytest.raises(SiteProfileError) as info:
        parse_profile(text, "site.yaml")
    assert str(info.value).startswith("site.yaml: ") and message in str(info.value)


def test_a_bad_profile_stops_the_run_before_any_work(tmp_path):
    profiles = tmp_path / "profiles"
    profiles.mkdir()
    (profiles / "good.yaml").write_text("hosts: [a.example]")
    (profiles / "bad.yml").write_text("hosts: [b.example]\nimages: ['div >']")
    with pytest.raises(
        ConfigError, match=r"HARVEST_SITE_PROFILES_DIR: bad.yml: .*invalid CSS selector 'div >'"
    ):
        crawl_config("http://a.example/", tmp_path, HARVEST_SITE_PROFILES_DIR=str(profiles))
    with pytest.raises(ConfigError, match="is not a directory"):
        crawl_config("http://a.example/", tmp_path, HARVEST_SITE_PROFILES_DIR=str(tmp_path / "missing"))


def test_render_without_a_browser_is_refused_before_the_run(tmp_path, monkeypatch):
    import shutil

    profiles = tmp_path / "profiles"
    profiles.mkdir()
    (profiles / "spa.yaml").write_text("hosts: [a.example]\nrender: true")
    monkeypatch.setattr(shutil, "which", lambda name: None)
    monkeypatch.setattr("harvest.settings.config.Path.exists", lambda self: False)
    with pytest.raises(
        ConfigError, match=r"asks for rendering \(render: true or auto\) but no Chromium was found"
    ):
        crawl_config("http://a.example/", tmp_path, HARVEST_SITE_PROFILES_DIR=str(profiles))
