"""Secrets stay where they were given, end to end through the DAG: the S3 secret key, the state DB
password and the EXIF encryption key come only from Airflow connections and never show up in a log
record (of any logger, at any level), a task log, the Airflow DB, the state DB, or the dataset; and
a photo's private EXIF (GPS position, artist, owner, serial number) is never published: not in the
image file, the manifest, the Parquet export, the WebDataset shards or the dataset card.

The DAG runs with ``dag.test()`` in a process of its own (dag_with_all_logs.py captures every
record); the destination is the S3 server over HTTP, the state DB is Postgres. No AWS or HARVEST_*
variable, credentials file or instance metadata is reachable by the run, so a successful publish
proves the credentials came from the ``aws_default`` connection.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pyarrow.parquet as pq
import sqlalchemy
from cryptography.fernet import Fernet
from helpers import EXPECTED_KEPT, sha256_file
from PIL import Image

from harvest import demo_site
from harvest.demo_site import DEMO_LABELS
from harvest.images.exif import read_exif
from harvest.storage import make_s3_client

REPO = Path(__file__).resolve().parents[2]
#: the whole DAG with the real classifier: Airflow's DB set-up and TensorFlow's start take most of it
DAG_TIME_LIMIT = 300

#: private EXIF values written into the cat photo; none may be published
ARTIST = "Artist Ada Lovecat"
OWNER = "Owner Grace Whiskers"
SERIAL = "SERIAL-7741-0099"
LATITUDE, LONGITUDE = (52.0, 22.0, 31.9), (4.0, 53.0, 7.7)  # 52.3755278 N, 4.8854722 E
PRIVATE_TEXT = (ARTIST, OWNER, SERIAL, "52.37552", "4.88547")


def with_private_exif(jpeg: bytes) -> bytes:
    """The same JPEG (pixels untouched) with an EXIF block naming a place, a person and a camera."""
    exif = Image.Exif()
    exif[0x010F] = "Canon"  # public: kept
    exif[0x013B] = ARTIST
    exif.get_ifd(0x8769).update({0xA430: OWNER, 0xA431: SERIAL})
    exif.get_ifd(0x8825).update({1: "N", 2: LATITUDE, 3: "E", 4: LONGITUDE})
    payload = exif.tobytes()
    segment = b"\xff\xe1" + (len(payload) + 2).to_bytes(2, "big") + payload
    assert jpeg[:2] == b"\xff\xd8"
    return jpeg[:2] + segment + jpeg[2:]


def private_site(root: Path) -> Path:
    """The demo site, its cat photo (and the re-upload of it) carrying private EXIF."""
    demo_site.build_site(root)
    tagged = with_private_exif((root / "photos/chelsea.jpg").read_bytes())
    for name in ("photos/chelsea.jpg", "photos/chelsea-copy.jpg"):
        (root / name).write_bytes(tagged)
    return root


def every_object(client, bucket: str) -> dict[str, bytes]:
    """Every object of the bucket, staging included."""
    objects = {}
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        for item in page.get("Contents", []):
            objects[item["Key"]] = client.get_object(Bucket=bucket, Key=item["Key"])["Body"].read()
    return objects


def state_db_text(database_url: str) -> str:
    """Every row of every table of the state DB, as JSON text."""
    engine = sqlalchemy.create_engine(database_url)
    try:
        with engine.connect() as conn:
            tables = conn.execute(
                sqlalchemy.text("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
            ).scalars()
            return "\n".join(
                row
                for table in list(tables)
                for row in conn.execute(
                    sqlalchemy.text(f'SELECT row_to_json(t)::text FROM "{table}" t')
                ).scalars()
            )
    finally:
        engine.dispose()


def leaked(secret: str, content: str | bytes) -> str:
    """The text around the first occurrence of ``secret`` (masked), or "" when there is none."""
    text = content if isinstance(content, str) else content.decode("utf-8", "replace")
    at = text.find(secret)
    return "" if at < 0 else text[max(at - 300, 0) : at + len(secret) + 100].replace(secret, "<SECRET>")


def files_under(root: Path) -> dict[str, bytes]:
    return {str(path.relative_to(root)): path.read_bytes() for path in root.rglob("*") if path.is_file()}


def test_secrets_stay_in_their_connections_and_private_exif_is_never_published(
    postgres_url, s3, bucket, tmp_path
):
    s3_secret = f"s3-secret-{uuid.uuid4().hex}"
    db_password = f"pg-password-{uuid.uuid4().hex}"
    metadata_key = Fernet.generate_key().decode()
    secrets = {"S3 secret key": s3_secret, "state DB password": db_password, "EXIF key": metadata_key}

    root = private_site(tmp_path / "site")
    home = tmp_path / "home"
    capture = tmp_path / "all-log-records.txt"
    # Postgres here trusts loopback connections, so the password is carried but not checked
    db_url = postgres_url.replace("postgresql+psycopg2://postgres@", f"postgresql://postgres:{db_password}@")
    aws = {
        "conn_type": "aws",
        "login": "harvest-test-access-key",
        "password": s3_secret,
        "extra": {"endpoint_url": s3.endpoint_url, "region_name": "us-east-1"},
    }
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "HARVEST_", "AWS_"))}
    env.update(
        AIRFLOW_HOME=str(home / "airflow"),
        AIRFLOW__CORE__DAGS_FOLDER=str(REPO / "dags"),
        AIRFLOW__CORE__PLUGINS_FOLDER=str(REPO / "plugins"),
        AIRFLOW__CORE__LOAD_EXAMPLES="False",
        # Airflow's own output at its production level: at DEBUG, Airflow 3.3.2's task supervisor prints
        # the body of every MaskSecret request, i.e. each connection password it is asked to mask (the
        # README says to keep DEBUG off in production). Every stdlib log record, DEBUG included, of
        # every logger (the harvester's, boto's, SQLAlchemy's, Airflow's) is captured all the same.
        AIRFLOW__LOGGING__LOGGING_LEVEL="INFO",
        AIRFLOW_CONN_AWS_DEFAULT=json.dumps(aws),
        AIRFLOW_CONN_HARVEST_DB=db_url,
        AIRFLOW_CONN_HARVEST_METADATA_KEY=json.dumps({"conn_type": "generic", "password": metadata_key}),
        HARVEST_HOME=str(home),
        HARVEST_ALLOW_PRIVATE_NETWORKS="1",
        HARVEST_EXPORTS="all",
        HARVEST_SHARDS="2",
        HARVEST_MIN_SHARDS="2",
        # no credentials from anywhere but the connection: no files, no instance metadata
        AWS_CONFIG_FILE=str(tmp_path / "no-aws-config"),
        AWS_SHARED_CREDENTIALS_FILE=str(tmp_path / "no-aws-credentials"),
        AWS_EC2_METADATA_DISABLED="true",
        PYTHONPATH=os.pathsep.join([str(REPO / "plugins"), os.environ.get("PYTHONPATH", "")]),
    )
    with demo_site.serve(root) as base:
        result = subprocess.run(
            [
                sys.executable,
                str(Path(__file__).with_name("dag_with_all_logs.py")),
                str(capture),
                "--",
                "--seeds",
                f"{base}/index.html",
                "--labels",
                ",".join(DEMO_LABELS),
                "--destination",
                f"s3://{bucket}/dataset",
                "--summary-json",
                str(tmp_path / "summary.json"),
            ],
            env=env,
            capture_output=True,
            text=True,
            timeout=DAG_TIME_LIMIT,
        )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    objects = every_object(make_s3_client(s3), bucket)

    # the run used the connections: the dataset is in the bucket, the state in the connection's DB
    manifest_key = next(key for key in objects if key.startswith("dataset/manifests/manual__"))
    assert "dataset/manifests/dataset.parquet" in objects and "dataset/README.md" in objects
    state = state_db_text(postgres_url)
    assert "download shard" in result.stdout + result.stderr and '"stage": "publish"' in state
    records = capture.read_text(encoding="utf-8")
    assert records.count("\nDEBUG ") > 100 and "DEBUG botocore" in records  # the capture saw everything

    # the secrets: in no log line, log file, Airflow or harvest file, state DB row or published object
    places = {
        "stdout": result.stdout,
        "stderr": result.stderr,
        "every log record": records,
        "the state DB": state,
        **{f"file {name}": data for name, data in files_under(home).items()},
        **{f"object {key}": data for key, data in objects.items()},
    }
    assert any(name.startswith("file airflow/airflow.db") for name in places)
    print(
        f"secrets: searched {records.count(chr(10))} log records, {len(result.stdout) + len(result.stderr)} "
        f"bytes of output, files {sorted(n[5:] for n in places if n.startswith('file '))}, {state.count(chr(10)) + 1} "
        f"state DB rows and {len(objects)} objects"
    )
    for label, secret in secrets.items():
        for place, content in places.items():
            assert not leaked(secret, content), f"the {label} appears in {place}: {leaked(secret, content)}"

    # private EXIF: the published cat is a copy without it, the rest of its EXIF and pixels kept
    cat = sha256_file(root / "photos/chelsea.jpg")
    rows = [json.loads(line) for line in objects[manifest_key].decode().splitlines()]
    assert sorted(row["label"] for row in rows) == sorted(EXPECTED_KEPT.values())
    [cat_row] = [row for row in rows if row["label"] == "egyptian_cat"]
    published_cat = objects[f"dataset/images/egyptian_cat/{cat_row['sha256']}.jpg"]
    assert cat_row["sha256"] != cat  # the stripped copy, not the download
    with Image.open(io.BytesIO(published_cat)) as image, Image.open(root / "photos/chelsea.jpg") as original:
        public, private, _ = read_exif(image)
        assert private == {} and public["make"] == "Canon"
        assert image.getexif().get_ifd(0x8825) == {}
        assert image.tobytes() == original.tobytes()
    parquet = pq.read_table(io.BytesIO(objects["dataset/manifests/dataset.parquet"])).to_pylist()
    published = {
        key: data
        for key, data in objects.items()
        if key.startswith("dataset/") and not key.startswith("dataset/_staging/")
    }
    published["dataset/manifests/dataset.parquet"] = json.dumps(parquet, default=str).encode()
    assert any(key.startswith("dataset/webdataset/") for key in published)
    for key, data in published.items():
        for value in PRIVATE_TEXT:
            assert value.encode() not in data, f"{value!r} is published in {key}"
