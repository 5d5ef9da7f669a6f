"""Small files that decode to huge images: the download stage keeps its decoded pixels within a budget.

A PNG of a few hundred kilobytes can hold 40 megapixels, 160 MB once decoded; eight download threads
meeting eight of them used to decode them all at once. Each decode now reserves its cost (read from
the image's header) from a budget shared by the download process and its inspecting processes: a
decode waits while the others leave too little room, and one larger than the whole budget is refused
with the reason. Memory is read from the kernel (VmHWM, VmRSS), in worker processes that run the real
stages against images served on loopback.
"""

from __future__ import annotations

import io
import json
import os
import struct
import subprocess
import sys
import threading
import time
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from sqlalchemy import select

import harvest
from harvest.demo_site import DEMO_LABELS
from harvest.state.db import session_scope
from harvest.state.models import Candidate

from . import hostile_site
from .hostile_site import body, html

MB = 1024 * 1024
#: just under the default pixel cap of 40 megapixels: 160 MB decoded, ~400 KB as a PNG
SIDE = 6324
COPIES = 8
#: the budget the stage runs with here: two such images at a time
BUDGET_MB = 400
#: what the decode budget leaves out: an image's file bytes and its copy in the inspecting process's
#: pipe, the HTTP client's buffers, allocator slack
SLACK_MB = 120
WORKER_TIME_LIMIT = 120


def _chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def rgba_png(side: int, copies: int) -> list[bytes]:
    """``copies`` different RGBA PNGs of side x side transparent pixels (they differ in a text chunk)."""
    row = b"\x00" * (1 + 4 * side)
    compressor = zlib.compressobj(6)
    idat = b"".join(compressor.compress(row) for _ in range(side)) + compressor.flush()
    header = _chunk(b"IHDR", struct.pack(">IIBBBBB", side, side, 8, 6, 0, 0, 0))
    return [
        b"\x89PNG\r\n\x1a\n" + header + _chunk(b"tEXt", b"Comment\x00copy %d" % n) + _chunk(b"IDAT", idat)
        + _chunk(b"IEND", b"")
        for n in range(copies)
    ]  # fmt: skip


@pytest.fixture(scope="module")
def huge_pngs() -> list[bytes]:
    return rgba_png(SIDE, COPIES)


def run_memory_worker(settings: dict, tmp_path: Path) -> tuple[dict, dict]:
    """Prepare, crawl, extract and download in a process of their own (memory_worker.py); returns
    hostile_worker's report (peak memory after each stage) and the process tree's figures."""
    (tmp_path / "settings.json").write_text(json.dumps(settings))
    plugins = str(Path(harvest.__file__).resolve().parents[1])
    env = {k: v for k, v in os.environ.items() if not k.startswith("HARVEST_") and "proxy" not in k.lower()}
    env["PYTHONPATH"] = os.pathsep.join([plugins, env.get("PYTHONPATH", "")])
    log = tmp_path / "worker.log"
    script = str(Path(__file__).with_name("memory_worker.py"))
    with log.open("w") as stderr:
        worker = subprocess.run(
            [sys.executable, script, str(tmp_path / "settings.json")],
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
            env=env,
            timeout=WORKER_TIME_LIMIT,
        )
    assert worker.returncode == 0, log.read_text()[-5000:]
    stages, tree = (json.loads(line) for line in worker.stdout.strip().splitlines()[-2:])
    return stages, tree


def harvest_huge_pngs(
    pngs: list[bytes], postgres_url: str, tmp_path: Path, **env: str
) -> tuple[dict, dict, dict]:
    """One page showing the PNGs, harvested by the real stages in a worker process with 8 download
    threads; returns the stage peaks, the tree's figures and each image's candidate row."""
    with hostile_site.serve("127.0.0.2") as site:
        paths = [f"/huge/{n}.png" for n in range(len(pngs))]
        site.routes["/"] = html(" ".join(f'<img src="{path}" alt="huge">' for path in paths))
        site.routes.update({path: body(data, "image/png") for path, data in zip(paths, pngs, strict=True)})
        settings = {
            "run_id": "manual__huge-pngs",
            "params": {"seeds": [f"{site.base}/"], "labels": list(DEMO_LABELS), "max_pages": 1},
            "env": {
                "HARVEST_HOME": str(tmp_path / "home"),
                "HARVEST_ALLOWED_NETWORKS": "127.0.0.2/32",
                "HARVEST_SHARDS": "1",  # every image in one shard, so all 8 threads meet them at once
                "HARVEST_DOWNLOAD_THREADS": "8",
                "HARVEST_HOST_CONCURRENCY": "8",
                "HARVEST_HOST_DELAY": "0",
                **env,
            },
            "database_url": postgres_url,
        }
        stages, tree = run_memory_worker(settings, tmp_path)
    with session_scope(postgres_url) as session:
        rows = {
            url.removeprefix(site.base): (status, error)
            for url, status, error in session.execute(
                select(Candidate.url, Candidate.status, Candidate.error).where(
                    Candidate.run_id == settings["run_id"]
                )
            )
        }
    return stages["peak_kib"], tree, rows


