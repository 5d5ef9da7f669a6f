"""Download throughput over the same 2,000 distinct local JPEGs, served by one loopback server, in
interleaved rounds: img2dataset (pinned, installed by this bench into its own venv), a bare threaded
GET loop, the harvest as a user runs it (``harvest stage prepare``, ``extract`` and ``download``, three
processes, timed whole), and the download stage in this process; plus the per-image cost of inspection
(decode, perceptual hash, entropy, EXIF) and of near-duplicate lookups, and the near-duplicate index at
100k synthetic hashes.

    python bench/bench_download.py [--images 2000] [--rounds 3] [--synthetic 100000]
        [--database-url URL] [--workdir DIR] [--img2dataset VERSION | --no-img2dataset]

Target: the harvest's three processes (which validate, hash and record every image) reach at least
1.0x img2dataset's whole-process images/s.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import pwd
import random
import resource
import shutil
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

from sqlalchemy import func, select  # noqa: E402

from harvest.images.imagecheck import inspect_image  # noqa: E402
from harvest.images.inspectors import inspection_processes  # noqa: E402
from harvest.images.neardup import HashIndex, parse  # noqa: E402
from harvest.images.perceptual import HASH_SIDE  # noqa: E402
from harvest.settings.config import build_config  # noqa: E402
from harvest.stages.download import run_download  # noqa: E402
from harvest.state.db import insert_ignore, migrate, session_scope  # noqa: E402
from harvest.state.models import Candidate, Run, utcnow  # noqa: E402

TARGET = 1.0
IMG2DATASET = "1.47.0"


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
    """The site on loopback, in its own processes, as a remote site would be: nginx when it is
    installed (what the tools were compared on first), else Python's http.server."""
    nginx = shutil.which("nginx") or next((p for p in ("/usr/sbin/nginx",) if Path(p).exists()), None)
    with serve_nginx(nginx, root) if nginx else serve_python(root) as base:
        yield base


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _wait_for(port: int) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)


@contextmanager
def serve_nginx(nginx: str, root: Path) -> Iterator[str]:
    """nginx with 2 worker processes, keep-alive, no logs, serving ``root`` on a free port."""
    port = _free_port()
    conf = root.parent / "nginx.conf"
    # started as root, nginx's workers would run as nobody, who cannot read the bench's private folder
    user = f"user {pwd.getpwuid(os.geteuid()).pw_name};" if os.geteuid() == 0 else ""
    conf.write_text(
        f"""{user} daemon off; worker_processes 2; pid {root.parent}/nginx.pid; error_log stderr crit;
events {{ worker_connections 1024; }}
http {{ access_log off; sendfile on; keepalive_requests 100000;
  client_body_temp_path {root.parent}/nginx-tmp; proxy_temp_path {root.parent}/nginx-tmp;
  fastcgi_temp_path {root.parent}/nginx-tmp; uwsgi_temp_path {root.parent}/nginx-tmp;
  scgi_temp_path {root.parent}/nginx-tmp;
  types {{ image/jpeg jpg; }}
  server {{ listen 127.0.0.1:{port} backlog=1024; root {root}; }} }}
"""
    )
    server = subprocess.Popen([nginx, "-c", str(conf), "-p", str(root.parent)], stderr=subprocess.DEVNULL)
    try:
        _wait_for(port)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.terminate()
        server.wait(timeout=10)


@contextmanager
def serve_python(root: Path) -> Iterator[str]:
    """``python -m http.server`` in its own process: it shares the CPU with the client, but not the
    client's interpreter lock."""
    port = _free_port()
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
        _wait_for(port)
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


def stage_env(workdir: Path, run_id: str, threads: int) -> dict[str, str]:
    """The settings of the harvest's runs here: a local staging area, one shard, and politeness
    lifted as for any single-host bench (the bare loop and img2dataset have none; one loopback host
    would otherwise get 2 concurrent requests and a 0.5 s delay between them, i.e. 2 images/s)."""
    return {
        "HARVEST_HOME": str(workdir / "home"),
        "HARVEST_LOCAL_ROOTS": str(workdir),
        "HARVEST_ALLOW_PRIVATE_NETWORKS": "1",
        "HARVEST_SHARDS": "1",
        "HARVEST_STAGING": str(workdir / f"staging-{run_id}"),
        "HARVEST_DESTINATION": str(workdir / "out"),
        "HARVEST_HOST_DELAY": "0",
        "HARVEST_HOST_CONCURRENCY": str(threads),
        "HARVEST_CDN_CONCURRENCY": str(threads),
    }


