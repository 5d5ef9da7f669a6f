"""The crawl's scope on loopback sites: off-site links, allow/deny patterns, nofollow, and traps
(a calendar with endless months, session ids, endless paths) staying bounded."""

from __future__ import annotations

import re

import pytest
from crawl_helpers import crawl_config, pages
from loopback_site import Response, html, serve

from harvest.settings.config import ConfigError
from harvest.stages.crawl import page_links, run_crawl


def _calendar(server, path: str) -> Response:
    """Every month links to the next and previous month, forever, plus a day view per month."""
    match = re.search(r"month=(-?\d+)", path)
    month = int(match.group(1)) if match else 0
    links = (
        f'<a href="/calendar?month={month + 1}">next</a> <a href="/calendar?month={month - 1}">prev</a>'
        f' <a href="/calendar/day?month={month}&day=1">day</a>'
    )
    return html(links)


def _endless_path(server, path: str) -> Response:
    return html(f'<a href="{path.rstrip("/")}/more/">deeper</a>')


def test_a_calendar_trap_stays_bounded(tmp_path):
    with serve() as server:
        server.routes["/"] = html('<a href="/calendar?month=0">calendar</a> <a href="/about.html">about</a>')
        server.routes["/about.html"] = html("about")
        server.routes["/calendar"] = _calendar
        server.routes["/calendar/day"] = _calendar
        cfg = crawl_config(
            f"{server.base}/",
            tmp_path,
            {"max_depth": 1000, "max_pages": 10_000},
            HARVEST_MAX_QUERY_VARIANTS="5",
        )
        report = run_crawl(cfg)
    states = pages(cfg, server.base)
    months = [path for path in states if path.startswith("/calendar?")]
    days = [path for path in states if path.startswith("/calendar/day?")]
    assert len(months) == 5 and len(days) == 5
    assert states["/about.html"][0] == "done"
    assert len(states) == 12
    assert report.extra["links_refused"]["too many query variants of one path"] > 0


def test_an_endless_path_trap_stops_at_the_host_page_budget(tmp_path):
    with serve() as server:
        server.routes["/"] = html('<a href="/x/">x</a>')
        server.fallback = _endless_path
        cfg = crawl_config(
            f"{server.base}/",
            tmp_path,
            {"max_depth": 1000, "max_pages": 10_000},
            HARVEST_MAX_PAGES_PER_HOST="15",
        )
        report = run_crawl(cfg)
        requested = len(server.paths())
    assert len(pages(cfg, server.base)) == 15
    assert requested == 15 + 1  # and robots.txt
    assert report.extra["links_refused"] == {"host page budget of 15 reached": 1}


def test_session_ids_do_not_multiply_pages(tmp_path):
    with serve() as server:
        server.routes["/"] = html(
            '<a href="/a.html;jsessionid=ABC123">a</a> <a href="/a.html?PHPSESSID=1">a</a>'
            ' <a href="/a.html?sid=2&amp;utm_source=x">a</a> <a href="/a.html#top">a</a>'
        )
        server.routes["/a.html"] = html("a")
        cfg = crawl_config(f"{server.base}/", tmp_path)
        run_crawl(cfg)
    assert sorted(pages(cfg, server.base)) == ["/", "/a.html"]


def test_off_site_links_are_not_followed_and_counted(tmp_path):
    with serve() as server:
        server.routes["/"] = html('<a href="http://elsewhere.example.org/">out</a> <a href="/in.html">in</a>')
        server.routes["/in.html"] = html("in")
        cfg = crawl_config(f"{server.base}/", tmp_path)
        report = run_crawl(cfg)
    assert sorted(pages(cfg, server.base)) == ["/", "/in.html"]
    assert report.extra["links_refused"] == {"off-site link": 1}


def test_allow_and_deny_patterns_choose_the_pages(tmp_path):
    with serve() as server:
        server.routes["/"] = html(
            '<a href="/blog/1.html">1</a> <a href="/blog/2.html">2</a> <a href="/blog/tag/cats">tag</a>'
            ' <a href="/shop/item">shop</a>'
        )
        server.fallback = html("page")
        cfg = crawl_config(f"{server.base}/", tmp_path, {"url_allow": [r"/blog/"], "url_deny": [r"/tag/"]})
        report = run_crawl(cfg)
    assert sorted(pages(cfg, server.base)) == ["/", "/blog/1.html", "/blog/2.html"]
    assert report.extra["links_refused"] == {
        "matches a url_deny pattern": 1,
        "matches no url_allow pattern": 1,
    }


def test_bad_patterns_are_refused_with_the_pattern(tmp_path):
    with pytest.raises(ConfigError, match=r"url_deny: '\(unclosed' is not a valid regular expression"):
        crawl_config("http://example.com/", tmp_path, {"url_deny": ["(unclosed"]})


NOFOLLOW = b'<a href="/a">a</a> <a rel="nofollow noopener" href="/b">b</a> <a rel="NoFollow" href="/c">c</a>'


def test_nofollow_links_are_left_out_when_honoured():
    assert page_links(NOFOLLOW, "http://s.example/", honour_nofollow=True) == ["http://s.example/a"]
    assert len(page_links(NOFOLLOW, "http://s.example/", honour_nofollow=False)) == 3


def test_nofollow_is_honoured_by_default_and_can_be_switched_off(tmp_path):
    with serve() as server:
        server.routes["/"] = Response(NOFOLLOW)
        server.fallback = html("x")
        honoured = crawl_config(f"{server.base}/", tmp_path / "a")
        run_crawl(honoured)
        followed = crawl_config(f"{server.base}/", tmp_path / "b", HARVEST_FOLLOW_NOFOLLOW="1")
        run_crawl(followed)
    assert sorted(pages(honoured, server.base)) == ["/", "/a"]
    assert sorted(pages(followed, server.base)) == ["/", "/a", "/b", "/c"]


def test_a_resumed_crawl_keeps_counting_the_host_budget(tmp_path):
    with serve() as server:
        server.routes["/"] = html('<a href="/x/">x</a>')
        server.fallback = _endless_path
        cfg = crawl_config(
            f"{server.base}/",
            tmp_path,
            {"max_depth": 1000, "max_pages": 10_000},
            HARVEST_MAX_PAGES_PER_HOST="6",
        )
        run_crawl(cfg)
        run_crawl(cfg)  # nothing new: the budget is counted from the pages already recorded
    assert len(pages(cfg, server.base)) == 6
