"""Memory of the publish stage's curation against the size of the destination: the verdict over N
published images (per-image rules, then near-duplicate grouping in the state DB) in a fresh process
each, peak RSS above the process's size before curating, and time.

    python bench/bench_curate.py [--sizes 20000,100000] [--database-url URL]

Target: flat memory, the peak at the largest size within 1.5x of the peak at the smallest (the
in-memory grouping held ~0.3 kB per image, ~30 MB per 100,000, on top of every verdict held in dicts).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "plugins"))
sys.path.insert(0, str(REPO / "tests"))

TARGET = 1.5


def _status(field: str) -> float:
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    return 0.0


def fill(database_url: str, count: int, destination: str) -> None:
    """``count`` described images published at ``destination``, a third of them near copies."""
    from harvest.images.sanitize import POLICY
    from harvest.state.db import insert_ignore, migrate, session_scope
    from harvest.state.models import Image, Publication, Run

    migrate(database_url)
    rng = random.Random(count)
    with session_scope(database_url) as session:
        insert_ignore(session, Run, [{"run_id": "bench", "params": {}, "counters": {}}], ["run_id"])
    values: list[int] = []
    for start in range(0, count, 5000):
        images, publications = [], []
        for n in range(start, min(start + 5000, count)):
            if values and n % 3 == 0:
                value = rng.choice(values[-5000:])
                for bit in rng.sample(range(64), rng.randrange(0, 6)):
                    value ^= 1 << bit
            else:
                value = rng.getrandbits(64)
            values.append(value)
            sha = f"{n:064x}"
            side = rng.choice([200, 400, 800])
            images.append(
                {
                    "sha256": sha,
                    "staging": "/bench",
                    "storage_key": f"images/{sha}.jpg",
                    "format": "JPEG",
                    "mime_type": "image/jpeg",
                    "width": side,
                    "height": side,
                    "size_bytes": rng.randrange(20_000, 90_000),
                    "first_url": f"http://bench.example/{n}.jpg",
                    "phash": f"{value:016x}",
                    "entropy": 7.0,
                    "detail": 6.0,
                    "clean_sha256": sha,
                    "clean_key": f"images/{sha}.jpg",
                    "metadata_policy": POLICY,
                }
            )
            publications.append(
                {"destination": destination, "key": f"images/x/{sha}.jpg", "sha256": sha, "run_id": "bench"}
            )
        with session_scope(database_url) as session:
            insert_ignore(session, Image, images, ["sha256"])
            insert_ignore(session, Publication, publications, ["destination", "key"])


def child(database_url: str, destination: str) -> None:
    """Curate in this fresh process; print the peak above the size before, and the time."""
    from harvest.dataset.curate import curate
    from harvest.settings.config import build_config

    cfg = build_config(
        {"seeds": [], "labels": ["tabby"], "destination": destination},
        "bench",
        env={
            **os.environ,
            "HARVEST_LOCAL_ROOTS": "/bench",
            "HARVEST_STAGING": "/bench/staging",
        },  # names only
        database_url=database_url,
        require_seeds=False,
    )
    before = _status("VmRSS")
    started = time.monotonic()
    counts = curate(cfg)
    seconds = time.monotonic() - started
    print(json.dumps({"before": before, "peak": _status("VmHWM"), "seconds": seconds, **counts}))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="20000,100000")
    parser.add_argument("--database-url", default=None)
    parser.add_argument("--child", nargs=2, metavar=("URL", "DESTINATION"))
    args = parser.parse_args()
    if args.child:
        child(*args.child)
        return
    from conftest import _create_database, _drop_database

    rows = []
    for size in (int(s) for s in args.sizes.split(",")):
        name = f"bench_curate_{uuid.uuid4().hex[:8]}"
        url = args.database_url or _create_database(name)
        destination = f"/bench/dest-{size}"
        try:
            fill(url, size, destination)
            out = subprocess.run(  # a fresh process: its peak is the curation's
                [sys.executable, __file__, "--child", url, destination],
                capture_output=True,
                text=True,
            )
            if out.returncode:
                raise SystemExit(f"curating {size} images failed:\n{out.stderr[-3000:]}")
            result = json.loads(out.stdout.strip().splitlines()[-1])
        finally:
            if not args.database_url:
                _drop_database(name)
        rows.append((size, result))
    print("| published images | near duplicates | RSS before MB | peak RSS MB | peak above before MB | s |")
    print("|---|---|---|---|---|---|")
    for size, r in rows:
        print(
            f"| {size} | {r['duplicates']} | {r['before']:.0f} | {r['peak']:.0f} | "
            f"{r['peak'] - r['before']:.1f} | {r['seconds']:.1f} |"
        )
    growth = (rows[-1][1]["peak"] - rows[-1][1]["before"]) / max(
        rows[0][1]["peak"] - rows[0][1]["before"], 1.0
    )
    print(f"\npeak above the process size, largest / smallest: {growth:.2f}x (target <= {TARGET}x)")


if __name__ == "__main__":
    main()
