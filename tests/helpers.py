"""Small readers shared by the integration tests: what is in the bucket, what the manifest says."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from sqlalchemy import select

from harvest.settings.config import S3Options
from harvest.state.db import session_scope
from harvest.state.models import Candidate
from harvest.storage import make_s3_client

#: Demo photos the demo labels must keep, and the folder each lands in.
EXPECTED_KEPT = {
    "photos/chelsea.jpg": "egyptian_cat",
    "photos/coffee-large.jpg": "espresso",
    "photos/china.jpg": "palace",
    "photos/flower.jpg": "daisy",
}


#: What every publish writes beside the images and the run manifest (the default HARVEST_EXPORTS).
DEFAULT_EXPORT_KEYS = {
    "manifests/dataset.parquet",
    "README.md",
    "card/sizes.png",
    "card/aspect_ratios.png",
    "card/scores.png",
    "card/samples.jpg",
    "classes.json",
    "images/metadata.jsonl",
}


def is_image_key(key: str) -> bool:
    """A published image's key: under images/, not the folder's metadata.jsonl."""
    return key.startswith("images/") and not key.endswith("/metadata.jsonl")


def sha256_file(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def expected_image_keys(site_root: Path) -> set[str]:
    return {f"images/{label}/{sha256_file(site_root / name)}.jpg" for name, label in EXPECTED_KEPT.items()}


def bucket_objects(s3: S3Options, bucket: str, prefix: str) -> dict[str, bytes]:
    """Every published object under ``prefix`` (staging excluded), with its bytes."""
    client = make_s3_client(s3)
    objects: dict[str, bytes] = {}
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=f"{prefix}/"):
        for item in page.get("Contents", []):
            key = item["Key"][len(prefix) + 1 :]
            if not key.startswith("_staging/"):
                objects[key] = client.get_object(Bucket=bucket, Key=item["Key"])["Body"].read()
    return objects


def manifest_rows(body: bytes) -> list[dict]:
    return [json.loads(line) for line in body.decode("utf-8").splitlines() if line.strip()]


def candidate_states(database_url: str, run_id: str, base_url: str) -> dict[str, tuple[str, str | None]]:
    """Candidate path (relative to the site) -> (status, error) for one run."""
    with session_scope(database_url) as session:
        rows = session.execute(
            select(Candidate.url, Candidate.status, Candidate.error).where(Candidate.run_id == run_id)
        ).all()
    return {url.removeprefix(base_url + "/"): (status, error) for url, status, error in rows}


def comparable_across_runs(objects: dict[str, bytes]) -> dict[str, object]:
    """``objects`` with the dataset-wide files reduced to what two runs over the same content must
    agree on: the Parquet and metadata.jsonl rows without the run id that published each object, the
    card without its table of runs."""
    import io

    import pyarrow.parquet as pq

    out: dict[str, object] = dict(objects)
    if "manifests/dataset.parquet" in out:
        rows = pq.read_table(io.BytesIO(objects["manifests/dataset.parquet"])).to_pylist()
        out["manifests/dataset.parquet"] = without_run_ids(rows)
    if "images/metadata.jsonl" in out:
        out["images/metadata.jsonl"] = without_run_ids(manifest_rows(objects["images/metadata.jsonl"]))
    if "README.md" in out:
        lines = objects["README.md"].decode("utf-8").splitlines()
        out["README.md"] = [line for line in lines if not line.startswith("| `")]  # a run's row
    return out


def without_run_ids(rows: list[dict]) -> list[dict]:
    """Rows without ``run_id``, for comparing what two runs published."""
    return [{k: v for k, v in row.items() if k != "run_id"} for row in rows]
