"""An index of everything published at a destination: counts per label and every run's manifest.

Consumers (a training DAG, a notebook) read one small file instead of listing the bucket; it is rebuilt
from the manifests, so it is always consistent with them.
"""

from __future__ import annotations

import json
from collections import Counter
from datetime import datetime, timezone

from harvest.storage import Store

INDEX_KEY = "index.json"


def build_index(store: Store) -> dict:
    manifests = []
    per_label: Counter = Counter()
    images: set[tuple[str, str]] = set()
    for key in sorted(store.keys("manifests/")):
        if not key.endswith(".jsonl"):
            continue
        rows = [json.loads(line) for line in store.get(key).decode("utf-8").splitlines() if line.strip()]
        manifests.append({"key": key, "images": len(rows)})
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
