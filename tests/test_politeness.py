"""Per-host politeness on a loopback server: concurrency cap and delay shared by a task's threads,
429/503 with Retry-After in both forms, exponential back-off with jitter, and a failing host paused."""

from __future__ import annotations

import random
import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone
from email.utils import format_datetime

import pytest
from crawl_helpers import crawl_config, pages
from loopback_site import Response, html, serve

from harvest.stages.crawl import run_crawl
from harvest.web.http import FetchError, HttpClient
from harvest.web.politeness import HostGate, HostPaused, backoff_delay, parse_retry_after


def client(gate: HostGate | None = None, **kwargs) -> HttpClient:
    return HttpClient("polite-test/1.0", allow_private_networks=True, gate=gate, **kwargs)


def test_retry_after_in_seconds():
    assert parse_retry_after("7") == 7.0
    assert parse_retry_after(" 0 ") == 0.0


def test_retry_after_as_an_http_date():
    now = datetime(2026, 11, 23, 12, 0, 0, tzinfo=timezone.utc)
    later = format_datetime(now + timedelta(seconds=90), usegmt=True)
    assert parse_retry_after(later, now=now) == 90.0
    earlier = format_datetime(now - timedelta(seconds=90), usegmt=True)
    assert parse_retry_after(earlier, now=now) == 0.0


@pytest.mark.parametrize("value", [None, "", "soon", "-5", "1.5e3"])
def test_unreadable_retry_after_is_none(value):
    assert parse_retry_after(value) is None


def test_backoff_grows_exponentially_with_jitter_and_a_cap():
    rng = random.Random(4)
    for attempt in range(8):
        ceiling = min(30.0, 2.0**attempt)
        samples = [backoff_delay(attempt, base=1.0, cap=30.0, rng=rng) for _ in range(50)]
        assert all(ceiling / 2 <= s <= ceiling for s in samples)
        assert len(set(samples)) > 1  # jittered, so threads do not retry in lockstep


def test_concurrency_cap_is_shared_by_all_threads():
    with serve() as server:
        server.fallback = Response(b"ok", content_type="text/plain", delay=0.15)
        gate = HostGate(concurrency=2, delay=0.0)
        shared = client(gate)
        with ThreadPoolExecutor(max_workers=8) as pool:
            list(pool.map(lambda i: shared.get(f"{server.base}/p{i}", 1000), range(12)))
        peak = max(hit.in_flight for hit in server.hits)
    assert len(server.hits) == 12
    assert peak == 2  # eight threads, never more than two requests in flight at the host


def test_minimum_delay_spaces_request_starts():
    with serve() as server:
        server.fallback = Response(b"ok", content_type="text/plain")
        shared = client(HostGate(concurrency=4, delay=0.2))
        with ThreadPoolExecutor(max_workers=4) as pool:
            list(pool.map(lambda i: shared.get(f"{server.base}/p{i}", 1000), range(5)))
        starts = sorted(hit.started for hit in server.hits)
    # Measured where the server saw each request start, so thread scheduling on a loaded machine can move
    # single starts; over the five requests the gate must still have spread them across four delays
    # (without it, four threads would start within milliseconds of each other).
    assert starts[-1] - starts[0] >= 4 * 0.2 * 0.75


def _throttled_once(header: str):
    calls = {"n": 0}

    def route(server, path):
        calls["n"] += 1
        if calls["n"] == 1:
            return Response(
                b"slow down", status=429, content_type="text/plain", headers={"Retry-After": header()}
            )
        return Response(b"finally", content_type="text/plain")

    return route