def stage(
    urls: list[str], database_url: str, workdir: Path, run_id: str, threads: int, processes: int | None = None
) -> tuple[float, float, object]:
    """The download stage over ``urls``: seconds, CPU seconds (with its inspecting processes) and its
    report; ``processes`` None keeps the default (HARVEST_INSPECT_PROCESSES unset: worker processes
    on a multi-core machine), 0 inspects in the download threads."""
    env = {
        **({"HARVEST_INSPECT_PROCESSES": str(processes)} if processes is not None else {}),
        **os.environ,
        **stage_env(workdir, run_id, threads),
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


def children_cpu() -> float:
    """CPU seconds of the child processes waited for so far (and of theirs, waited for by them)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def ensure_img2dataset(venv: Path, version: str) -> Path:
    """img2dataset ``version`` in a venv of its own (kept out of the project's requirements), made
    and installed from the package registry on the first run; its command."""
    command = venv / "bin" / "img2dataset"
    python = venv / "bin" / "python"
    probe = "import importlib.metadata as m; print(m.version('img2dataset'))"
    if command.exists():
        found = subprocess.run([python, "-c", probe], capture_output=True, text=True).stdout.strip()
        if found == version:
            return command
    print(f"installing img2dataset=={version} into {venv} ...", flush=True)
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
    subprocess.run(
        [python, "-m", "pip", "install", "-q", "--disable-pip-version-check", f"img2dataset=={version}"],
        check=True,
    )
    return command


def run_img2dataset(command: Path, url_file: Path, out: Path) -> tuple[float, float, int]:
    """Seconds and CPU seconds of one whole img2dataset process (its workers included) over the
    URL list, as its README sets it up for a plain download: 2 processes of 32 threads, files out,
    no resizing or re-encoding; and how many images it stored."""
    args = [
        str(command),
        "--url_list", str(url_file),
        "--input_format", "txt",
        "--output_format", "files",
        "--output_folder", str(out),
        "--processes_count", "2",
        "--thread_count", "32",
        "--resize_mode", "no",
        "--disable_all_reencoding", "True",
        "--timeout", "30",
        "--retries", "0",
        "--enable_wandb", "False",
        "--distributor", "multiprocessing",
        "--number_sample_per_shard", "10000",
    ]  # fmt: skip
    started, cpu = time.perf_counter(), children_cpu()
    subprocess.run(args, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    seconds, cpu = time.perf_counter() - started, children_cpu() - cpu
    stored = sum(json.loads(p.read_text()).get("successes", 0) for p in out.glob("*_stats.json"))
    return seconds, cpu, stored


def cli_harvest(
    url_file: Path, database_url: str, workdir: Path, run_id: str, threads: int
) -> tuple[float, float, float, float, int]:
    """The harvest over the URL list as a user runs it without Airflow: ``harvest stage prepare``,
    ``extract`` and ``download``, each its own process. Seconds and CPU seconds of the three, of the
    download process alone, and how many images were stored (validated, hashed, recorded)."""
    env = {
        **os.environ,
        **stage_env(workdir, run_id, threads),
        "PYTHONPATH": os.pathsep.join(
            [str(Path(__file__).resolve().parents[1] / "plugins"), os.environ.get("PYTHONPATH", "")]
        ),
    }
    params = json.dumps({"url_list": str(url_file), "labels": ["espresso"], "seeds": []})
    base = [sys.executable, "-m", "harvest.cli", "stage"]
    tail = ["--run-id", run_id, "--database-url", database_url]
    started, cpu = time.perf_counter(), children_cpu()
    _harvest([*base, "prepare", *tail, "--params", params], env)
    _harvest([*base, "extract", *tail], env)
    download_started, download_cpu = time.perf_counter(), children_cpu()
    _harvest([*base, "download", *tail], env)
    ended, cpu_ended = time.perf_counter(), children_cpu()
    with session_scope(database_url) as session:
        stored = session.scalar(
            select(func.count())
            .select_from(Candidate)
            .where(Candidate.run_id == run_id, Candidate.status == "done")
        )
    return ended - started, cpu_ended - cpu, ended - download_started, cpu_ended - download_cpu, stored


def _harvest(command: list[str], env: dict[str, str]) -> None:
    """One ``harvest`` process; its log is shown only when it fails."""
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"{' '.join(command[3:5])} failed ({done.returncode}):\n{done.stderr[-3000:]}")


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
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds; medians count")
    parser.add_argument("--database-url", default=None, help="default: a fresh SQLite file")
    parser.add_argument(
        "--workdir",
        default=os.environ.get("HARVEST_HOME") or str(Path(__file__).resolve().parents[1] / ".harvest"),
        help="where the site, the staging area and the state DB go, in a fresh folder (default: HARVEST_HOME)",
    )
    parser.add_argument("--img2dataset", default=IMG2DATASET, help="the img2dataset version compared with")
    parser.add_argument("--no-img2dataset", action="store_true", help="leave img2dataset out")
    args = parser.parse_args()
    threads = build_config({"seeds": ["http://x/"], "labels": ["espresso"]}, "probe").download_threads
    img2dataset = None
    if not args.no_img2dataset:
        venv = Path(args.workdir) / f"img2dataset-{args.img2dataset}"
        img2dataset = ensure_img2dataset(venv, args.img2dataset)

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
        with serve(root) as base:
            urls = [f"{base}/{name}" for name in names]
            url_file = workdir / "urls.txt"
            url_file.write_text("".join(f"{url}\n" for url in urls))  # img2dataset's txt input
            url_csv = workdir / "urls.csv"  # the harvest's URL list: a CSV with a url column
            url_csv.write_text("url\n" + "".join(f"{url}\n" for url in urls))
            bare_loop(urls[:50], threads)  # warm the server and the page cache
            waited, cost = wait_for_calm_disk(workdir / "staging-probe")
            print(f"waited {waited:.0f}s for a calm disk (a new 66 kB file: {cost * 1e3:.2f} ms of CPU)")
            stamp = int(time.time())
            for round_ in range(args.rounds):
                row: dict[str, float] = {}
                # interleaved, each tool first in turn: the machine may be shared, and a slow moment
                # must not fall on the same tool every round
                runs = ["bare", "cli", "stage"] + (["img2dataset"] if img2dataset else [])
                shift = round_ % len(runs)
                for name in runs[shift:] + runs[:shift]:
                    if name == "bare":
                        row["bare"], row["bare_cpu"] = bare_loop(urls, threads)
                    elif name == "img2dataset":
                        seconds, cpu, stored = run_img2dataset(
                            img2dataset, url_file, workdir / f"i2d-{round_}"
                        )
                        assert stored == len(urls), f"img2dataset stored {stored} of {len(urls)}"
                        row["img2dataset"], row["img2dataset_cpu"] = seconds, cpu
                    elif name == "cli":
                        run_id = f"cli-{stamp}-{round_}"
                        total, cpu, alone, alone_cpu, stored = cli_harvest(
                            url_csv, database_url, workdir, run_id, threads
                        )
                        assert stored == len(urls), f"the harvest stored {stored} of {len(urls)}"
                        row.update(cli=total, cli_cpu=cpu, download=alone, download_cpu=alone_cpu)
                    else:
                        seconds, cpu, report = stage(
                            urls, database_url, workdir, f"bench-{stamp}-{round_}", threads
                        )
                        assert report.done == len(urls), str(report)
                        row["stage"], row["stage_cpu"] = seconds, cpu
                rounds.append(row)
                print(
                    f"round {round_ + 1}: "
                    + ", ".join(f"{key} {len(urls) / row[key]:.0f}" for key in runs)
                    + f" images/s; load average {os.getloadavg()[0]:.1f}",
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
    reference = "img2dataset" if img2dataset else "bare"
    rows = [
        ("img2dataset", f"img2dataset {args.img2dataset} (2 processes x 32 threads, whole process)"),
        ("bare", f"bare threaded GET loop ({threads} threads, in process)"),
        ("cli", "harvest: prepare + extract + download (3 processes)"),
        ("download", "  of which the download process"),
        ("stage", f"download stage in process ({inspection_processes(None, n)} inspecting processes)"),
    ]
    rows = [(key, name) for key, name in rows if all(key in r for r in rounds)]
    print(f"\n{threads} threads, {n} images, {mb:.1f} MB, median of {len(rounds)} interleaved rounds")
    print(f"{'':<62}{'images/s':>10}{'MB/s':>8}{'x ' + reference:>15}{'CPU ms/image':>14}")
    for key, name in rows:
        seconds = statistics.median(r[key] for r in rounds)
        ratio = statistics.median(r[reference] / r[key] for r in rounds)
        cpu = statistics.median(r[f"{key}_cpu"] for r in rounds)
        print(f"{name:<62}{n / seconds:>10.0f}{mb / seconds:>8.1f}{ratio:>15.2f}{cpu * 1000 / n:>14.2f}")
    print("(ratios: median over rounds of the reference's seconds over the row's; CPU: process and children)")
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
    if img2dataset:
        ratio = statistics.median(r["img2dataset"] / r["cli"] for r in rounds)
        verdict = "PASS" if ratio >= TARGET else "FAIL"
        print(
            f"\ntarget: harvest (3 processes) >= {TARGET}x img2dataset whole process: {ratio:.2f}x: {verdict}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
