"""A robots.txt can ask for any Crawl-delay: ``Crawl-delay: 86400`` would space a host's requests a
day apart and hold every thread of the stage that waits for that host. Delays over the cap
(HARVEST_MAX_CRAWL_DELAY, 30 s) are not waited for: the host is deferred, its pages and images fail
at once with the reason, and a re-run retries them. Time queued for a host's politeness slot counts
toward a request's total deadline, so a request that cannot start in time fails with a timeout
naming its URL instead of waiting.
"""

from __future__ import annotations

import threading
import time

import pytest
from crawl_helpers import candidates, crawl_config, pages
from loopback_site import Response, html, jpeg, serve

from harvest.stages.crawl import run_crawl
from harvest.stages.download import run_download
from harvest.stages.extract import run_extract
from harvest.web.client import make_client
from harvest.web.http import FetchError

DEFERRED = (
    "host {host} deferred to a later run: robots.txt crawl-delay 86400 s exceeds cap 30 s "
    "(HARVEST_MAX_CRAWL_DELAY)"
)


def robots(delay: str) -> Response:
    return Response(f"User-agent: *\nCrawl-delay: {delay}\n".encode(), content_type="text/plain")


def finishes(work, seconds: float) -> bool:
    """Run ``work`` in a thread; False if it is still running after ``seconds`` (a stall)."""
    thread = threading.Thread(target=work, daemon=True)
    thread.start()
    thread.join(seconds)
    return not thread.is_alive()


def test_a_crawl_delay_over_the_cap_defers_the_host_and_a_rerun_retries_its_pages(tmp_path):
    with serve() as server:
        server.routes.update(
            {
                "/robots.txt": robots("86400"),
                "/": html('<a href="/a.html">a</a><a href="/b.html">b</a>'),
                "/a.html": html("a"),
                "/b.html": html("b"),
            }
        )
        cfg = crawl_config(f"{server.base}/", tmp_path)
        assert finishes(lambda: run_crawl(cfg), 30), "the crawl waits for the Crawl-delay"
        assert pages(cfg, server.base) == {
            "/": ("failed", f"{server.base}/: " + DEFERRED.format(host="127.0.0.1"))
        }
        assert server.paths() == ["/robots.txt"]

        server.routes["/robots.txt"] = robots("0.05")  # the site asks for something sensible again
        assert finishes(lambda: run_crawl(cfg), 30)
        assert {path: status for path, (status, _) in pages(cfg, server.base).items()} == {
            "/": "done",
            "/a.html": "done",
            "/b.html": "done",
        }


def test_images_of_a_deferred_host_fail_with_the_reason_and_are_retried_by_a_rerun(tmp_path):
    with serve() as site, serve("127.0.0.2") as images:
        images.routes["/robots.txt"] = robots("86400")
        for n in range(3):
            images.routes[f"/{n}.jpg"] = Response(jpeg(color=(n * 60, 80, 90)), content_type="image/jpeg")
        site.routes["/"] = html("".join(f'<img src="{images.base}/{n}.jpg" alt="{n}">' for n in range(3)))
        cfg = crawl_config(f"{site.base}/", tmp_path, HARVEST_SHARDS="1")
        run_crawl(cfg)
        run_extract(cfg)
        assert finishes(lambda: run_download(cfg, 0), 30), "the download waits for the Crawl-delay"
        rows = candidates(cfg, images.base)
        assert {path: (row.status, row.error) for path, row in rows.items()} == {
            f"/{n}.jpg": ("failed", f"{images.base}/{n}.jpg: " + DEFERRED.format(host="127.0.0.2"))
            for n in range(3)
        }
        assert [path for path in images.paths() if path.endswith(".jpg")] == []

        images.routes["/robots.txt"] = robots("0.05")
        assert finishes(lambda: run_download(cfg, 0), 30)
        assert {row.status for row in candidates(cfg, images.base).values()} == {"done"}


def test_a_request_that_cannot_get_a_slot_before_its_deadline_fails_naming_its_url(tmp_path):
    """5 s between requests to a host (a Crawl-delay raises the same delay) and a total deadline of
    1 s: the second request would start 5 s after the first, past its deadline, so it fails at once
    instead of waiting."""
    with serve() as server:
        server.routes.update({"/a.html": html("a"), "/b.html": html("b")})
        cfg = crawl_config(f"{server.base}/", tmp_path, HARVEST_HOST_DELAY="5", HARVEST_RESPECT_ROBOTS="0")
        client = make_client(cfg.with_(total_timeout=1.0))
        client.get(f"{server.base}/a.html", 100_000)
        started = time.monotonic()
        with pytest.raises(FetchError) as late:
            client.get(f"{server.base}/b.html", 100_000)
        waited = time.monotonic() - started
        requested = server.paths()
    assert waited < 1.5
    assert late.value.url == f"{server.base}/b.html" and late.value.transient
    assert str(late.value).startswith(f"{server.base}/b.html: timed out: waited ")
    assert "request slot at 127.0.0.1" in late.value.reason and "5s between requests" in late.value.reason
    assert "the total deadline of 1.0s counts time queued" in late.value.reason
    assert requested == ["/a.html"]


def test_time_queued_behind_a_slow_request_counts_toward_the_deadline(tmp_path):
    """One slot per host; the first request holds it for 0.8 s. The second, asked for right after,
    may not take 0.8 s of queue plus 0.8 s of its own: its deadline is 1 s from when it was asked.
    That failure is not the host's, so it does not count toward pausing the host."""
    with serve() as server:
        server.routes.update(
            {"/slow-a.html": Response(b"a", delay=0.8), "/slow-b.html": Response(b"b", delay=0.8)}
        )
        cfg = crawl_config(
            f"{server.base}/",
            tmp_path,
            HARVEST_HOST_DELAY="0",
            HARVEST_HOST_CONCURRENCY="1",
            HARVEST_RESPECT_ROBOTS="0",
            HARVEST_HOST_FAILURE_LIMIT="1",
        ).with_(total_timeout=1.0)
        client = make_client(cfg)
        first = threading.Thread(target=client.get, args=(f"{server.base}/slow-a.html", 1000), daemon=True)
        first.start()
        time.sleep(0.1)
        started = time.monotonic()
        with pytest.raises(FetchError) as late:
            client.get(f"{server.base}/slow-b.html", 1000)
        elapsed = time.monotonic() - started
        first.join(5)
    assert late.value.url == f"{server.base}/slow-b.html"
    assert "timed out" in late.value.reason or "exceeded total deadline of 1.0s" in late.value.reason
    assert elapsed < 1.4, elapsed
    # cut short by its time in the queue, not by the server: the host is not paused for it
    assert client.gate.paused_hosts() == {}


def test_a_retry_after_within_the_limit_is_still_waited_for_beyond_the_deadline(tmp_path):
    """A Retry-After the client agrees to wait (under max_retry_after) does not eat the deadline of
    the retried request."""
    answers = iter([Response(b"busy", status=429, headers={"Retry-After": "2"}, content_type="text/plain")])

    def busy_once(site, path):
        return next(answers, None) or html("ok")

    with serve() as server:
        server.routes["/busy.html"] = busy_once
        cfg = crawl_config(f"{server.base}/", tmp_path, HARVEST_HOST_DELAY="0", HARVEST_RESPECT_ROBOTS="0")
        client = make_client(cfg.with_(total_timeout=1.0))
        result = client.get(f"{server.base}/busy.html", 10_000)
    assert result.status == 200 and server.paths() == ["/busy.html", "/busy.html"]
