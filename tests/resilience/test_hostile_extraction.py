"""Pages built to stall link extraction: a 5 MB style attribute of ``background:url(`` (cubic in a
backtracking regular expression), unclosed ``<meta charset=`` tags (the declared-encoding search),
a placeholder-looking file name of a megabyte, a srcset of hundreds of thousands of renditions, and
galleries whose per-image work grows with the page.

Each page is at most the page cap of a crawl (5 MB). Pattern-bound pages are timed in a child
process of their own (tests/resilience/hostile_pages.py), so a regression fails the test at its time
limit instead of hanging the suite. Pages that are simply a lot of work meet the per-page budget
(HARVEST_EXTRACT_SECONDS, HARVEST_EXTRACT_MAX_IMAGES): the extract stage records them as failed
with the limit they hit and goes on with the other pages.
"""

from __future__ import annotations

import threading

import pytest
from crawl_helpers import crawl_config
from loopback_site import Response, html, serve
from sqlalchemy import select

from harvest.pages.htmltext import html_text
from harvest.pages.images import find_images
from harvest.stages.crawl import run_crawl
from harvest.stages.extract import run_extract
from harvest.state.db import session_scope
from harvest.state.models import Candidate, Page

from . import hostile_pages

#: a 5 MB page of these takes about a second; a backtracking pattern takes hours
LINEAR_LIMIT = 20.0


@pytest.mark.parametrize(
    "name",
    [
        "style_background",
        "style_background_quoted",
        "style_background_properties",
        "meta_charset",
        "placeholder_src",
    ],
)
def test_a_page_cap_of_hostile_markup_is_read_in_linear_time(name):
    size, seconds, outcome = hostile_pages.time_page(
        name, hostile_pages.PAGE_CAP, LINEAR_LIMIT, budgeted=False
    )
    assert seconds is not None, f"{name}: {outcome}"
    assert seconds < LINEAR_LIMIT / 2 and "Error" not in outcome, (name, seconds, outcome)


def test_background_images_of_inline_styles():
    from harvest.pages.css_background import background_urls

    style = (
        "color: red; BACKGROUND-IMAGE: url( 'a.jpg' ), url(b.png); "
        'background: #000 url("data:image/png;base64,iVBOR;x") no-repeat, url(c.webp);'
        "--hero-background: url(d.jpg); border-image: url(not-this.png); "
        "background: url(never-closed.jpg; background: url('unterminated"
    )
    assert background_urls(style) == ["a.jpg", "b.png", "data:image/png;base64,iVBOR;x", "c.webp", "d.jpg"]
    assert background_urls("background:url(" * 1000) == []
    assert background_urls("background: url(a b.jpg)") == []  # an unquoted URL has no space


def test_a_url_with_a_semicolon_stays_whole():
    items = find_images("<div style=\"background:url('/p;v=2.jpg')\"></div>", "http://example.com/")
    assert [item.url for item in items] == ["http://example.com/p;v=2.jpg"]


def test_placeholder_names_are_still_recognised():
    html_page = (
        '<img src="/static/blank.gif"><img src="/img/lazy-grey.png?v=1"><img src="/blank/photo.gif">'
        '<img src="/photos/empty-road.jpg">'
    )
    junk = {item.url.rsplit("/", 1)[-1]: item.junk for item in find_images(html_page, "http://example.com/")}
    assert junk["blank.gif"] and junk["lazy-grey.png?v=1"]
    assert junk["photo.gif"] is None and junk["empty-road.jpg"] is None


def test_declared_encodings_are_still_found():
    assert html_text(b'<html><head><meta charset="windows-1251"></head>\xe0') == "<html><head><meta " + (
        'charset="windows-1251"></head>\u0430'
    )
    page = b"<html><head><META http-equiv=Content-Type content='text/html; charset=koi8-r'>\xc1"
    assert html_text(page).endswith("\u0430")
    assert html_text(b"<?xml version='1.0' encoding='iso-8859-7'?><p>\xe1</p>").endswith("\u03b1</p>")


def _extract_in_time(cfg, seconds: float) -> bool:
    """Run the extract stage in a thread; False if it is still running after ``seconds``."""
    thread = threading.Thread(target=run_extract, args=(cfg,), daemon=True)
    thread.start()
    thread.join(seconds)
    return not thread.is_alive()


def test_pages_over_the_budget_are_recorded_as_failed_and_the_others_extracted(tmp_path):
    """A gallery whose per-image work grows with the page runs into the time budget, a srcset of a
    hundred thousand renditions into the image budget; the ordinary page next to them is extracted."""
    with serve() as server:
        server.routes.update(
            {
                "/": html('<a href="/gallery.html">g</a><a href="/srcset.html">s</a><img src="/ok.jpg">'),
                "/gallery.html": Response(hostile_pages.loose_images(2 * 1024 * 1024)),
                "/srcset.html": Response(hostile_pages.huge_srcset(2 * 1024 * 1024)),
            }
        )
        cfg = crawl_config(f"{server.base}/", tmp_path, HARVEST_EXTRACT_SECONDS="2")
        run_crawl(cfg)
    assert _extract_in_time(cfg, 60), "extraction still running after 60 s"
    with session_scope(cfg.database_url) as session:
        rows = session.execute(select(Page.url, Page.extract_status, Page.error)).all()
        found = set(session.scalars(select(Candidate.url)).all())
    outcome = {url.removeprefix(server.base): (status, error) for url, status, error in rows}
    assert outcome["/"] == ("done", None)
    assert outcome["/gallery.html"][0] == "failed"
    assert outcome["/gallery.html"][1].startswith(
        "extraction stopped, page over its budget: extraction took more than 2s (HARVEST_EXTRACT_SECONDS)"
    )
    assert outcome["/srcset.html"] == (
        "failed",
        "extraction stopped, page over its budget: more than 10000 images named on the page "
        "(HARVEST_EXTRACT_MAX_IMAGES)",
    )
    assert found == {f"{server.base}/ok.jpg"}
