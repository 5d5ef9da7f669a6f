"""One politeness budget per host for every worker (harvest.web.host_budget), and adaptive rates
(harvest.web.adaptive), against loopback servers that count what reaches them."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from loopback_site import Response, serve
from PIL import Image
from sqlalchemy import select
from stage_setup import make_config, seed_candidates

from harvest.dataset.stats import domain_stats, format_table
from harvest.state.db import insert_ignore, migrate, session_scope
from harvest.state.models import Candidate, HostBudget, Run, utcnow
from harvest.web.adaptive import Answer, Limits, Pace, adapt
from harvest.web.host_budget import SharedHostGate, budget_engine
from harvest.web.http import FetchError, HttpClient
from harvest.web.politeness import HostGate

ROOT = Path(__file__).resolve().parents[1]


def photos(count: int) -> list[bytes]:
    """Distinct JPEGs cut from a real photograph (scikit-image's sample cat)."""
    from skimage import data

    cat = data.chelsea()
    out = []
    for i in range(count):
        crop = Image.fromarray(cat[i % 60 : 240 + i % 60, (3 * i) % 120 : 300 + (3 * i) % 120])
        buffer = io.BytesIO()
        crop.save(buffer, "JPEG", quality=80)
        out.append(buffer.getvalue())
    return out


@pytest.fixture
def budget_db(postgres_url):
    migrate(postgres_url)
    yield postgres_url
    budget_engine(postgres_url).dispose()


def _client(gate) -> HttpClient:
    return HttpClient("budget-test/1.0", allow_private_networks=True, gate=gate)


def _gates(kind: str, database_url: str | None, limits: Limits):
    if kind == "shared":
        return SharedHostGate(database_url, limits)
    return HostGate(limits.concurrency, limits.delay, limits=limits)


# -- the rules ----------------------------------------------------------------------------------


def test_fast_clean_answers_raise_the_rate_to_the_ceiling_and_no_further():
    limits = Limits(delay=0.5, max_rate=4.0)
    pace = Pace(delay=0.5)
    for _ in range(200):
        adapt(pace, Answer(200, 0.01, image=False), limits)
    assert pace.delay == pytest.approx(0.25)  # 4 requests/s, the ceiling
    assert pace.kind == "site" and pace.peak_rate == pytest.approx(4.0)


def test_a_host_serving_only_images_gets_the_cdn_budget():
    limits = Limits(concurrency=2, delay=0.5, max_rate=4.0, cdn_concurrency=6, cdn_max_rate=20.0)
    pace = Pace(delay=0.5)
    for _ in range(200):
        adapt(pace, Answer(200, 0.01, image=True), limits)
    assert pace.kind == "images" and limits.concurrency_of(pace.kind) == 6
    assert pace.delay == pytest.approx(1 / 20)
    adapt(pace, Answer(200, 0.01, image=False), limits)  # one page: it is a site after all
    assert pace.kind == "site" and limits.concurrency_of(pace.kind) == 2


@pytest.mark.parametrize(
    "answer",
    [Answer(429, 0.01), Answer(503, 0.01), Answer(None, 3.0), Answer(500, 0.01), Answer(200, 9.0)],
    ids=["429", "503", "no answer", "500", "slow"],
)
def test_throttling_errors_and_slow_answers_back_off_at_once(answer):
    limits = Limits(delay=0.5, max_rate=10.0, slow_seconds=5.0)
    pace = Pace(delay=0.2)
    adapt(pace, answer, limits)
    assert pace.delay == pytest.approx(0.4)


def test_a_retry_after_becomes_the_spacing_and_a_hold():
    limits = Limits(delay=0.5)
    pace = Pace(delay=0.2)
    assert adapt(pace, Answer(429, 0.01, retry_after=3.0), limits) == 3.0
    assert pace.delay == 3.0 and pace.throttled == 1


def test_a_crawl_delay_floor_holds_against_fast_answers():
    limits = Limits(delay=0.5, max_rate=50.0)
    pace = Pace(delay=2.0, floor=2.0)
    for _ in range(100):
        adapt(pace, Answer(200, 0.001), limits)
    assert pace.delay == 2.0


# -- on a real host, in one task and through the state DB ------------------------------------


@pytest.mark.parametrize("kind", ["local", "shared"])
def test_rate_goes_up_on_a_fast_host(kind, request):
    database_url = request.getfixturevalue("budget_db") if kind == "shared" else None
    limits = Limits(concurrency=2, delay=0.2, max_rate=40.0)
    gate = _gates(kind, database_url, limits)
    with serve() as server:
        server.fallback = Response(b"<p>fast</p>")
        client = _client(gate)
        for i in range(40):
            client.get(f"{server.base}/p{i}", 10_000)
        starts = [hit.started for hit in server.hits]
    pace = gate.paces()["127.0.0.1"]
    assert pace.rate > 2 * (1 / 0.2) and pace.requests == 40
    # the server saw it: the last requests came closer together than the starting spacing
    last_gaps = [b - a for a, b in zip(starts[-6:], starts[-5:], strict=False)]
    assert max(last_gaps) < 0.2


@pytest.mark.parametrize("kind", ["local", "shared"])
@pytest.mark.parametrize("status", [429, 503])
def test_rate_goes_down_on_a_throttling_host_and_retry_after_is_honoured(kind, status, request):
    database_url = request.getfixturevalue("budget_db") if kind == "shared" else None
    limits = Limits(concurrency=2, delay=0.05, max_rate=40.0)
    gate = _gates(kind, database_url, limits)
    with serve() as server:
        server.routes["/busy"] = Response(
            b"slow down", status=status, content_type="text/plain", headers={"Retry-After": "1"}
        )
        server.fallback = Response(b"<p>ok</p>")
        client = _client(gate)
        for i in range(10):
            client.get(f"{server.base}/p{i}", 10_000)
        before = gate.paces()["127.0.0.1"].rate
        with pytest.raises(FetchError):
            client.get(f"{server.base}/busy", 10_000)  # no retries: the gate holds the host anyway
        client.get(f"{server.base}/after", 10_000)
        busy, after = server.hits[-2:]
    pace = gate.paces()["127.0.0.1"]
    assert (busy.path, after.path) == ("/busy", "/after")
    assert after.started - busy.started >= 0.95  # Retry-After: 1
    assert pace.rate <= 1.0 < before and pace.throttled == 1


def test_the_shared_budget_is_in_the_state_db(budget_db):
    limits = Limits(concurrency=2, delay=0.3, max_rate=40.0)
    with serve() as server:
        server.fallback = Response(b"<p>ok</p>")
        _client(SharedHostGate(budget_db, limits)).get(f"{server.base}/a", 10_000)
        # another task of the deployment (a new gate, as on another worker) waits out the spacing
        # the first one started
        started = time.monotonic()
        _client(SharedHostGate(budget_db, limits)).get(f"{server.base}/b", 10_000)
        waited = time.monotonic() - started
    with session_scope(budget_db) as session:
        row = session.get(HostBudget, "127.0.0.1")
        assert row.requests == 2
    assert waited >= 0.2


# -- two worker processes, one host ---------------------------------------------------------

WORKER = r"""
import json, os, sys, time
from pathlib import Path
from harvest.settings.config import build_config
from harvest.stages.download import run_download

database_url, run_id, shard, ready, go = sys.argv[1:6]
cfg = build_config(
    {"seeds": ["http://127.0.0.1/"], "labels": ["espresso"]}, run_id, env=dict(os.environ),
    database_url=database_url,
)
Path(ready).touch()
while not Path(go).exists():
    time.sleep(0.01)
report = run_download(cfg, int(shard))
print(json.dumps({"done": report.done, "failed": report.failed, "skipped": report.skipped}))
"""


def _two_workers(tmp_path, database_url: str, server, count: int, **env: str) -> list[dict]:
    """Two processes download the two shards of one run at the same time, from ``server``."""
    run_id = f"two-{env.get('HARVEST_HOST_BUDGET', 'auto')}"
    cfg = make_config(database_url, run_id, str(tmp_path / "out"))
    migrate(database_url)
    with session_scope(database_url) as session:
        insert_ignore(
            session,
            Run,
            [{"run_id": run_id, "params": {}, "started_at": utcnow(), "counters": {}, "shards": 2}],
            ["run_id"],
        )
        insert_ignore(
            session,
            Candidate,
            [
                {
                    "run_id": run_id,
                    "url": f"{server.base}/{run_id}/{i}.jpg",
                    "page_url": f"{server.base}/",
                    "source": "img",
                    "shard": i % 2,  # the bucket: shard k of the run's 2 holds buckets b with b % 2 == k
                    "status": "pending",
                    "attempts": 0,
                }
                for i in range(count)
            ],
            ["run_id", "url"],
        )
    assert cfg.run_id == run_id
    environment = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT / "plugins"), str(ROOT)]),
        "HARVEST_STAGING": str(tmp_path / "staging"),
        "HARVEST_DOWNLOAD_THREADS": "8",
        "HARVEST_INSPECT_PROCESSES": "0",
        **env,
    }
    go = tmp_path / f"go-{run_id}"
    workers = []
    for shard in (0, 1):
        ready = tmp_path / f"ready-{run_id}-{shard}"
        command = [sys.executable, "-c", WORKER, database_url, run_id, str(shard), str(ready), str(go)]
        workers.append((ready, subprocess.Popen(command, env=environment, stdout=subprocess.PIPE, text=True)))
    deadline = time.monotonic() + 60
    while not all(ready.exists() for ready, _ in workers) and time.monotonic() < deadline:
        time.sleep(0.05)
    go.touch()  # both start downloading at once
    reports = []
    for _, worker in workers:
        out, _ = worker.communicate(timeout=180)
        assert worker.returncode == 0
        reports.append(json.loads(out.strip().splitlines()[-1]))
    return reports


