"""How long the dataset-wide exports take and how much memory they hold, for a dataset of N images.

A SQLite state DB is filled with N published images (small real JPEGs, staged in a local folder,
spread over 20 labels) and every export is written to a local destination: the Parquet manifest,
``metadata.jsonl``, ``classes.json``, the WebDataset shards and the card. Then a second publish of
a later run with nothing new: the shards must be left as they are (none written), so its time is
the exports that are rebuilt every publish (Parquet, metadata, card). Peak memory is Python's
(tracemalloc) during each step; it should not grow with N by more than a few hundred bytes per
image (the list of keys to shard, the card's histogram values).

Usage: python bench/bench_exports.py [N ...]   (default 2000 and 8000)
"""

from __future__ import annotations

import io
import os
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "plugins"))

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from harvest.dataset.exports import write_exports  # noqa: E402
from harvest.settings.config import build_config  # noqa: E402
from harvest.state.db import insert_ignore, migrate, session_scope  # noqa: E402
from harvest.state.models import Candidate, Publication, Run, utcnow  # noqa: E402
from harvest.state.models import Image as ImageRow  # noqa: E402
from harvest.storage import LocalStore, Stores, open_store  # noqa: E402

LABELS = [f"label_{i:02d}" for i in range(20)]
#: Python memory a publish may hold per image beyond a fixed base, in bytes
PER_IMAGE_BUDGET = 600


def _jpeg(seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 255, (64, 96, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "JPEG", quality=80)
    return buffer.getvalue()


def fill(cfg, staging: LocalStore, n: int) -> None:
    import hashlib

    migrate(cfg.database_url)
    images, candidates, publications = [], [], []
    for i in range(n):
        data = _jpeg(i)
        sha = hashlib.sha256(data).hexdigest()
        key = f"images/{sha[:2]}/{sha}.jpg"
        staging.put(key, data)
        label = LABELS[i % len(LABELS)]
        url = f"https://example.org/{i}.jpg"
        images.append(
            {
                "sha256": sha,
                "staging": staging.location,
                "storage_key": key,
                "clean_key": key,
                "clean_sha256": sha,
                "format": "JPEG",
                "mime_type": "image/jpeg",
                "width": 96,
                "height": 64,
                "size_bytes": len(data),
                "first_url": url,
                "has_alpha": False,
                "phash": f"{i:016x}",
                "entropy": 7.5,
            }
        )
        candidates.append(
            {
                "run_id": cfg.run_id,
                "url": url,
                "page_url": "https://example.org/",
                "source": "img",
                "alt": f"picture {i}",
                "shard": 0,
                "status": "done",
                "attempts": 1,
                "sha256": sha,
            }
        )
        publications.append(
            {
                "destination": cfg.destination,
                "key": f"images/{label}/{sha}.jpg",
                "sha256": sha,
                "run_id": cfg.run_id,
                "created_at": utcnow(),
                "label": label,
                "score": 0.5 + (i % 50) / 100,
                "content_sha256": sha,
            }
        )
    with session_scope(cfg.database_url) as session:
        insert_ignore(
            session,
            Run,
            [{"run_id": cfg.run_id, "params": {"model": "x"}, "started_at": utcnow()}],
            ["run_id"],
        )
        for table, rows, unique in (
            (ImageRow, images, ["sha256"]),
            (Candidate, candidates, ["run_id", "url"]),
            (Publication, publications, ["destination", "key"]),
        ):
            for start in range(0, len(rows), 500):
                insert_ignore(session, table, rows[start : start + 500], unique)


def measure(step) -> tuple[float, float, int, dict]:
    """Wall seconds, CPU seconds of this process (the machine may be shared), Python's peak bytes."""
    tracemalloc.start()
    started, cpu = time.perf_counter(), time.process_time()
    result = step()
    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return elapsed, cpu, peak, result


def bench(n: int) -> dict[str, tuple[float, float, int]]:
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["HARVEST_HOME"] = str(Path(tmp) / "home")
        os.environ["HARVEST_LOCAL_ROOTS"] = tmp
        os.environ["HARVEST_EXPORTS"] = "all"
        os.environ["HARVEST_WEBDATASET_SHARD_SIZE"] = "1000"
        params = {
            "seeds": ["https://example.org/"],
            "labels": ["x"],
            "destination": str(Path(tmp) / "dataset"),
        }
        cfg = build_config(params, "manual__bench")
        fill(cfg, LocalStore(Path(tmp) / "staging"), n)
        destination, stores = open_store(cfg.destination), Stores(None)
        first_s, first_cpu, first_peak, first = measure(lambda: write_exports(cfg, destination, stores))
        later = cfg.with_(manifest_id="manual__later")
        again_s, again_cpu, again_peak, again = measure(lambda: write_exports(later, destination, stores))
    assert first["rows"] == again["rows"] == n and again["webdataset_new_shards"] == 0
    return {"first": (first_s, first_cpu, first_peak), "nothing new": (again_s, again_cpu, again_peak)}


def main() -> int:
    # the libraries the exports load on first use, loaded before anything is measured
    import pyarrow.parquet  # noqa: F401
    from PIL import ImageDraw, ImageFont  # noqa: F401

    import harvest.dataset.card  # noqa: F401
    import harvest.dataset.webdataset  # noqa: F401
    import harvest.model.registry  # noqa: F401

    sizes = [int(a) for a in sys.argv[1:]] or [2000, 8000]
    bench(50)  # first-use caches (the model registry's class lists, fonts) are not the dataset's
    results = {n: bench(n) for n in sizes}
    for n, steps in results.items():
        for name, (seconds, cpu, peak) in steps.items():
            print(
                f"{n:>7} images  {name:<12} {seconds:6.2f} s wall  {cpu:6.2f} s CPU "
                f"({n / cpu:6.0f} images/CPU-s)  peak {peak / 1e6:5.1f} MB Python ({peak / n:5.0f} B/image)"
            )
    if len(sizes) > 1:
        small, large = min(sizes), max(sizes)
        growth = (results[large]["first"][2] - results[small]["first"][2]) / (large - small)
        verdict = "ok" if growth <= PER_IMAGE_BUDGET else "FAIL"
        print(f"first publish: peak grows {growth:.0f} B per image (budget {PER_IMAGE_BUDGET}): {verdict}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
