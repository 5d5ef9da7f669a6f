"""robots.txt on a loopback site: pages and images it disallows are skipped with the reason, the
configured User-Agent picks the group, Crawl-delay raises the host delay, and an unreachable
robots.txt holds the host back (RFC 9309)."""

from __future__ import annotations

import pytest
from crawl_helpers import candidates, crawl_config, pages
from loopback_site import Response, html, jpeg, serve

from harvest.stages.crawl import run_crawl
from harvest.stages.extract import run_extract
from harvest.web.client import make_client
from harvest.web.robots import agent_token

ROBOTS = b"""
User-agent: otherbot
Disallow: /

User-agent: pictbot
Disallow: /private/
Disallow: /img/secret
Crawl-delay: 0.3

User-agent: *
Disallow: /everyone-else/
"""


def _site(server) -> None:
    server.routes.update(
        {
            "/robots.txt": Response(ROBOTS, content_type="text/plain"),
            "/": html(
                '<a href="/open.html">open</a> <a href="/private/a.html">private</a>'
                ' <a href="/everyone-else/b.html">b</a>'
                '<img src="/img/ok.jpg" alt="ok"><img src="/img/secret.jpg" alt="secret">'
            ),
            "/open.html": html("<p>open</p>"),
            "/private/a.html": html("<p>private</p>"),
            "/everyone-else/b.html": html("<p>b</p>"),
            "/img/ok.jpg": Response(jpeg(), content_type="image/jpeg"),
        }
    )


@pytest.mark.parametrize(
    ("user_agent", "token"),
    [("image-harvester/0.1 (+https://x.example)", "image-harvester"), ("pictbot", "pictbot"), ("", "*")],
)
def test_agent_token_is_the_product_name(user_agent, token):
    assert agent_token(user_agent) == token


def test_pages_and_images_disallowed_for_our_agent_are_skipped_with_the_reason(tmp_path):
    with serve() as server:
        _site(server)
        cfg = crawl_config(f"{server.base}/", tmp_path, HARVEST_USER_AGENT="pictbot/2.0 (+https://p.example)")
        run_crawl(cfg)
        run_extract(cfg)
        requested = server.paths()
        agents = {hit.user_agent for hit in server.hits}

    states = pages(cfg, server.base)
    assert states["/"][0] == "done" and states["/open.html"][0] == "done"
    # the * group does not apply to pictbot: its own group is the only one that counts
    assert states["/everyone-else/b.html"][0] == "done"
    status, error = states["/private/a.html"]
    assert status == "skipped" and "disallowed by robots.txt" in error and "'pictbot'" in error
    assert "/private/a.html" not in requested
    found = candidates(cfg, server.base)
    assert found["/img/ok.jpg"].status == "pending"
    assert found["/img/secret.jpg"].status == "skipped"
    assert "disallowed by robots.txt" in found["/img/secret.jpg"].error
    assert "/img/secret.jpg" not in requested
    # one robots.txt fetch per stage (crawl, extract), not one per URL
    assert requested.count("/robots.txt") == 2
    assert agents == {"pictbot/2.0 (+https://p.example)"}


def test_the_default_agent_falls_under_the_star_group(tmp_path):
    with serve() as server:
        _site(server)
        cfg = crawl_config(f"{server.base}/", tmp_path)
        run_crawl(cfg)
    states = pages(cfg, server.base)
    assert states["/private/a.html"][0] == "done"
    assert states["/everyone-else/b.html"][0] == "skipped"


def test_robots_can_be_switched_off(tmp_path):
    with serve() as server:
        _site(server)
        cfg = crawl_config(
            f"{server.base}/", tmp_path, HARVEST_USER_AGENT="otherbot", HARVEST_RESPECT_ROBOTS="0"
        )
        run_crawl(cfg)
        assert "/robots.txt" not in server.paths()
    assert {status for status, _ in pages(cfg, server.base).values()} == {"done"}


def test_everything_disallowed_for_one_agent_stops_at_the_seed(tmp_path):
    with serve() as server:
        _site(server)
        cfg = crawl_config(f"{server.base}/", tmp_path, HARVEST_USER_AGENT="otherbot/1")
        report = run_crawl(cfg)
        assert server.paths() == ["/robots.txt"]
    assert pages(cfg, server.base)["/"][0] == "skipped"
    assert report.skipped == 1