def _image_site(server, count: int, delay: float) -> None:
    images = photos(count)
    server.routes["/robots.txt"] = Response(b"User-agent: *\nAllow: /\n", content_type="text/plain")
    server.fallback = lambda site, path: Response(
        images[int(path.rsplit("/", 1)[-1].split(".")[0]) % count], content_type="image/jpeg", delay=delay
    )


def test_two_workers_never_exceed_the_hosts_concurrency_together(tmp_path, budget_db):
    count = 40
    with serve() as server:
        _image_site(server, count, delay=0.1)
        reports = _two_workers(
            tmp_path,
            budget_db,
            server,
            count,
            HARVEST_HOST_CONCURRENCY="2",
            HARVEST_CDN_CONCURRENCY="3",  # the host serves only images: it gets the CDN budget
            HARVEST_HOST_DELAY="0",
        )
        peak = max(hit.in_flight for hit in server.hits)
        hits = len([hit for hit in server.hits if hit.path.endswith(".jpg")])
    assert [r["done"] for r in reports] == [count // 2, count // 2]  # both worked, every image stored
    assert hits == count
    assert peak <= 3  # eight threads in each of two processes, never more than three at the host
    stats = {s.domain: s for s in domain_stats(budget_db, "two-auto")}["127.0.0.1"]
    assert stats.kind == "images" and stats.downloaded == count
    assert "req/s" in format_table([stats])


def test_per_task_budgets_would_exceed_it(tmp_path, budget_db):
    """The control: the same two workers, each with its own in-process gate, together go past the
    concurrency each of them keeps (so the counting server can see an excess)."""
    count = 40
    with serve() as server:
        _image_site(server, count, delay=0.15)
        _two_workers(
            tmp_path,
            budget_db,
            server,
            count,
            HARVEST_HOST_CONCURRENCY="2",
            HARVEST_CDN_CONCURRENCY="2",
            HARVEST_HOST_DELAY="0",
            HARVEST_HOST_BUDGET="local",
        )
        peak = max(hit.in_flight for hit in server.hits)
    assert peak > 2


def test_the_budget_is_shared_on_postgres_and_per_task_on_sqlite(tmp_path, budget_db):
    from harvest.web.client import make_gate

    sqlite = make_config(f"sqlite:///{tmp_path / 'state.db'}", "r", str(tmp_path / "out"))
    assert isinstance(make_gate(sqlite), HostGate) and make_gate(sqlite).limits is not None
    assert isinstance(make_gate(make_config(budget_db, "r", str(tmp_path / "out"))), SharedHostGate)
    local = make_config(budget_db, "r", str(tmp_path / "out"), HARVEST_HOST_BUDGET="local")
    assert isinstance(make_gate(local), HostGate)


def test_a_lease_left_by_a_dead_worker_expires(budget_db):
    limits = Limits(concurrency=1, delay=0.0)
    dead = SharedHostGate(budget_db, limits, lease_seconds=0.5)
    lease, _, _ = dead._try_start("gone.example")  # taken, never given back: the worker died
    assert lease is not None
    alive = SharedHostGate(budget_db, limits)
    assert alive._try_start("gone.example")[0] is None  # the one slot is held
    time.sleep(0.6)
    assert alive._try_start("gone.example")[0] is not None


def test_the_leases_of_a_killed_process_on_this_machine_come_free_at_once(budget_db):
    """A task killed mid-request (SIGKILL, OOM) leaves its leases behind; on the same machine its
    process is known to be gone, so the next task does not wait for the leases to expire."""
    import socket
    import subprocess

    limits = Limits(concurrency=2, delay=0.0)
    gone = subprocess.Popen(["true"])
    gone.wait()  # its pid now names no process
    killed = SharedHostGate(budget_db, limits)  # lease_seconds: the default two minutes
    killed.holder = f"{socket.gethostname()}:{gone.pid}"
    assert killed._try_start("killed.example")[0] is not None
    assert killed._try_start("killed.example")[0] is not None
    alive = SharedHostGate(budget_db, limits)
    assert alive._try_start("killed.example")[0] is not None
    # a live holder's leases are kept: the limit of 2 holds again
    assert alive._try_start("killed.example")[0] is not None
    assert alive._try_start("killed.example")[0] is None


def test_a_retry_after_holds_at_most_max_hold():
    pace = Pace(delay=0.5)
    assert adapt(pace, Answer(429, 0.01, retry_after=86_400.0), Limits(max_hold=600.0)) == 600.0
    assert pace.delay == 60.0  # the spacing's own cap


def test_each_task_adds_its_pace_to_the_runs_host_rates(database_url):
    from harvest.state.models import HostRate
    from harvest.web.host_budget import record_rates

    migrate(database_url)
    record_rates(database_url, "r", {"a.example": Pace(delay=0.25, requests=10, throttled=1, peak_rate=8.0)})
    record_rates(database_url, "r", {"a.example": Pace(delay=0.5, requests=5, peak_rate=4.0)})
    with session_scope(database_url) as session:
        row = session.get(HostRate, ("r", "a.example"))
        assert (row.requests, row.throttled, row.rate, row.peak_rate) == (15, 1, 2.0, 8.0)


def test_two_workers_keep_the_hosts_spacing_together(tmp_path, budget_db):
    """The spacing between request starts holds summed over both workers: twenty downloads at
    0.1 s apart take at least ~1.9 s whoever sends them (alone, each worker would space only its own)."""
    count = 20
    with serve() as server:
        _image_site(server, count, delay=0.0)
        _two_workers(
            tmp_path,
            budget_db,
            server,
            count,
            HARVEST_HOST_CONCURRENCY="4",
            HARVEST_CDN_CONCURRENCY="4",
            HARVEST_HOST_DELAY="0.1",
            HARVEST_HOST_MAX_RATE="10",  # the ceiling is the starting rate: fast answers change nothing
            HARVEST_CDN_MAX_RATE="10",
        )
        starts = sorted(hit.started for hit in server.hits if hit.path.endswith(".jpg"))
    assert len(starts) == count
    # measured where the server saw each request arrive: single gaps move with scheduling, the span
    # over all of them cannot shrink much
    assert starts[-1] - starts[0] >= (count - 1) * 0.1 * 0.75


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
def test_a_throttled_host_does_not_hold_back_the_other_hosts(tmp_path, kind, request):
    """A host that answers 429 with a long Retry-After: its candidates step aside (left pending, no
    attempt counted) while a thread would only wait, and every candidate of the fast host is downloaded
    before the throttled host is asked again. Before, its candidates held their threads and chunks,
    and the download stalled behind them once its window of claimed chunks was full (4 x 64)."""
    from harvest.stages.download import run_download

    if kind == "postgres":
        database_url = request.getfixturevalue("budget_db")
    else:
        database_url = f"sqlite:///{tmp_path / 'state.db'}"
    images, fast_count, slow_count = photos(8), 400, 4
    robots = Response(b"User-agent: *\nAllow: /\n", content_type="text/plain")
    with serve("127.0.0.1") as fast, serve("127.0.0.2") as slow:
        for server in (fast, slow):
            server.routes["/robots.txt"] = robots
        fast.fallback = lambda site, path: Response(images[int(path[4:-4]) % 8], content_type="image/jpeg")
        throttled: list[str] = []

        def once_throttled(site, path: str) -> Response:
            if not throttled:
                throttled.append(path)
                return Response(
                    b"slow down", status=429, content_type="text/plain", headers={"Retry-After": "6"}
                )
            return Response(images[int(path[4:-4]) % 8], content_type="image/jpeg")

        slow.fallback = once_throttled
        cfg = make_config(
            database_url,
            f"throttled-{kind}",
            str(tmp_path / "out"),
            HARVEST_STAGING=str(tmp_path / "staging"),
            HARVEST_DOWNLOAD_THREADS="8",
            HARVEST_INSPECT_PROCESSES="0",
            HARVEST_HOST_DELAY="0",
            HARVEST_HOST_CONCURRENCY="8",
        )
        # the throttled host's candidates come first, so they are in the first chunk claimed
        urls = [f"{slow.base}/img{i}.jpg" for i in range(slow_count)]
        urls += [f"{fast.base}/img{i}.jpg" for i in range(fast_count)]
        seed_candidates(cfg, urls)
        report = run_download(cfg, 0, 1)
        fast_starts = [hit.started for hit in fast.hits if hit.path.endswith(".jpg")]
        slow_hits = [hit for hit in slow.hits if hit.path.endswith(".jpg")]
    assert report.done == fast_count + slow_count, report
    throttled_at = next(hit.started for hit in slow_hits if hit.path == throttled[0])
    later = [hit.started - throttled_at for hit in slow_hits if hit.started > throttled_at]
    # the requests sent beside the throttled one arrived with it; none came within its Retry-After
    assert not [t for t in later if 0.5 < t < 6 * 0.95]
    asked_again = throttled_at + min(t for t in later if t >= 0.5)
    assert len(fast_starts) == fast_count and max(fast_starts) < asked_again
    with session_scope(database_url) as session:
        attempts = session.scalars(
            select(Candidate.attempts).where(
                Candidate.run_id == cfg.run_id, Candidate.url.in_(urls[:slow_count])
            )
        ).all()
    assert sorted(attempts) == [1] * slow_count
