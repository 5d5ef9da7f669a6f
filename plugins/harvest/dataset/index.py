"""An index of everything published at a destination: counts per label and every run's manifest.

Consumers (a training DAG, a notebook) read one small file instead of listing the bucket; it is rebuilt
from the manifests, so it is always consistent with them.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import Iterable, Mapping
from datetime import datetime, timezone

from harvest.settings.config import S3Options, destination_problem, is_s3
from harvest.storage import Store, open_store

log = logging.getLogger(__name__)

INDEX_KEY = "index.json"


def build_index(store: Store) -> dict:
    manifests = []
    per_label: Counter = Counter()
    images: set[tuple[str, str]] = set()
    for key in sorted(store.keys("manifests/")):
        if not key.endswith(".jsonl"):
            continue
        rows = [json.loads(line) for line in store.get(key).decode("utf-8").splitlines() if line.strip()]
        # the file name is the run id's slug; the rows carry the run id itself
        run_ids = sorted({row["run_id"] for row in rows if row.get("run_id")})
        manifests.append(
            {"key": key, "images": len(rows), "run_id": run_ids[0] if len(run_ids) == 1 else None}
        )
        for row in rows:
            if (row["label"], row["sha256"]) not in images:
                images.add((row["label"], row["sha256"]))
                per_label[row["label"]] += 1
    index = {
        "updated_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "images": len(images),
        "labels": dict(sorted(per_label.items())),
        "manifests": manifests,
    }
    store.put(INDEX_KEY, json.dumps(index, indent=1, sort_keys=True).encode("utf-8"), "application/json")
    return index


def rebuild_indexes(
    destinations: Iterable[object], env: Mapping[str, str], s3: S3Options | None = None
) -> dict[str, dict]:
    """Rebuild the index of every destination a run may publish to; the others are refused, each with
    its reason logged. The destinations come from asset events, whose extra anyone allowed to create
    an event writes: without this check ``index.json`` could be written into any folder the worker
    can write, Airflow's DAGs folder included."""
    indexes: dict[str, dict] = {}
    named = list(destinations)
    for other in (d for d in named if not isinstance(d, str)):
        log.warning("index of %r not rebuilt: a destination is a folder path or s3:// URI", other)
    for destination in sorted({d for d in named if isinstance(d, str)}):
        problem = destination_problem(destination, env)
        if problem:
            log.warning("index of %r not rebuilt: %s", destination, problem)
            continue
        indexes[destination] = build_index(open_store(destination, s3 if is_s3(destination) else None))
    return indexes
