"""A long harvest on loopback, stage by stage, with each stage's memory measured: shared by the soak
test (tests/resilience/test_soak.py, CI scale) and the soak bench (bench/bench_soak.py, 20,000 images).

The site is generated from the request path by a server in its own process, so a harvest of any
size needs no files on disk: ``/`` links to gallery pages of ``per_page`` images each, the gallery
pages link to each other, and ``/img/<n>.jpg`` (every fifth one ``.png``) is a distinct picture made
from the seed ``(salt, n)``: a coarse random colour field, so no two share a perceptual hash and
the near-duplicate rule keeps every one. The label ``entity`` (the root of ImageNet's WordNet
hierarchy) with ``top_k`` 1 and threshold 0 keeps every image the classifier scored, so a run that
loses or duplicates nothing publishes exactly N images.

Each stage runs in a fresh interpreter, as Airflow's task runner runs each task, through the
``harvest.cli stage`` command (what the DAG task does, without Airflow). Its peak resident set is the
kernel's high-water mark of the process, ``VmHWM``: read from outside every 50 ms while it runs, and
by the process itself as it exits (its last 50 ms included). Not ``ru_maxrss`` from wait4(): across
exec() it keeps the high-water mark of the process that started it (here the test or the bench).

    python tests/resilience/soak.py --images N [--salt S] [--per-page P]   # serves; prints its port
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import math
import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

PLUGINS = Path(__file__).resolve().parents[2] / "plugins"

#: The stages in DAG order; ``download`` runs once per shard, each shard in its own process.
STAGES = ("prepare", "crawl", "extract", "download", "classify", "publish")
LABEL = "entity"
PER_PAGE = 150
SHARDS = 4
INSPECT_PROCESSES = 2
SAMPLE_SECONDS = 0.05
#: A failed stage is run again, as the DAG's ``retries`` do (a state DB restarting under a long run).
RETRIES = 2
RETRY_SECONDS = 10.0
#: How much a stage's peak RSS may grow between the smallest and the largest harvest and still
#: count as flat. Two runs of a stage at the same size differ by under 1 MB (classify by ~4 MB),
#: and the stages that warm caches and connection pools as they go (the download) end ~2 MB higher
#: after a few hundred images; 10 MB is twice the sum. Between the soak test's 400 and 1,600 images
#: a stage that keeps ~9 kB or more per image breaks it (publish reading every row of the run as ORM
#: objects with its score vector grew by 19 MB there); between the bench's 2,000 and 20,000, ~0.6 kB.
FLAT_MB = 10.0
#: The network's own memory depends on the batch shapes it has run (a last, partial batch of another
#: size builds other kernels): 1093 to 1142 MB over runs of 100 to 20,000 images. Keeping the decoded
#: pictures (147 kB each) would still break this at once.
FLAT_MB_CLASSIFY = 30.0


# --- the generated site --------------------------------------------------------------------------


def image_name(index: int) -> str:
    return f"img/{index}.png" if index % 5 == 4 else f"img/{index}.jpg"


def image_bytes(index: int, salt: int = 0) -> bytes:
    """Picture ``index`` of the site seeded with ``salt``: 64..160 px a side, a 10x10 random colour
    field smoothly enlarged plus a little noise. The field decides the low frequencies a perceptual
    hash reads, so 20,000 of them have pairwise distinct hashes (none within 6 bits) and high
    grey-level entropy; the same arguments always give the same bytes."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng([salt, index])
    width, height = (int(side) for side in rng.integers(64, 161, 2))
    coarse = rng.integers(0, 256, (10, 10, 3), dtype=np.uint8)
    field_ = np.asarray(Image.fromarray(coarse).resize((width, height), Image.Resampling.BICUBIC))
    noisy = field_.astype(np.int16) + rng.integers(-6, 7, (height, width, 3))
    picture = Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8))
    buffer = io.BytesIO()
    if image_name(index).endswith(".png"):
        picture.save(buffer, "PNG")
    else:
        picture.save(buffer, "JPEG", quality=85)
    return buffer.getvalue()


def page_count(images: int, per_page: int = PER_PAGE) -> int:
    return max(1, math.ceil(images / per_page))


