"""A whole harvest of a generated URL list through Airflow on a Celery cluster of two workers (the
cluster of tests/test_distributed.py): wall time per stage, images/s end to end, peak RSS per task,
requests/s seen by each image host.

    python bench/bench_scale.py [--images 100000] [--hosts 2] [--shard-size 2000] [--workdir DIR]

The images are distinct JPEGs (random crops and flips of the installed sample photos, so the
classifier keeps some and near duplicates occur), written before the clock starts and served by
``--hosts`` loopback HTTP servers, each logging when every request arrived. The URL list goes
through the ``url_list`` Param; politeness is lifted as for any single-machine bench (no delay, 8
requests in flight per host), so the figures are the pipeline's, not the politeness budget's. Run it
under ``flock /work/wt/cluster.lock`` on a shared machine: it starts a scheduler, a DAG processor, an
API server and two Celery workers against this machine's Postgres and Redis.
"""

from __future__ import annotations

import argparse
import csv
import json
import random
import shutil
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
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
    daemon_threads = True
    request_queue_size = 256

    def __init__(self, folder: Path):
        self.arrivals: list[float] = []
        self.lock = threading.Lock()
        handler = partial(_Handler, directory=str(folder))
        super().__init__(("127.0.0.1", 0), handler)


class _Handler(SimpleHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:  # noqa: N802 - the http.server interface
        with self.server.lock:
            self.server.arrivals.append(time.time())
        super().do_GET()

    def log_message(self, *_args) -> None:
        pass


def host_rates(arrivals: list[float]) -> tuple[int, float, int]:
    """Requests, mean requests/s over the host's busy window, and the busiest second's count."""
    if not arrivals:
        return 0, 0.0, 0
    window = max(max(arrivals) - min(arrivals), 1e-3)
    per_second = Counter(int(t) for t in arrivals)
    return len(arrivals), len(arrivals) / window, max(per_second.values())


def _seconds(start: datetime | None, end: datetime | None) -> float:
    return (end - start).total_seconds() if start and end else 0.0


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--images", type=int, default=100_000)
    parser.add_argument("--hosts", type=int, default=2)
    parser.add_argument("--shard-size", type=int, default=2000)
    parser.add_argument("--max-shards", type=int, default=32)
    parser.add_argument("--download-threads", type=int, default=16)
    parser.add_argument("--timeout-hours", type=float, default=6.0)
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="bench-scale-"))
    workdir.mkdir(parents=True, exist_ok=True)
    site = workdir / "site"
    generate(site, args.images)

    servers = [LoggingServer(site) for _ in range(args.hosts)]
    for server in servers:
        threading.Thread(target=server.serve_forever, daemon=True).start()
    urls = workdir / "urls.csv"
    with urls.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["url"])
        for n in range(args.images):
            writer.writerow([f"http://127.0.0.1:{servers[n % len(servers)].server_port}/img{n}.jpg"])

    names = {role: f"bench_scale_{role}_{uuid.uuid4().hex[:8]}" for role in ("meta", "state")}
    databases = {role: _create_database(name) for role, name in names.items()}
    env = {
        "AIRFLOW_CONN_HARVEST_DB": databases["state"].replace("+psycopg2", ""),
        "HARVEST_ALLOW_PRIVATE_NETWORKS": "1",
        "HARVEST_HOME": str(workdir / "harvest-home"),
        "HARVEST_LOCAL_ROOTS": str(workdir),
        "HARVEST_SHARD_SIZE": str(args.shard_size),
        "HARVEST_SHARDS": str(args.max_shards),
        "HARVEST_DOWNLOAD_THREADS": str(args.download_threads),
        "HARVEST_HOST_DELAY": "0",
        "HARVEST_HOST_CONCURRENCY": "8",
    }
    broker = f"redis://127.0.0.1:6379/{9 + uuid.uuid4().int % 6}"
    ports = [free_port() for _ in range(3)]
    cluster_dir = workdir / "cluster"
    cluster_dir.mkdir(exist_ok=True)
    try:
        with celery_cluster(cluster_dir, databases["meta"], broker, ports, workers=2, env=env) as cluster:
            cluster.wait_for_dag("image_harvest")
            cluster.cli("dags", "unpause", "image_harvest")
            conf = {"url_list": str(urls), "labels": LABELS, "destination": str(workdir / "dataset")}
            started = time.time()
            run_id = cluster.trigger("image_harvest", conf)
            state = cluster.wait_for_run("image_harvest", run_id, timeout=args.timeout_hours * 3600)
            wall = time.time() - started
            report(cluster, run_id, state, wall, args, servers, databases["state"])
    finally:
        for server in servers:
            server.shutdown()
        for name in names.values():
            _drop_database(name)
        if args.workdir is None:  # a folder of its own: the images, the dataset, the logs
            shutil.rmtree(workdir, ignore_errors=True)


def report(cluster, run_id: str, state: str, wall: float, args, servers, state_url: str) -> None:
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
    engine.dispose()
    elapsed = _seconds(run_start, run_end) or wall
    print(f"\nbench_scale: {args.images} URLs on {args.hosts} loopback hosts, 2 Celery workers, run {state}")
    print(f"shards: {counters.get('extract', {}).get('shards')} (one per {args.shard_size} candidates)")
    print(f"end to end: {elapsed:.0f} s, {args.images / elapsed:.1f} images/s ({images} images stored)\n")
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
        rss = [
            value.get("peak_rss_mb")
            for key, value in counters.items()
            if isinstance(value, dict) and (key == stage or key.startswith(f"{stage}["))
        ]
        rss = [v for v in rss if v]
        done = sum(
            value.get("done", 0)
            for key, value in counters.items()
            if isinstance(value, dict) and (key == stage or key.startswith(f"{stage}["))
        )
        # images through the stage per second of its wall time: downloaded, scored, uploaded
        rate = f"{done / stage_wall:.1f}" if stage in RATED and stage_wall and done else ""
        print(
            f"| {task_id} | {len(mine)} | {dict(sorted(workers.items()))} | {stage_wall:.1f} | {busy:.1f} "
            f"| {rate} | {max(rss) if rss else ''} |"
        )
    print("\n| host | requests | mean requests/s | busiest second |")
    print("|---|---|---|---|")
    for server in servers:
        count, mean, peak = host_rates(server.arrivals)
        print(f"| 127.0.0.1:{server.server_port} | {count} | {mean:.1f} | {peak} |")
    if state != "success":
        print(cluster.logs())
        raise SystemExit(1)


if __name__ == "__main__":
    main()