def test_eight_threads_meeting_eight_huge_pngs_stay_within_the_decode_budget(
    huge_pngs, postgres_url, tmp_path
):
    assert max(len(data) for data in huge_pngs) < 1 * MB
    peaks, tree, rows = harvest_huge_pngs(
        huge_pngs,
        postgres_url,
        tmp_path,
        HARVEST_INSPECT_PROCESSES="0",
        HARVEST_DECODE_BUDGET_MB=str(BUDGET_MB),
    )
    growth_mb = (peaks["download[0]"] - peaks["extract"]) / 1024
    print(
        f"{COPIES} x {SIDE}x{SIDE} RGBA PNG, in the download threads: the download stage added "
        f"{growth_mb:.0f} MB to the worker (peak {peaks['download[0]'] / 1024:.0f} MB, budget {BUDGET_MB} MB)"
    )
    assert growth_mb < BUDGET_MB + SLACK_MB, peaks
    # the budget makes decodes wait, it refuses none of them
    assert {rows[f"/huge/{n}.png"][0] for n in range(COPIES)} == {"done"}, rows
    assert tree["budget_high_water"] <= BUDGET_MB * MB


def idle_inspector_kib() -> int:
    """The peak memory of an inspecting process that has decoded nothing: the interpreter with the
    inspection code, Pillow and NumPy imported."""
    plugins = str(Path(harvest.__file__).resolve().parents[1])
    probe = (
        "import harvest.images.imagecheck, pathlib; "
        "print(next(l for l in pathlib.Path('/proc/self/status').read_text().splitlines() if l.startswith('VmHWM')))"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe],
        env={**os.environ, "PYTHONPATH": plugins},
        capture_output=True,
        text=True,
    )
    return int(out.stdout.split()[1])


def test_inspecting_processes_together_stay_within_the_decode_budget(huge_pngs, postgres_url, tmp_path):
    """Four inspecting processes, one huge image each at a time, would decode four at once; the
    download process's budget lets two of them decode at a time, whichever processes they are in."""
    peaks, tree, rows = harvest_huge_pngs(
        huge_pngs,
        postgres_url,
        tmp_path,
        HARVEST_INSPECT_PROCESSES="4",
        HARVEST_DECODE_BUDGET_MB=str(BUDGET_MB),
    )
    children, idle = tree["child_peaks_kib"], idle_inspector_kib()
    assert len(children) == 4, tree
    decoded_mb = sum(peak - idle for peak in children) / 1024
    tree_growth_mb = (tree["tree_peak_kib"] - peaks["extract"] - len(children) * idle) / 1024
    print(
        f"{COPIES} x {SIDE}x{SIDE} RGBA PNG, 4 inspecting processes: their peaks {[c // 1024 for c in children]} MB "
        f"(idle {idle // 1024} MB), {decoded_mb:.0f} MB above idle together; whole tree peak "
        f"{tree['tree_peak_kib'] / 1024:.0f} MB, {tree_growth_mb:.0f} MB above the worker before the stage and "
        "4 idle processes"
    )
    assert tree_growth_mb < BUDGET_MB + SLACK_MB, (tree, peaks)
    assert {rows[f"/huge/{n}.png"][0] for n in range(COPIES)} == {"done"}, rows


def test_the_default_pixel_cap_refuses_what_the_old_one_let_through():
    """7999x7999 RGBA (64 megapixels, a ~1 MB file) passed the old cap and cost ~500 MB to decode."""
    from harvest.images.imagecheck import ImageRejected, inspect_image

    (png,) = rgba_png(7999, 1)
    with pytest.raises(ImageRejected, match=r"^too many pixels \(7999x7999\)$"):
        inspect_image(png, 64, 64)