def index_html(images: int, per_page: int) -> bytes:
    links = "".join(
        f'<li><a href="/gallery/{page}.html">Gallery {page}</a></li>'
        for page in range(page_count(images, per_page))
    )
    return f"<!doctype html><html><body><h1>Soak</h1><ul>{links}</ul></body></html>".encode()


def gallery_html(page: int, images: int, per_page: int) -> bytes | None:
    """One gallery page: figures with captions, and links to its neighbours and the index."""
    if not 0 <= page < page_count(images, per_page):
        return None
    first, last = page * per_page, min(images, (page + 1) * per_page)
    figures = "".join(
        f'<figure><img src="/{image_name(i)}" alt="generated picture {i}">'
        f"<figcaption>Picture {i} of gallery {page}</figcaption></figure>"
        for i in range(first, last)
    )
    nav = '<a href="/">index</a>'
    if page > 0:
        nav += f' <a href="/gallery/{page - 1}.html">previous</a>'
    if last < images:
        nav += f' <a href="/gallery/{page + 1}.html">next</a>'
    return (
        f"<!doctype html><html><head><title>Gallery {page}</title></head><body>"
        f"<nav>{nav}</nav><main><h1>Gallery {page}</h1>{figures}</main></body></html>"
    ).encode()


def site_response(path: str, images: int, salt: int, per_page: int) -> tuple[int, str, bytes]:
    """(status, content type, body) for a request path of the generated site."""
    path = path.split("?", 1)[0]
    if path == "/robots.txt":
        return 200, "text/plain", b"User-agent: *\nAllow: /\n"
    if path in ("/", "/index.html"):
        return 200, "text/html; charset=utf-8", index_html(images, per_page)
    if path.startswith("/gallery/") and path.endswith(".html"):
        number = path[len("/gallery/") : -len(".html")]
        body = gallery_html(int(number), images, per_page) if number.isdigit() else None
        if body is not None:
            return 200, "text/html; charset=utf-8", body
    if path.startswith("/img/"):
        number = path[len("/img/") :].rsplit(".", 1)[0]
        if number.isdigit() and int(number) < images and path == f"/{image_name(int(number))}":
            kind = "image/png" if path.endswith(".png") else "image/jpeg"
            return 200, kind, image_bytes(int(number), salt)
    return 404, "text/plain", b"not found"


def _serve_forever(images: int, salt: int, per_page: int) -> None:
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format, *args):  # noqa: A002 - no access log
            pass

        def do_GET(self):
            status, kind, body = site_response(self.path, images, salt, per_page)
            try:
                self.send_response(status)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
            except (BrokenPipeError, ConnectionResetError):
                self.close_connection = True

    class Server(ThreadingHTTPServer):
        daemon_threads = True
        request_queue_size = 128

        def handle_error(self, request, client_address):  # a client that hung up is not our error
            pass

    server = Server(("127.0.0.1", 0), Handler)
    print(server.server_address[1], flush=True)
    server.serve_forever(poll_interval=0.1)


