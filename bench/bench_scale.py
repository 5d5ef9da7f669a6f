"""A whole harvest of a generated URL list through Airflow on a Celery cluster of two workers (the
cluster of tests/test_distributed.py), and each of its stages alone: wall time per stage, images/s
end to end against the slowest stage's own rate, peak RSS per task, and what every image host saw.

    python bench/bench_scale.py [--images 100000] [--hosts 2] [--throttled 64] [--workdir DIR]

The images are distinct JPEGs (random crops and flips of the installed sample photos, so the
classifier keeps some and near duplicates occur), written before the clock starts and served by
``--hosts`` loopback HTTP servers (each on its own address, 127.0.0.n: politeness is per host name),
plus one more that answers 429 with a Retry-After whenever it is
asked more than ``--throttle-rate`` times in a second and serves ``--throttled`` of the URLs. Every
server logs when each request arrived and what it answered. Politeness is the default one: every host
starts at the configured spacing (0.5 s) and the shared budget raises or lowers it.

1. **Each stage alone**: ``harvest stage`` processes against a state DB of their own: prepare and
   extract, then download and classify by two processes taking alternate shards (as two workers of
   one slot each would), then publish in one process. Nothing else runs meanwhile.
2. **End to end**: the URL list through the ``url_list`` Param of ``image_harvest`` on the cluster.

Targets: end-to-end images/s >= 0.7x the slowest stage's own rate; each host's requests in any one
second never above its ceiling (the budget is shared by every task on both workers); a fast host
(answering in <= 10 ms) reaches 5x its starting rate within a minute; after a 429 the host is asked
again only once its Retry-After has passed. It starts a scheduler, a DAG processor, an API server and
two Celery workers against this machine's Postgres and Redis; run nothing else beside it.
"""

from __future__ import annotations

import argparse
import bisect
import csv
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter, deque
from datetime import datetime
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "plugins"))
sys.path.insert(0, str(REPO / "tests"))

from airflow_cluster import celery_cluster  # noqa: E402
from conftest import _create_database, _drop_database, free_port  # noqa: E402
from staged import sample_photos  # noqa: E402

LABELS = ["tabby", "tiger_cat", "Egyptian_cat", "espresso", "daisy"]
#: the stages whose reports count images through them (the others count keepers, runs, pages)
RATED = ("download", "classify", "upload")
TASKS = (
    ("validate", "prepare"),
    ("crawl_seeds", "crawl"),
    ("extract_links", "extract"),
    ("download_images", "download"),
    ("classify_images", "classify"),
    ("select_keepers", "select"),
    ("curate_keepers", "curate"),
    ("upload_images", "upload"),
    ("publish_images", "publish"),
)