def assert_spaced(starts: list[float], delay: float) -> None:
    """Four requests the client spaced ``delay`` apart, as the server saw them start.

    The server stamps a request when its handler thread runs, which on a loaded machine can lag the send
    by a tenth of a second or so: one gap may look shorter by what the previous request lagged. Each gap
    must still show a pause (without the delay they are a few milliseconds), and the three together
    nearly the full delay each."""
    gaps = [later - earlier for earlier, later in zip(starts, starts[1:], strict=False)]
    assert len(gaps) == 3, gaps
    assert min(gaps) >= delay / 3, gaps
    assert sum(gaps) >= 3 * delay - delay / 2, gaps


def test_crawl_delay_raises_the_host_delay_and_spaces_requests(tmp_path):
    with serve() as server:
        _site(server)
        cfg = crawl_config(f"{server.base}/", tmp_path, HARVEST_USER_AGENT="pictbot", HARVEST_HOST_DELAY="0")
        client = make_client(cfg)
        robots = client.robots
        assert robots.skip_reason(f"{server.base}/open.html") is None
        assert client.gate.delay_of("127.0.0.1") == pytest.approx(0.3)
        for path in ("/open.html", "/", "/everyone-else/b.html"):
            client.get(f"{server.base}{path}", 100_000)
        starts = [hit.started for hit in server.hits]
    assert_spaced(starts, 0.3)


def test_missing_robots_txt_allows_everything(tmp_path):
    with serve() as server:
        server.routes["/"] = html('<a href="/a.html">a</a>')
        server.routes["/a.html"] = html("a")
        cfg = crawl_config(f"{server.base}/", tmp_path)
        run_crawl(cfg)
    assert {status for status, _ in pages(cfg, server.base).values()} == {"done"}


def test_unreachable_robots_txt_holds_the_host_back_and_is_retried_later(tmp_path):
    with serve() as server:
        server.routes["/robots.txt"] = Response(b"down", status=500, content_type="text/plain")
        server.routes["/"] = html("home")
        cfg = crawl_config(f"{server.base}/", tmp_path)
        run_crawl(cfg)
        status, error = pages(cfg, server.base)["/"]
        assert status == "failed" and "robots.txt of 127.0.0.1 unavailable (HTTP 500)" in error
        assert "/" not in server.paths()
        server.routes["/robots.txt"] = Response(b"User-agent: *\nAllow: /\n", content_type="text/plain")
        run_crawl(cfg)  # a re-run retries the page
        assert pages(cfg, server.base)["/"][0] == "done"


def test_a_redirect_into_a_disallowed_path_is_not_followed(tmp_path):
    with serve() as server:
        _site(server)
        server.routes["/moved.html"] = Response(status=301, headers={"Location": "/private/a.html"})
        server.routes["/"] = html('<a href="/moved.html">moved</a>')
        cfg = crawl_config(f"{server.base}/", tmp_path, HARVEST_USER_AGENT="pictbot")
        run_crawl(cfg)
        requested = server.paths()
    status, error = pages(cfg, server.base)["/moved.html"]
    assert status == "skipped"
    assert f"redirected to {server.base}/private/a.html: disallowed by robots.txt" in error
    assert "/private/a.html" not in requested


def test_crawl_delay_holds_in_the_download_stage_too(tmp_path):
    """The download stage's client reads robots.txt before its first request to an image host."""
    from harvest.stages.download import run_download

    with serve() as server:
        server.routes["/robots.txt"] = Response(
            b"User-agent: *\nCrawl-delay: 0.3\n", content_type="text/plain"
        )
        server.routes["/"] = html("".join(f'<img src="/img/{i}.jpg" alt="{i}">' for i in range(4)))
        for i in range(4):
            server.routes[f"/img/{i}.jpg"] = Response(
                jpeg(color=(i * 50, 90, 120)), content_type="image/jpeg"
            )
        cfg = crawl_config(f"{server.base}/", tmp_path, HARVEST_HOST_DELAY="0", HARVEST_SHARDS="1")
        run_crawl(cfg)
        run_extract(cfg)
        server.hits.clear()
        report = run_download(cfg, 0)
        hits = list(server.hits)
    assert report.done == 4
    assert [hit.path for hit in hits][0] == "/robots.txt"
    starts = sorted(hit.started for hit in hits if hit.path.startswith("/img/"))
    assert_spaced(starts, 0.3)