@contextmanager
def serve_site(images: int, salt: int = 0, per_page: int = PER_PAGE) -> Iterator[str]:
    """The generated site in its own process (it shares the CPU with the harvest, not its GIL or
    its memory); yields the base URL."""
    server = subprocess.Popen(
        [sys.executable, __file__, "--images", str(images), "--salt", str(salt)]
        + ["--per-page", str(per_page)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        port = server.stdout.readline().strip()
        if not port.isdigit():
            raise RuntimeError(f"the soak site did not start (exit code {server.poll()})")
        yield f"http://127.0.0.1:{port}"
    finally:
        server.terminate()
        server.wait(timeout=10)
        server.stdout.close()


# --- one stage in its own process ----------------------------------------------------------------


def _status_kb(pid: int | str, name: str) -> int | None:
    """A field of /proc/<pid>/status in kB (VmRSS, VmHWM), None once the process is gone."""
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith(name + ":"):
                    return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError):
        return None
    return None


@dataclass
class StageRun:
    """One stage: its processes' peak RSS, wall time, and what the stage reported."""

    stage: str
    shard: int | None
    peak_mb: float
    seconds: float
    samples: int
    attempts: int
    reports: list[dict] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.stage if self.shard is None else f"{self.stage}[{self.shard}]"


#: ``python -c`` program: the harvest CLI as ``__main__``, printing the process's VmHWM as it exits
_CLI_WITH_PEAK = """
import atexit, runpy

def _peak():
    with open("/proc/self/status") as status:
        print(next(line for line in status if line.startswith("VmHWM:")).strip(), flush=True)

atexit.register(_peak)
runpy.run_module("harvest.cli", run_name="__main__", alter_sys=True)
"""


def _cmdline(pid: int | str) -> bytes | None:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
            return cmdline.read()
    except (FileNotFoundError, ProcessLookupError):
        return None


def _children(pid: int) -> list[int]:
    """The process's child processes (the download's inspecting processes), from every thread's list.

    A child still between fork() and exec() is left out: it is a copy of the stage process, whose
    high-water mark it reports until exec() replaces it."""
    found: list[int] = []
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as children:
                found += [int(child) for child in children.read().split()]
    except (FileNotFoundError, ProcessLookupError):
        pass
    own = _cmdline(pid)
    return [child for child in found if _cmdline(child) not in (own, None)]


def _attempt(command: list[str], env: dict[str, str], log_path: Path) -> tuple[int, int, int, list[dict]]:
    """One stage process: (exit code, peak RSS in kB, samples taken, the reports it printed).

    The peak counts the stage's child processes too: the process's own high-water mark plus each
    child's, as last read while it lived (an upper bound of what they held at any one moment)."""
    peak_kb, samples = 0, 0
    children_kb: dict[int, int] = {}
    with open(log_path, "ab") as log:
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=log, env=env)
        output: list[bytes] = []
        reader = threading.Thread(target=lambda: output.append(process.stdout.read()), daemon=True)
        reader.start()
        try:
            while process.poll() is None:
                hwm = _status_kb(process.pid, "VmHWM")
                for child in _children(process.pid):
                    child_hwm = _status_kb(child, "VmHWM")
                    if child_hwm is not None:
                        children_kb[child] = max(children_kb.get(child, 0), child_hwm)
                if hwm is not None:
                    peak_kb, samples = max(peak_kb, hwm), samples + 1
                time.sleep(SAMPLE_SECONDS)
        finally:
            if process.poll() is None:  # interrupted: leave no stage running
                process.kill()
                process.wait()
            reader.join()
            process.stdout.close()
    lines = b"".join(output).decode(errors="replace").splitlines()
    reports = [json.loads(line) for line in lines if line.startswith("{")]
    at_exit = [int(line.split()[1]) for line in lines if line.startswith("VmHWM:")]
    return process.returncode, max([peak_kb, *at_exit]) + sum(children_kb.values()), samples, reports