def generate(folder: Path, count: int, seed: int = 17) -> None:
    """``count`` distinct JPEGs of 320x240, img{n}.jpg; those already there are kept (each one
    depends only on its number)."""
    from PIL import ImageOps

    folder.mkdir(parents=True, exist_ok=True)
    photos = list(sample_photos().values())
    for n in range(count):
        target = folder / f"img{n}.jpg"
        if target.exists():
            continue
        rng = random.Random(seed * 1_000_003 + n)
        photo = photos[n % len(photos)]
        width, height = photo.size
        left, top = rng.randrange(0, width // 5), rng.randrange(0, height // 5)
        right, bottom = width - rng.randrange(0, width // 5), height - rng.randrange(0, height // 5)
        image = photo.crop((left, top, right, bottom)).resize((320, 240))
        if rng.random() < 0.5:
            image = ImageOps.mirror(image)
        image.convert("RGB").save(target, "JPEG", quality=85)
    print(f"generated {count} JPEGs in {folder}", flush=True)


class LoggingServer(ThreadingHTTPServer):
    """Serves ``folder``; logs (arrival time, status) of every request. With ``throttle`` set, a
    request arriving when ``throttle`` others arrived in the last second is answered 429 with
    ``retry_after`` seconds, as a rate-limited site does."""

    daemon_threads = True
    request_queue_size = 256

    def __init__(self, folder: Path, address: str, throttle: int | None = None, retry_after: int = 2):
        self.log: list[tuple[float, int]] = []
        self.lock = threading.Lock()
        self.throttle, self.retry_after = throttle, retry_after
        self.recent: deque[float] = deque()
        handler = partial(_Handler, directory=str(folder))
        super().__init__((address, 0), handler)

    def admit(self) -> bool:
        """Log the arrival; False when it is to be throttled."""
        now = time.time()
        with self.lock:
            while self.recent and self.recent[0] <= now - 1.0:
                self.recent.popleft()
            ok = self.throttle is None or len(self.recent) < self.throttle
            if ok:
                self.recent.append(now)
            self.log.append((now, 200 if ok else 429))
            return ok

    def reset(self) -> None:
        with self.lock:
            self.log, self.recent = [], deque()


class _Handler(SimpleHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:  # noqa: N802 - the http.server interface
        if not self.server.admit():
            self.send_response(429)
            self.send_header("Retry-After", str(self.server.retry_after))
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        super().do_GET()

    def log_message(self, *_args) -> None:
        pass


def busiest_second(arrivals: list[float]) -> int:
    """The most requests that started within any one second (a sliding window, not clock seconds)."""
    most, first = 0, 0
    for last, t in enumerate(arrivals):
        while arrivals[first] <= t - 1.0:
            first += 1
        most = max(most, last - first + 1)
    return most


def seconds_to_rate(arrivals: list[float], rate: float) -> float | None:
    """Seconds from a host's first request until ``rate`` requests started within one second."""
    for last, t in enumerate(arrivals):
        first = bisect.bisect_right(arrivals, t - 1.0)
        if last - first + 1 >= rate:
            return t - arrivals[0]
    return None


def retry_after_kept(
    log: list[tuple[float, int]], retry_after: float, slack: float = 0.05
) -> tuple[int, int, float]:
    """How many 429s were answered, after how many of them the host's next request came before the
    Retry-After had passed (``slack`` for timer read-outs; a request already sent when the 429 left
    would count too), and the shortest wait from a 429 to the next request."""
    throttled = [t for t, status in log if status == 429]
    times = [t for t, _ in log]
    early, shortest = 0, float("inf")
    for t in throttled:
        following = bisect.bisect_right(times, t)
        if following < len(times):
            wait = times[following] - t
            shortest = min(shortest, wait)
            early += wait < retry_after - slack
    return len(throttled), early, shortest


def host_table(servers: list[LoggingServer], limits, throttled: LoggingServer | None) -> list[str]:
    """What each host saw, against its ceiling and the adaptive targets."""
    start_rate = 1.0 / limits.delay if limits.delay else float("inf")
    lines = [
        "| host | requests | 429s | mean req/s | busiest second | ceiling | to 5x start rate (s) |",
        "|---|---|---|---|---|---|---|",
    ]
    for server in servers:
        log = sorted(server.log)
        arrivals = [t for t, _ in log]
        if not arrivals:
            continue
        window = max(arrivals[-1] - arrivals[0], 1e-3)
        ceiling = limits.cdn_max_rate
        reach = seconds_to_rate(arrivals, 5 * start_rate) if server is not throttled else None
        role = " (throttling)" if server is throttled else ""
        lines.append(
            f"| {server.server_address[0]}:{server.server_port}{role} | {len(arrivals)} | {sum(s == 429 for _, s in log)} "
            f"| {len(arrivals) / window:.1f} | {busiest_second(arrivals)} | {ceiling:.0f} "
            f"| {'' if reach is None else f'{reach:.1f}'} |"
        )
    if throttled is not None:
        count, early, shortest = retry_after_kept(sorted(throttled.log), throttled.retry_after)
        lines.append(
            f"\nthrottling host: {count} answers 429 (Retry-After {throttled.retry_after} s); a request came "
            f"before the Retry-After had passed after {early} of them; shortest wait after a 429 "
            f"{shortest if count else float('nan'):.2f} s"
        )
    return lines


def _seconds(start: datetime | None, end: datetime | None) -> float:
    return (end - start).total_seconds() if start and end else 0.0


def _harvest(command: list[str], env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def _wait(processes: list[subprocess.Popen], what: str) -> None:
    for process in processes:
        _, err = process.communicate()
        if process.returncode:
            raise RuntimeError(f"{what} failed ({process.returncode}):\n{err[-3000:]}")


def stages_alone(workdir: Path, urls: Path, database_url: str, env: dict[str, str], workers: int = 2) -> dict:
    """Each stage by ``harvest stage`` processes, one stage after the other: seconds per stage."""
    env = {
        **os.environ,
        **env,
        "HARVEST_DATABASE_URL": database_url,
        "PYTHONPATH": os.pathsep.join([str(REPO / "plugins"), os.environ.get("PYTHONPATH", "")]),
    }
    run_id = "manual__alone"
    base = [sys.executable, "-m", "harvest.cli", "stage"]
    tail = ["--run-id", run_id, "--progress", "never"]
    params = {"url_list": str(urls), "labels": LABELS, "destination": str(workdir / "dataset-alone")}
    _wait([_harvest([*base, "prepare", *tail, "--params", json.dumps(params)], env)], "prepare")
    seconds: dict[str, float] = {}
    started = time.perf_counter()
    _wait([_harvest([*base, "extract", *tail], env)], "extract")
    seconds["extract"] = time.perf_counter() - started
    from sqlalchemy import create_engine, text

    engine = create_engine(database_url)
    with engine.connect() as conn:
        shards = conn.execute(text("SELECT shards FROM runs WHERE run_id = :r"), {"r": run_id}).scalar_one()
    for stage in ("download", "classify"):
        started = time.perf_counter()
        pool = [
            threading.Thread(target=_shards_in_turn, args=(base, tail, env, stage, range(w, shards, workers)))
            for w in range(workers)
        ]
        for thread in pool:
            thread.start()
        for thread in pool:
            thread.join()
        seconds[stage] = time.perf_counter() - started
        print(f"alone: {stage} {seconds[stage]:.1f} s", flush=True)
    started = time.perf_counter()
    _wait([_harvest([*base, "publish", *tail], env)], "publish")
    seconds["publish"] = time.perf_counter() - started
    with engine.connect() as conn:
        seconds["images"] = conn.execute(text("SELECT count(*) FROM images")).scalar_one()
    engine.dispose()
    return seconds


def _shards_in_turn(base: list[str], tail: list[str], env: dict[str, str], stage: str, shards) -> None:
    """One worker of one slot: the shards given to it, one process each, in turn."""
    for shard in shards:
        _wait([_harvest([*base, stage, *tail, "--shard", str(shard)], env)], f"{stage} shard {shard}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--images", type=int, default=100_000)
    parser.add_argument("--hosts", type=int, default=2, help="fast image hosts")
    parser.add_argument("--throttled", type=int, default=64, help="URLs on the throttling host (0: none)")
    parser.add_argument("--throttle-rate", type=int, default=5, help="requests/s the throttling host admits")
    parser.add_argument("--retry-after", type=int, default=2, help="the throttling host's Retry-After, s")
    parser.add_argument("--shard-size", type=int, default=2000)
    parser.add_argument("--max-shards", type=int, default=32)
    parser.add_argument("--download-threads", type=int, default=16)
    parser.add_argument("--skip-alone", action="store_true", help="only the run through Airflow")
    parser.add_argument("--timeout-hours", type=float, default=6.0)
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()

    from harvest.web.adaptive import Limits

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="bench-scale-"))
    workdir.mkdir(parents=True, exist_ok=True)
    site = workdir / "site"
    generate(site, args.images)

    # one loopback address each: politeness is per host name, so two ports of one address are one host
    servers = [LoggingServer(site, f"127.0.0.{n + 1}") for n in range(args.hosts)]
    throttled = (
        LoggingServer(site, f"127.0.0.{args.hosts + 1}", args.throttle_rate, args.retry_after)
        if args.throttled
        else None
    )
    everyone = servers + ([throttled] if throttled else [])
    for server in everyone:
        threading.Thread(target=server.serve_forever, daemon=True).start()
    urls = workdir / "urls.csv"
    with urls.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["url"])
        for n in range(args.images):
            host = throttled if n >= args.images - args.throttled else servers[n % len(servers)]
            writer.writerow([f"http://{host.server_address[0]}:{host.server_port}/img{n}.jpg"])

    names = {role: f"bench_scale_{role}_{uuid.uuid4().hex[:8]}" for role in ("meta", "state", "alone")}
    databases = {role: _create_database(name) for role, name in names.items()}
    env = {
        "HARVEST_ALLOW_PRIVATE_NETWORKS": "1",
        "HARVEST_HOME": str(workdir / "harvest-home"),
        "HARVEST_LOCAL_ROOTS": str(workdir),
        "HARVEST_SHARD_SIZE": str(args.shard_size),
        "HARVEST_SHARDS": str(args.max_shards),
        "HARVEST_DOWNLOAD_THREADS": str(args.download_threads),
    }
    limits = Limits()  # the defaults: the bench keeps the default politeness
    try:
        alone = None
        if not args.skip_alone:
            alone = stages_alone(workdir, urls, databases["alone"], env)
            print("\nEach stage alone (harvest stage processes, 2 at a time for the mapped stages):\n")
            print("\n".join(host_table(everyone, limits, throttled)), flush=True)
            for server in everyone:
                server.reset()
        env["AIRFLOW_CONN_HARVEST_DB"] = databases["state"].replace("+psycopg2", "")
        broker = f"redis://127.0.0.1:6379/{9 + uuid.uuid4().int % 6}"
        ports = [free_port() for _ in range(3)]
        cluster_dir = workdir / "cluster"
        cluster_dir.mkdir(exist_ok=True)
        with celery_cluster(cluster_dir, databases["meta"], broker, ports, workers=2, env=env) as cluster:
            cluster.wait_for_dag("image_harvest")
            cluster.cli("dags", "unpause", "image_harvest")
            conf = {"url_list": str(urls), "labels": LABELS, "destination": str(workdir / "dataset")}
            started = time.time()
            run_id = cluster.trigger("image_harvest", conf)
            state = cluster.wait_for_run("image_harvest", run_id, timeout=args.timeout_hours * 3600)
            wall = time.time() - started
            report(cluster, run_id, state, wall, args, databases["state"], alone)
            print("\nEnd to end, what each host saw:\n")
            print("\n".join(host_table(everyone, limits, throttled)))
            if state != "success":
                print(cluster.logs())
                raise SystemExit(1)
    finally:
        for server in everyone:
            server.shutdown()
        for name in names.values():
            _drop_database(name)
        if args.workdir is None:  # a folder of its own: the images, the dataset, the logs
            shutil.rmtree(workdir, ignore_errors=True)


def report(cluster, run_id: str, state: str, wall: float, args, state_url: str, alone: dict | None) -> None:
    from sqlalchemy import create_engine, text

    rows = cluster.query(
        "SELECT task_id, map_index, hostname, start_date, end_date, state FROM task_instance "
        "WHERE dag_id = 'image_harvest' AND run_id = :r",
        r=run_id,
    )
    ((run_start, run_end),) = cluster.query(
        "SELECT start_date, end_date FROM dag_run WHERE dag_id = 'image_harvest' AND run_id = :r", r=run_id
    )
    engine = create_engine(state_url)
    with engine.connect() as conn:
        counters = json.loads(
            json.dumps(
                conn.execute(text("SELECT counters FROM runs ORDER BY started_at DESC LIMIT 1")).scalar_one()
            )
        )
        images = conn.execute(text("SELECT count(*) FROM images")).scalar_one()
        not_done = conn.execute(
            text(
                "SELECT status, error, count(*) FROM candidates WHERE status <> 'done' "
                "GROUP BY status, error ORDER BY count(*) DESC LIMIT 5"
            )
        ).all()
    engine.dispose()
    elapsed = _seconds(run_start, run_end) or wall
    rate = args.images / elapsed
    print(
        f"\nbench_scale: {args.images} URLs, {args.hosts} fast hosts + {args.throttled} URLs on a throttling one"
    )
    print(f"2 Celery workers of one slot each, run {state}")
    print(f"shards: {counters.get('extract', {}).get('shards')} (one per {args.shard_size} candidates)")
    print(f"end to end: {elapsed:.0f} s, {rate:.1f} images/s ({images} distinct images stored)")
    for status, error, count in not_done:
        print(f"  {count} candidates {status}: {error}")
    print()
    print(
        "| task | instances | per worker | wall s (first start to last end) | busy s (sum) | images/s | peak RSS MB |"
    )
    print("|---|---|---|---|---|---|---|")
    for task_id, stage in TASKS:
        mine = [r for r in rows if r[0] == task_id]
        if not mine:
            continue
        starts = [r[3] for r in mine if r[3]]
        ends = [r[4] for r in mine if r[4]]
        stage_wall = _seconds(min(starts), max(ends)) if starts and ends else 0.0
        busy = sum(_seconds(r[3], r[4]) for r in mine)
        workers = Counter(r[2] for r in mine)
        mine_counters = [
            value
            for key, value in counters.items()
            if isinstance(value, dict) and (key == stage or key.startswith(f"{stage}["))
        ]
        rss = [v.get("peak_rss_mb") for v in mine_counters if v.get("peak_rss_mb")]
        done = sum(v.get("done", 0) for v in mine_counters)
        # images through the stage per second of its wall time: downloaded, scored, uploaded
        through = f"{done / stage_wall:.1f}" if stage in RATED and stage_wall and done else ""
        print(
            f"| {task_id} | {len(mine)} | {dict(sorted(workers.items()))} | {stage_wall:.1f} | {busy:.1f} "
            f"| {through} | {max(rss) if rss else ''} |"
        )
    if alone:
        print("\n| stage alone | wall s | images/s (URLs / wall) |")
        print("|---|---|---|")
        rates = {}
        for stage in ("extract", "download", "classify", "publish"):
            rates[stage] = args.images / alone[stage]
            print(f"| {stage} | {alone[stage]:.1f} | {rates[stage]:.1f} |")
        slowest = min(rates, key=rates.get)
        print(
            f"\nslowest stage alone: {slowest}, {rates[slowest]:.1f} images/s; end to end {rate:.1f} images/s "
            f"= {rate / rates[slowest]:.2f}x (target >= 0.7x); sum of the stages alone "
            f"{sum(alone[s] for s in rates):.0f} s against {elapsed:.0f} s end to end"
        )


if __name__ == "__main__":
    main()
