"""How fast the gallery answers over a large state DB: the API a page load calls, per run size.

Builds a SQLite state DB with synthetic rows (candidates, images, predictions, publications as the
stages write them) and times the requests one page load makes: /api/items (first 200 cards),
/api/scores and /api/stats, for one run and for all runs, on a fresh app (nothing cached yet). Target: a page load over a 10 000-candidate
run in under 2 s on 2 cores.
"""

from __future__ import annotations

import random
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "plugins"))

from fastapi.testclient import TestClient  # noqa: E402

from harvest.state.db import migrate, session_scope  # noqa: E402
from harvest.state.models import Candidate, Image, Prediction, Publication, Run, utcnow  # noqa: E402
from harvest_ui.app import create_app  # noqa: E402
from harvest_ui.settings import load_settings  # noqa: E402

CLASSES = [
    ("n07920052", "espresso"),
    ("n11939491", "daisy"),
    ("n02124075", "Egyptian cat"),
    ("n04346328", "stupa"),
]
TARGET_SECONDS = 2.0


def populate(url: str, runs: int, per_run: int) -> None:
    rng = random.Random(4)
    migrate(url)
    with session_scope(url) as session:
        for r in range(runs):
            run_id = f"scheduled__2026-11-{r + 1:02d}T00:00:00+00:00"
            session.add(
                Run(
                    run_id=run_id,
                    params={
                        "labels": ["espresso", "daisy"],
                        "top_k": 5,
                        "threshold": 0.2,
                        "model": "efficientnet_lite0",
                    },
                    counters={},
                )
            )
            session.flush()
            images, derived, candidates = [], [], []
            for i in range(per_run):
                url_i = f"https://img{i % 50}.example.org/photos/{r}-{i}.jpg"
                roll = rng.random()
                status, sha, error = "done", None, None
                if roll < 0.1:
                    status, error = "failed", f"{url_i}: HTTP 404"
                elif roll < 0.2:
                    status, error = "skipped", "declared size 24x24 below minimum 64x64"
                else:
                    sha = f"{r:04d}{i:060d}"
                    images.append(
                        Image(
                            sha256=sha,
                            staging="/nowhere",
                            storage_key=f"staging/{sha}.jpg",
                            format="JPEG",
                            mime_type="image/jpeg",
                            width=640,
                            height=480,
                            size_bytes=50_000,
                            first_url=url_i,
                        )
                    )
                    scores = sorted((rng.random() for _ in CLASSES), reverse=True)
                    top = [
                        {"wnid": w, "name": n, "score": s}
                        for (w, n), s in zip(rng.sample(CLASSES, 4), scores, strict=True)
                    ]
                    derived.append(
                        Prediction(sha256=sha, model="efficientnet_lite0@1", top=top, created_at=utcnow())
                    )
                    if top[0]["wnid"] in ("n07920052", "n11939491") and top[0]["score"] >= 0.2:
                        derived.append(
                            Publication(
                                destination="/dataset", key=f"images/x/{sha}.jpg", sha256=sha, run_id=run_id
                            )
                        )
                candidates.append(
                    Candidate(
                        run_id=run_id,
                        url=url_i,
                        page_url="https://example.org/",
                        source="img",
                        shard=i % 4,
                        status=status,
                        sha256=sha,
                        error=error,
                        attempts=1,
                    )
                )
            for batch in (images, derived, candidates):  # rows before the rows that point at them
                session.add_all(batch)
                session.flush()


def page_load(client: TestClient, run: str | None) -> float:
    params = {"run": run} if run else {}
    started = time.perf_counter()
    for path in ("/api/items", "/api/scores", "/api/stats"):
        response = client.get(path, params={**params, "limit": 200} if path == "/api/items" else params)
        assert response.status_code == 200, response.text
    return time.perf_counter() - started


def cold_page_load(settings, run: str | None) -> float:
    with TestClient(create_app(settings)) as client:
        return page_load(client, run)


def main() -> int:
    rows = []
    ok = True
    for runs, per_run in ((1, 1_000), (1, 10_000), (5, 10_000)):
        with tempfile.TemporaryDirectory() as tmp:
            url = f"sqlite:///{tmp}/state.db"
            populate(url, runs, per_run)
            settings = load_settings({"HARVEST_DATABASE_URL": url, "HARVEST_HOME": tmp}, use_airflow=False)
            with TestClient(create_app(settings)) as client:
                first = client.get("/api/runs").json()["runs"][-1]["run_id"]
            # a fresh app each time: the first page load of a selection, before anything is cached
            one_run = min(cold_page_load(settings, first) for _ in range(2))
            all_runs = cold_page_load(settings, None)
            if per_run == 10_000:
                ok &= one_run < TARGET_SECONDS
            rows.append((runs, per_run, one_run, all_runs))
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"{'runs':>5} {'per run':>8} {'one run (s)':>12} {'all runs (s)':>13}")
    for runs, per_run, one_run, all_runs in rows:
        print(f"{runs:>5} {per_run:>8} {one_run:>12.2f} {all_runs:>13.2f}")
    print(
        f"peak RSS {peak_mb:.0f} MB; target: one 10 000-candidate run in < {TARGET_SECONDS} s -> {'ok' if ok else 'MISSED'}"
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