def run_stage(stage: str, spec: dict, log_path: Path, shard: int | None = None) -> StageRun:
    """Run the stage in a fresh interpreter, sampling its high-water mark until it exits; a failed
    attempt is retried as the DAG retries its tasks (the peak is the largest of all attempts)."""
    command = [sys.executable, "-c", _CLI_WITH_PEAK, "stage", stage, "--run-id", spec["run_id"]]
    command += ["--params", json.dumps(spec["params"]), "--database-url", spec["database_url"]]
    if shard is not None:
        command += ["--shard", str(shard)]
    path = os.pathsep.join(filter(None, [str(PLUGINS), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, **spec["env"], "PYTHONPATH": path}
    peak_kb, samples = 0, 0
    started = time.perf_counter()
    for attempt in range(1, RETRIES + 2):
        code, peak, taken, reports = _attempt(command, env, log_path)
        peak_kb, samples = max(peak_kb, peak), samples + taken
        if code == 0:
            seconds = time.perf_counter() - started
            return StageRun(stage, shard, peak_kb / 1024, seconds, samples, attempt, reports)
        if attempt <= RETRIES:
            time.sleep(RETRY_SECONDS)
    tail = log_path.read_text(errors="replace")[-3000:]
    raise RuntimeError(
        f"stage {stage} failed {RETRIES + 1} times (exit code {code}); end of its log:\n{tail}"
    )


# --- a whole harvest -----------------------------------------------------------------------------


@dataclass
class Harvest:
    images: int
    salt: int
    run_id: str
    database_url: str
    destination: Path
    base_url: str = ""
    runs: list[StageRun] = field(default_factory=list)

    def peak_mb(self, stage: str) -> float:
        """The stage's peak RSS; for the download, the largest of its shards'."""
        return max(run.peak_mb for run in self.runs if run.stage == stage)

    def seconds(self, stage: str) -> float:
        """Wall time of the stage; for the download, of its shards one after the other."""
        return sum(run.seconds for run in self.runs if run.stage == stage)


def harvest_spec(images: int, database_url: str, workdir: Path, base_url: str, run_id: str) -> dict:
    """Params and environment for a run that keeps every image and is polite only in name: the
    one loopback host may take the download threads at once, without a delay between requests."""
    pages = page_count(images) + 1
    return {
        "run_id": run_id,
        "database_url": database_url,
        "params": {
            "seeds": [f"{base_url}/"],
            "labels": [LABEL],
            "top_k": 1,
            "threshold": 0.0,
            "max_depth": 2,
            "max_pages": pages + 10,
            "destination": str(workdir / "dataset"),
        },
        "env": {
            "HARVEST_HOME": str(workdir / "home"),
            "HARVEST_LOCAL_ROOTS": str(workdir),
            "HARVEST_STAGING": str(workdir / "staging"),
            "HARVEST_ALLOW_PRIVATE_NETWORKS": "1",
            "HARVEST_HOST_DELAY": "0",
            "HARVEST_HOST_CONCURRENCY": "8",
            "HARVEST_MAX_PAGES_PER_HOST": str(pages + 10),
            "HARVEST_SHARDS": str(SHARDS),
            "HARVEST_MIN_SHARDS": str(SHARDS),
            # the same number of inspecting processes at every size ("auto" starts none for a few
            # hundred images), so the download's peak compares like with like
            "HARVEST_INSPECT_PROCESSES": str(INSPECT_PROCESSES),
            "TF_CPP_MIN_LOG_LEVEL": "2",
        },
    }


def run_harvest(images: int, database_url: str, workdir: Path, salt: int = 0, progress=None) -> Harvest:
    """Every stage of one run over a site of ``images`` pictures, each stage in its own process."""
    workdir.mkdir(parents=True, exist_ok=True)
    run_id = f"soak-{images}-{uuid.uuid4().hex[:8]}"
    harvest = Harvest(images, salt, run_id, database_url, workdir / "dataset")
    log_path = workdir / "stages.log"
    with serve_site(images, salt) as base_url:
        harvest.base_url = base_url
        spec = harvest_spec(images, database_url, workdir, base_url, run_id)
        for stage in STAGES:
            for shard in range(SHARDS) if stage == "download" else [None]:
                run = run_stage(stage, spec, log_path, shard)
                harvest.runs.append(run)
                if progress is not None:
                    progress(harvest, run)
    return harvest


# --- what a harvest left behind ------------------------------------------------------------------


@dataclass
class Outcome:
    """What the state DB and the destination hold for one run, counted independently."""

    candidates: int
    candidates_done: int
    distinct_images: int
    predictions: int
    publications: int
    manifest_rows: int
    manifest_urls: int
    manifest_sha256s: int
    files: int
    files_matching_name: int
    expected_sha256s_published: int
    unexpected_manifest_rows: int

    @classmethod
    def complete(cls, images: int) -> Outcome:
        """A run that lost and duplicated nothing: every count equals the pictures on the site."""
        return cls(*[images] * 11, unexpected_manifest_rows=0)

    def differences(self, images: int) -> list[str]:
        expected = vars(Outcome.complete(images))
        return [
            f"{name} {value} (expected {expected[name]})"
            for name, value in vars(self).items()
            if value != expected[name]
        ]


def outcome(harvest: Harvest) -> Outcome:
    """Count what the run produced; the manifest's sha256s are compared with those of the pictures
    the site generates (every picture arrived unaltered; about 1 ms per image to re-generate)."""
    from sqlalchemy import func, select

    from harvest.model.registry import model_key
    from harvest.settings.config import DEFAULT_MODELS_DIR
    from harvest.stages.publish import manifest_key
    from harvest.state.db import session_scope
    from harvest.state.models import Candidate, Prediction, Publication, Status

    key = model_key("efficientnet_lite0", DEFAULT_MODELS_DIR)
    with session_scope(harvest.database_url) as session:
        run = Candidate.run_id == harvest.run_id
        candidates = session.scalar(select(func.count()).select_from(Candidate).where(run))
        done = session.scalar(
            select(func.count()).select_from(Candidate).where(run, Candidate.status == Status.DONE)
        )
        shas = select(Candidate.sha256).where(run, Candidate.status == Status.DONE).distinct()
        distinct = session.scalar(select(func.count()).select_from(shas.subquery()))
        predictions = session.scalar(
            select(func.count())
            .select_from(Prediction)
            .where(Prediction.model == key, Prediction.sha256.in_(shas), Prediction.error.is_(None))
        )
        publications = session.scalar(
            select(func.count())
            .select_from(Publication)
            .where(Publication.destination == str(harvest.destination), Publication.run_id == harvest.run_id)
        )
    manifest = harvest.destination / manifest_key(harvest.run_id)
    rows = [json.loads(line) for line in manifest.read_text().splitlines() if line.strip()]
    files = sorted((harvest.destination / "images" / LABEL).glob("*.*"))
    matching = sum(1 for path in files if hashlib.sha256(path.read_bytes()).hexdigest() == path.stem)
    expected = {
        f"{harvest.base_url}/{image_name(i)}": hashlib.sha256(image_bytes(i, harvest.salt)).hexdigest()
        for i in range(harvest.images)
    }
    good = sum(1 for row in rows if expected.get(row["url"]) == row["sha256"])
    return Outcome(
        candidates=candidates,
        candidates_done=done,
        distinct_images=distinct,
        predictions=predictions,
        publications=publications,
        manifest_rows=len(rows),
        manifest_urls=len({row["url"] for row in rows}),
        manifest_sha256s=len({row["sha256"] for row in rows}),
        files=len(files),
        files_matching_name=matching,
        expected_sha256s_published=good,
        unexpected_manifest_rows=len(rows) - good,
    )


def allowance(stage: str) -> float:
    """MB the stage's peak may grow by and still count as flat."""
    return FLAT_MB_CLASSIFY if stage == "classify" else FLAT_MB


def growth(small: Harvest, large: Harvest, stage: str) -> tuple[float, float, bool]:
    """How much the stage's peak grew from ``small`` to ``large``: MB, kB per extra image, and
    whether that is flat (within its allowance)."""
    grown = large.peak_mb(stage) - small.peak_mb(stage)
    return grown, grown * 1024 / (large.images - small.images), grown <= allowance(stage)


def growth_table(small: Harvest, large: Harvest) -> str:
    """One line per stage: peak at each size, growth, growth per extra image, verdict."""
    lines = [
        f"peak RSS from {small.images} to {large.images} images "
        f"(flat: within {FLAT_MB:.0f} MB, classify {FLAT_MB_CLASSIFY:.0f} MB)"
    ]
    for stage in STAGES:
        grown, per_image, ok = growth(small, large, stage)
        lines.append(
            f"  {stage:<9} {small.peak_mb(stage):6.0f} MB -> {large.peak_mb(stage):6.0f} MB  "
            f"{grown:+6.1f} MB  {per_image:+6.2f} kB per image  {'flat' if ok else 'GROWS'}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Serve the generated site (see serve_site)."""
    parser = argparse.ArgumentParser(description="Serve the soak site on a free loopback port.")
    parser.add_argument("--images", type=int, required=True)
    parser.add_argument("--salt", type=int, default=0)
    parser.add_argument("--per-page", type=int, default=PER_PAGE)
    args = parser.parse_args(argv)
    _serve_forever(args.images, args.salt, args.per_page)
    return 0


if __name__ == "__main__":
    sys.exit(main())
