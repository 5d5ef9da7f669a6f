"""Download stage throughput against a bare threaded GET loop over the same 2,000 local images, plus
the per-image cost of inspection (decode, perceptual hash, entropy, EXIF) and of near-duplicate
lookups, and the near-duplicate index at 100k synthetic hashes.

    python bench/bench_download.py [--images 2000] [--rounds 5] [--synthetic 100000]
        [--database-url URL] [--workdir DIR]

Target: the stage reaches at least 0.7x the bare loop's images/s while doing all of its checks.
"""

from __future__ import annotations

import argparse
import io
import os
import random
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import requests
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "plugins"))

from harvest.images.imagecheck import inspect_image  # noqa: E402
from harvest.images.inspectors import inspection_processes  # noqa: E402
from harvest.images.neardup import HashIndex, parse  # noqa: E402
from harvest.images.perceptual import HASH_SIDE  # noqa: E402
from harvest.settings.config import build_config  # noqa: E402
from harvest.stages.download import run_download  # noqa: E402
from harvest.state.db import insert_ignore, migrate, session_scope  # noqa: E402
from harvest.state.models import Candidate, Run, utcnow  # noqa: E402

TARGET = 0.7


def cpu_seconds() -> float:
    """CPU time of this process and of its children that have been waited for (the stage's
    inspecting processes; the file server is waited for only at the end): the machine may be shared,
    and CPU time says what the work costs whatever else runs beside it."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def file_write_cost(folder: Path, count: int = 200, size: int = 66_000) -> float:
    """CPU seconds to create one new file of a typical image's size in a new folder under ``folder``,
    as the stage does per image and the bare loop never does. The files stay until the bench ends:
    deleting them would make the very cost measured here (see wait_for_calm_disk)."""
    folder.mkdir(parents=True, exist_ok=True)
    probe = Path(tempfile.mkdtemp(prefix="probe-", dir=folder))
    data = os.urandom(size)
    started = time.process_time()
    for i in range(count):
        fd = os.open(probe / str(i), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        os.write(fd, data)
        os.close(fd)
    return (time.process_time() - started) / count


#: CPU seconds a new 66 kB file costs on a calm disk here (0.03-0.15 ms measured)
CALM_WRITE = 0.15e-3


def wait_for_calm_disk(folder: Path, limit: float = 120.0, every: float = 5.0) -> tuple[float, float]:
    """Wait, at most ``limit`` seconds, until creating a file costs what it does on a calm disk;
    the seconds waited and the last cost.

    ext4 without a journal (the development machine's disk) does not reuse an inode freed in the last
    minute or so: allocating one walks past each of them with a lookup. Right after a job deleted
    thousands of files (an earlier bench's clean-up, `make bench`'s previous script, the test
    suite), every file the stage creates pays that walk: after 20,000 deletions a new 66 kB file cost
    1.2 ms of CPU instead of 0.05 and the stage ran at 0.56x instead of 0.75x; 75 s later both were
    back. The bare loop creates no file, so such a round measures the disk, not the stage."""
    started = time.monotonic()
    while True:
        cost = file_write_cost(folder)
        waited = time.monotonic() - started
        if cost < CALM_WRITE or waited >= limit:
            return waited, cost
        time.sleep(every)


def make_images(root: Path, count: int) -> tuple[list[str], int]:
    """Distinct photo-like JPEGs of 480x360 to 800x600: crops of sample photos with their own noise."""
    from skimage import data

    sources = [data.chelsea(), data.coffee(), data.astronaut(), data.rocket()]
    rng = np.random.default_rng(1)
    names, total = [], 0
    for i in range(count):
        source = sources[i % len(sources)]
        h, w = source.shape[:2]
        ch, cw = int(rng.integers(h // 2, h)), int(rng.integers(w // 2, w))
        y, x = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
        crop = source[y : y + ch, x : x + cw].astype(np.int16) + rng.integers(-12, 13, (ch, cw, 3))
        image = Image.fromarray(np.clip(crop, 0, 255).astype(np.uint8))
        width = int(rng.integers(480, 801))
        image = image.resize((width, width * 3 // 4))
        buffer = io.BytesIO()
        image.save(buffer, "JPEG", quality=85)
        name = f"img/{i:05d}.jpg"
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(buffer.getvalue())
        names.append(name)
        total += len(buffer.getvalue())
    return names, total


@contextmanager
def serve(root: Path) -> Iterator[str]:
    """A static file server in its own process, as a remote site would be: it shares the CPU with
    the client, but not the client's interpreter lock."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    # `python -m http.server` as is, but listening with a backlog of 128 instead of socketserver's 5:
    # with 5, a burst of connects while the server waits for the CPU overflows the queue and the
    # kernel drops SYNs, which costs the client a 1 s retransmit each (no real site listens with 5)
    launch = (
        "import runpy, socketserver, sys; socketserver.TCPServer.request_queue_size = 128; "
        "sys.argv[0] = 'http.server'; runpy.run_module('http.server', run_name='__main__', alter_sys=True)"
    )
    server = subprocess.Popen(
        [sys.executable, "-c", launch, str(port), "--bind", "127.0.0.1", "--directory", str(root)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.05)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.terminate()
        server.wait(timeout=10)


def bare_loop(urls: list[str], threads: int) -> tuple[float, float]:
    """Seconds and CPU seconds for the GET loop over ``urls``."""
    local = threading.local()

    def get(url: str) -> int:
        session = getattr(local, "session", None)
        if session is None:
            session = local.session = requests.Session()
        response = session.get(url, timeout=30)
        response.raise_for_status()
        return len(response.content)

    started, cpu = time.perf_counter(), cpu_seconds()
    with ThreadPoolExecutor(max_workers=threads) as pool:
        sizes = list(pool.map(get, urls))
    assert all(sizes)
    return time.perf_counter() - started, cpu_seconds() - cpu


def stage(
    urls: list[str], database_url: str, workdir: Path, run_id: str, threads: int, processes: int | None = None
) -> tuple[float, float, object]:
    """The download stage over ``urls``: seconds, CPU seconds (with its inspecting processes) and its
    report; ``processes`` None keeps the default (HARVEST_INSPECT_PROCESSES unset: worker processes
    on a multi-core machine), 0 inspects in the download threads."""
    env = {
        **({"HARVEST_INSPECT_PROCESSES": str(processes)} if processes is not None else {}),
        **os.environ,
        "HARVEST_HOME": str(workdir / "home"),
        "HARVEST_LOCAL_ROOTS": str(workdir),
        "HARVEST_ALLOW_PRIVATE_NETWORKS": "1",
        "HARVEST_SHARDS": "1",
        "HARVEST_STAGING": str(workdir / f"staging-{run_id}"),
        # the bare loop has no politeness: neither does the stage here (one loopback host would
        # otherwise get 2 concurrent requests and a 0.5 s delay between them, i.e. 2 images/s)
        "HARVEST_HOST_DELAY": "0",
        "HARVEST_HOST_CONCURRENCY": str(threads),
    }
    cfg = build_config(
        {"seeds": ["http://127.0.0.1/"], "labels": ["espresso"]}, run_id, env=env, database_url=database_url
    )
    migrate(cfg.database_url)
    with session_scope(cfg.database_url) as session:
        insert_ignore(
            session,
            Run,
            [{"run_id": run_id, "params": {}, "started_at": utcnow(), "counters": {}}],
            ["run_id"],
        )
        insert_ignore(
            session,
            Candidate,
            [
                {
                    "run_id": run_id,
                    "url": url,
                    "page_url": "http://127.0.0.1/",
                    "source": "img",
                    "shard": 0,
                    "status": "pending",
                    "attempts": 0,
                }
                for url in urls
            ],
            ["run_id", "url"],
        )
    started, cpu = time.perf_counter(), cpu_seconds()
    report = run_download(cfg, 0)
    return time.perf_counter() - started, cpu_seconds() - cpu, report


def inspection_cost(root: Path, names: list[str], sample: int = 300) -> tuple[float, float]:
    """Seconds per image for the full inspection, and for the hash + entropy part alone."""
    blobs = [(root / name).read_bytes() for name in names[:sample]]
    started = time.perf_counter()
    for blob in blobs:
        inspect_image(blob, 64, 64)
    full = (time.perf_counter() - started) / len(blobs)
    started = time.perf_counter()
    for blob in blobs:
        with Image.open(io.BytesIO(blob)) as image:
            image.draft(image.mode, (HASH_SIDE, HASH_SIDE))  # the same decode inspect_image does
            image.load()
    decode = (time.perf_counter() - started) / len(blobs)
    return full, full - decode


def index_numbers(count: int, distance: int) -> dict[str, float]:
    rng = random.Random(3)
    hashes = [rng.getrandbits(64) for _ in range(count)]
    import tracemalloc

    tracemalloc.start()
    started = time.perf_counter()
    index = HashIndex(distance)
    for i, value in enumerate(hashes):
        index.add(value, i)
    build = time.perf_counter() - started
    traced = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    queries = [hashes[rng.randrange(count)] ^ (1 << rng.randrange(64)) for _ in range(2000)]
    queries += [rng.getrandbits(64) for _ in range(2000)]
    started = time.perf_counter()
    found = sum(1 for q in queries if index.nearest(q) is not None)
    lookup = (time.perf_counter() - started) / len(queries)
    return {
        "build_s": build,
        "bytes": traced,
        "lookup_us": lookup * 1e6,
        "found": found,
        "queries": len(queries),
    }


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--synthetic", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=5, help="bare loop and stage runs; medians count")
    parser.add_argument("--database-url", default=None, help="default: a fresh SQLite file")
    parser.add_argument(
        "--workdir",
        default=os.environ.get("HARVEST_HOME") or str(Path(__file__).resolve().parents[1] / ".harvest"),
        help="where the site, the staging area and the state DB go, in a fresh folder (default: HARVEST_HOME)",
    )
    args = parser.parse_args()
    threads = build_config({"seeds": ["http://x/"], "labels": ["espresso"]}, "probe").download_threads

    # under HARVEST_HOME, where a real run stages its downloads (writing a file there cost the same
    # as in /tmp or /root on the development machine: what varied was the time, see wait_for_calm_disk)
    Path(args.workdir).mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="bench-download-", dir=args.workdir) as tmp:
        workdir = Path(tmp)
        root = workdir / "site"
        started = time.perf_counter()
        names, total_bytes = make_images(root, args.images)
        os.sync()  # the generated site's writeback belongs to the set-up, not to the first round
        print(
            f"generated {len(names)} images, {total_bytes / 1e6:.1f} MB in {time.perf_counter() - started:.1f}s"
        )
        database_url = args.database_url or f"sqlite:///{workdir / 'state.db'}"
        rounds: list[dict[str, float]] = []
        reports = []
        with serve(root) as base:
            urls = [f"{base}/{name}" for name in names]
            bare_loop(urls[:50], threads)  # warm the server and the page cache
            waited, cost = wait_for_calm_disk(workdir / "staging-probe")
            print(f"waited {waited:.0f}s for a calm disk (a new 66 kB file: {cost * 1e3:.2f} ms of CPU)")
            stamp = int(time.time())
            for round_ in range(args.rounds):
                # the bare loop before and after the stage runs, the faster one counts: the machine
                # may be shared, and a slow bare run must not flatter the stage
                bare, bare_cpu = bare_loop(urls, threads)
                write_cost = file_write_cost(workdir / "staging-probe")
                stage_s, stage_cpu, report = stage(
                    urls, database_url, workdir, f"bench-{stamp}-{round_}", threads
                )
                threads_s, threads_cpu, threads_report = stage(
                    urls, database_url, workdir, f"bench-{stamp}-t{round_}", threads, 0
                )
                again, again_cpu = bare_loop(urls, threads)
                bare, bare_cpu = min(bare, again), min(bare_cpu, again_cpu)
                rounds.append(
                    {
                        "bare": bare,
                        "stage": stage_s,
                        "threads": threads_s,
                        "bare_cpu": bare_cpu,
                        "stage_cpu": stage_cpu,
                        "threads_cpu": threads_cpu,
                        "write": write_cost,
                    }
                )
                reports = [report, threads_report]
                ms = 1000 / len(urls)
                print(
                    f"round {round_ + 1}: bare {len(urls) / bare:.0f}, stage {len(urls) / stage_s:.0f} "
                    f"({bare / stage_s:.2f}x), inspecting in the threads {len(urls) / threads_s:.0f} "
                    f"({bare / threads_s:.2f}x) images/s; CPU ms/image: bare {bare_cpu * ms:.2f}, "
                    f"stage {stage_cpu * ms:.2f}, in the threads {threads_cpu * ms:.2f}; "
                    f"writing a 66 kB file {write_cost * 1e3:.2f} ms; load average {os.getloadavg()[0]:.1f}",
                    flush=True,
                )
        full, hashing = inspection_cost(root, names)
        hashes = [inspect_image((root / n).read_bytes(), 64, 64).phash for n in names[:1000]]
        index = HashIndex(6)
        started = time.perf_counter()
        for i, h in enumerate(hashes):
            if index.nearest(parse(h)) is None:
                index.add(parse(h), i)
        neardup = (time.perf_counter() - started) / len(hashes)
    synthetic = index_numbers(args.synthetic, 6)

    n, mb = len(names), total_bytes / 1e6
    keys = ("bare", "stage", "threads", "bare_cpu", "stage_cpu", "threads_cpu")
    median = {key: statistics.median(r[key] for r in rounds) for key in keys}
    ratio = statistics.median(r["bare"] / r["stage"] for r in rounds)
    ratio_threads = statistics.median(r["bare"] / r["threads"] for r in rounds)
    cpu_ratio = {
        key: statistics.median(r["bare_cpu"] / r[f"{key}_cpu"] for r in rounds)
        for key in ("stage", "threads")
    }
    processes = inspection_processes(None, n)
    rows = [
        ("bare threaded GET loop", median["bare"], 1.0, median["bare_cpu"], 1.0),
        (
            f"download stage ({processes} inspecting processes)",
            median["stage"],
            ratio,
            median["stage_cpu"],
            cpu_ratio["stage"],
        ),
        (
            "  inspecting in the threads",
            median["threads"],
            ratio_threads,
            median["threads_cpu"],
            cpu_ratio["threads"],
        ),
    ]
    print(f"\n{threads} threads, {n} images, {mb:.1f} MB, median of {len(rounds)} rounds")
    print(f"last round: {'; '.join(map(str, reports))}")
    print(f"{'':<46}{'images/s':>10}{'MB/s':>8}{'x bare':>8}{'CPU ms/image':>14}{'x bare':>8}")
    for name, seconds, x, cpu, cpu_x in rows:
        print(
            f"{name:<46}{n / seconds:>10.0f}{mb / seconds:>8.1f}{x:>8.2f}{cpu * 1000 / n:>14.2f}{cpu_x:>8.2f}"
        )
    print("(x bare: the bare loop's images/s, or its CPU time, over the row's; CPU: process and children)")
    writes = sorted(r["write"] * 1e3 for r in rounds)
    print(f"writing a new 66 kB file in the staging folder: {writes[0]:.2f} to {writes[-1]:.2f} ms of CPU")
    print(f"\n{'per image (one thread)':<40}{'ms':>8}")
    print(f"{'inspection: decode, hash, entropy, EXIF':<40}{full * 1e3:>8.2f}")
    print(f"{'  of which decoding':<40}{(full - hashing) * 1e3:>8.2f}")
    print(f"{'  of which hash, entropy, EXIF':<40}{hashing * 1e3:>8.2f}")
    print(f"{'near-dup lookup + insert (1k index)':<40}{neardup * 1e3:>8.3f}")
    print(f"\nnear-dup index, {args.synthetic:,} synthetic hashes, distance 6 (4 x 16-bit multi-index)")
    print(
        f"  build {synthetic['build_s']:.2f}s, size {synthetic['bytes'] / 1e6:.1f} MB, "
        f"lookup {synthetic['lookup_us']:.0f} us/query ({synthetic['found']}/{synthetic['queries']} matched)"
    )
    verdict = "PASS" if ratio >= TARGET else "FAIL"
    print(f"\ntarget: stage >= {TARGET}x bare loop: {ratio:.2f}x: {verdict}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