@pytest.mark.parametrize(
    "header",
    [
        lambda: "1",
        lambda: format_datetime(datetime.now(timezone.utc) + timedelta(seconds=2), usegmt=True),
    ],
    ids=["seconds", "http-date"],
)
def test_429_is_retried_after_the_time_the_server_asked_for(header):
    with serve() as server:
        server.routes["/limited"] = _throttled_once(header)
        result = client(retry_attempts=2).get(f"{server.base}/limited", 1000)
        first, second = server.hits
    assert result.body == b"finally"
    # an HTTP date has one-second resolution, so at least ~1 s remains of a date 2 s ahead
    assert second.started - first.started >= 0.95


def test_503_without_retry_after_backs_off_then_gives_up_with_the_reason():
    with serve() as server:
        server.routes["/down"] = Response(b"down", status=503, content_type="text/plain")
        with pytest.raises(FetchError) as info:
            client(retry_attempts=3, backoff_base=0.05).get(f"{server.base}/down", 1000)
        starts = [hit.started for hit in server.hits]
    assert len(starts) == 4  # first try + three retries
    assert (info.value.reason, info.value.transient) == ("HTTP 503", True)
    gaps = [b - a for a, b in zip(starts, starts[1:], strict=False)]
    assert gaps[2] >= 0.05 * 4 / 2 * 0.95  # third back-off is at least half of base * 2**2


def test_a_retry_after_beyond_the_limit_is_not_waited_for():
    with serve() as server:
        server.routes["/later"] = Response(
            b"", status=429, content_type="text/plain", headers={"Retry-After": "86400"}
        )
        with pytest.raises(FetchError) as info:
            client(retry_attempts=3, max_retry_after=60).get(f"{server.base}/later", 1000)
        assert len(server.hits) == 1
    assert "asking to retry after 86400s (more than 60s)" in info.value.reason
    assert info.value.transient is True


def test_gate_pauses_a_host_after_consecutive_failures_and_resets_on_success():
    gate = HostGate(concurrency=1, delay=0.0, failure_limit=3)
    gate.failed("a.example", "timed out")
    gate.failed("a.example", "timed out")
    gate.succeeded("a.example")
    gate.failed("a.example", "HTTP 500")
    gate.failed("a.example", "HTTP 500")
    assert gate.paused_hosts() == {}
    gate.failed("a.example", "HTTP 502")
    assert "after 3 consecutive failures (last: HTTP 502)" in gate.paused_hosts()["a.example"]
    with pytest.raises(HostPaused), gate.slot("a.example"):
        pass
    with gate.slot("b.example"):  # other hosts are unaffected
        pass


def test_a_host_that_keeps_failing_is_paused_for_the_rest_of_the_crawl(tmp_path):
    links = "".join(f'<a href="/broken/{i}.html">{i}</a>' for i in range(12))
    with serve() as server:
        server.routes["/"] = html(links)
        server.routes["/robots.txt"] = Response(b"", status=404, content_type="text/plain")
        server.fallback = Response(b"boom", status=500, content_type="text/plain")
        cfg = crawl_config(f"{server.base}/", tmp_path, HARVEST_HOST_FAILURE_LIMIT="3")
        report = run_crawl(cfg)
        broken_requests = [p for p in server.paths() if p.startswith("/broken/")]
    states = pages(cfg, server.base)
    failed = {path: error for path, (status, error) in states.items() if status == "failed"}
    assert len(failed) == 12
    assert len(broken_requests) < 12 and len(broken_requests) >= 3
    paused = [error for error in failed.values() if "paused for the rest of the run" in error]
    assert len(paused) == 12 - len(broken_requests)
    assert list(report.extra["paused_hosts"]) == ["127.0.0.1"]


def test_threads_waiting_on_a_held_host_all_wait():
    gate = HostGate(concurrency=4, delay=0.0)
    gate.hold("h.example", 0.3)
    entered: list[float] = []
    lock = threading.Lock()
    import time

    start = time.monotonic()

    def enter():
        with gate.slot("h.example"), lock:
            entered.append(time.monotonic() - start)

    threads = [threading.Thread(target=enter) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(entered) == 3 and min(entered) >= 0.3 * 0.95