def test_an_image_costlier_than_the_whole_budget_is_refused_at_once():
    from harvest.images.decoding import DecodeBudget
    from harvest.images.imagecheck import ImageRejected, inspect_image

    (png,) = rgba_png(3000, 1)  # 36 MB decoded
    budget = DecodeBudget(16 * MB)
    started = time.monotonic()
    with pytest.raises(
        ImageRejected,
        match=r"needs 50 MB to decode, more than the whole decode budget of 16 MB \(HARVEST_DECODE_BUDGET_MB\)",
    ):
        inspect_image(png, 64, 64, budget=budget)
    assert time.monotonic() - started < 1.0
    assert budget.in_use == 0 and budget.high_water == 0


def test_concurrent_decodes_wait_for_room_and_all_finish():
    """Six threads, room for two of these decodes at a time: all six are described, never more
    than the budget is reserved, and the budget is whole again afterwards."""
    from harvest.images.decoding import DecodeBudget
    from harvest.images.imagecheck import inspect_image, inspection_cost, sniff

    pngs = rgba_png(2000, 6)  # 16 MB decoded each
    cost = inspection_cost(pngs[0], sniff(pngs[0]))
    budget = DecodeBudget(cost * 2 + cost // 2)
    with ThreadPoolExecutor(6) as pool:
        results = list(pool.map(lambda data: inspect_image(data, 64, 64, budget=budget), pngs))
    assert [(r.width, r.height, r.mode) for r in results] == [(2000, 2000, "RGBA")] * 6
    assert budget.high_water == 2 * cost and budget.in_use == 0


def test_the_budget_serves_in_order_and_never_deadlocks():
    """A large reservation is not overtaken for ever by small ones; one that the capacity can no
    longer hold, after a resize, is refused instead of waiting."""
    from harvest.images.decoding import BudgetExceeded, DecodeBudget

    budget = DecodeBudget(100 * MB)
    order: list[str] = []
    small_held = threading.Event()
    release_small = threading.Event()

    def hold(name: str, cost_mb: int, until: threading.Event | None = None) -> None:
        with budget.reserve(cost_mb * MB):
            order.append(name)
            if until is not None:
                small_held.set()
                until.wait(5)

    with ThreadPoolExecutor(3) as pool:
        first = pool.submit(hold, "small-1", 60, release_small)
        small_held.wait(5)
        large = pool.submit(hold, "large", 80)
        time.sleep(0.1)  # the large one queues first ...
        later = pool.submit(hold, "small-2", 30)  # ... so this one, which would fit now, waits behind it
        time.sleep(0.1)
        assert order == ["small-1"]
        release_small.set()
        for future in (first, large, later):
            future.result(timeout=5)
    assert order == ["small-1", "large", "small-2"] and budget.in_use == 0

    with budget.reserve(90 * MB), ThreadPoolExecutor(1) as pool:
        waiting = pool.submit(hold, "too large after the resize", 80)
        time.sleep(0.1)
        budget.resize(50 * MB)
        with pytest.raises(
            BudgetExceeded, match="needs 80 MB to decode, more than the whole decode budget of 50 MB"
        ):
            waiting.result(timeout=5)
    assert budget.in_use == 0


#: every format and kind of file whose decode costs differently, at 3000x2000
COST_CASES = {
    "baseline.jpg": ("JPEG", "RGB", {"quality": 85}),
    "progressive.jpg": ("JPEG", "RGB", {"quality": 85, "progressive": True}),
    "rgb.png": ("PNG", "RGB", {}),
    "rgba.png": ("PNG", "RGBA", {}),
    "palette.png": ("PNG", "P", {}),
    "grey.png": ("PNG", "L", {}),
    "still.gif": ("GIF", "P", {}),
    "lossy.webp": ("WEBP", "RGB", {"quality": 50, "method": 0}),
    "lossy-alpha.webp": ("WEBP", "RGBA", {"quality": 50, "method": 0}),
    "lossless.webp": ("WEBP", "RGBA", {"lossless": True, "method": 0}),
    "rgb.bmp": ("BMP", "RGB", {}),
    "rgba.tif": ("TIFF", "RGBA", {"compression": "tiff_lzw"}),
    "one-strip.tif": ("TIFF", "RGBA", {"compression": "tiff_lzw", "tiffinfo": {278: 2000}}),
}
#: the peak of a decode in a fresh process, above its state just before the decode
MEASURE_DECODE = """
import pathlib, sys
import numpy  # loaded by a process's first decode, once: not a cost of each decode
from harvest.images.imagecheck import inspect_image, inspection_cost, sniff
def peak():
    return next(int(l.split()[1]) * 1024 for l in pathlib.Path("/proc/self/status").read_text().splitlines() if l.startswith("VmHWM"))
data = pathlib.Path(sys.argv[1]).read_bytes()
reserved = inspection_cost(data, sniff(data))
before = peak()
inspect_image(data, 64, 64)
print(peak() - before, reserved)
"""


@pytest.mark.parametrize("name", sorted(COST_CASES))
def test_the_reservation_covers_what_the_decode_really_takes(name, tmp_path):
    import numpy as np
    from PIL import Image

    fmt, mode, options = COST_CASES[name]
    rng = np.random.default_rng(7)
    gradient = np.linspace(0, 255, 3000, dtype=np.uint8)[None, :, None].repeat(2000, 0).repeat(4, 2)
    noise = rng.integers(0, 32, (2000, 3000, 4), dtype=np.uint8)
    image = Image.fromarray(gradient + noise, "RGBA").convert(mode)
    path = tmp_path / name
    image.save(path, fmt, **options)
    plugins = str(Path(harvest.__file__).resolve().parents[1])
    out = subprocess.run(
        [sys.executable, "-c", MEASURE_DECODE, str(path)],
        env={**os.environ, "PYTHONPATH": plugins},
        capture_output=True,
        text=True,
        check=True,
    )
    used, reserved = map(int, out.stdout.split())
    print(f"{name}: decode peak +{used / MB:.1f} MB, reserved {reserved / MB:.1f} MB")
    assert used <= reserved


def test_the_limits_are_settings():
    from harvest.settings.config import ConfigError, build_config

    params = {"seeds": ["http://example.org/"], "labels": ["daisy"]}
    cfg = build_config(
        params, "run", env={"HARVEST_MAX_PIXELS": "20000000", "HARVEST_DECODE_BUDGET_MB": "256"}
    )
    assert (cfg.max_pixels, cfg.decode_budget_mb) == (20_000_000, 256)
    default = build_config(params, "run", env={})
    assert (default.max_pixels, default.decode_budget_mb) == (40_000_000, 900)
    with pytest.raises(ConfigError) as info:
        build_config(
            params, "run", env={"HARVEST_MAX_PIXELS": "100000000", "HARVEST_DECODE_BUDGET_MB": "lots"}
        )
    assert "HARVEST_MAX_PIXELS must be between 4096 and 89478485" in str(info.value)
    assert "HARVEST_DECODE_BUDGET_MB must be an integer" in str(info.value)


def test_header_readers_survive_hostile_headers():
    """Whatever the first bytes are, reading the declared size gives a size or None, never an error,
    and a reservation is always made (the worst case for the format when the header is unreadable)."""
    import random

    from PIL import Image

    from harvest.images.decoding import declared_size
    from harvest.images.imagecheck import inspection_cost

    samples = {}
    for fmt, options in (
        ("PNG", {}),
        ("GIF", {}),
        ("WEBP", {}),
        ("BMP", {}),
        ("TIFF", {}),
        ("JPEG", {"progressive": True}),
    ):
        out = io.BytesIO()
        Image.new("RGB", (300, 200), (10, 200, 30)).save(out, fmt, **options)
        samples[fmt] = out.getvalue()
        assert (declared_size(samples[fmt], fmt).width, declared_size(samples[fmt], fmt).height) == (300, 200)
    chance = random.Random(5)
    for fmt, data in samples.items():
        for _ in range(500):
            mutated = bytearray(data[: chance.randrange(8, min(len(data), 400))])
            for _ in range(chance.randrange(1, 6)):
                mutated[chance.randrange(len(mutated))] = chance.randrange(256)
            declared_size(bytes(mutated), fmt)
            assert (
                inspection_cost(bytes(mutated), fmt) > 0
                or declared_size(bytes(mutated), fmt).pixels > 40_000_000
            )
