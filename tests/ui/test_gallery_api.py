"""The gallery's JSON API and thumbnails over a state DB that real pipeline runs wrote.

Expectations come from the demo site's known photos and from the publish stage's own output (its
manifest and its keep decision), so the gallery is checked against what the pipeline really did.
"""

from __future__ import annotations

import io
import json
import shutil
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from fastapi.testclient import TestClient
from helpers import EXPECTED_KEPT
from PIL import Image

from harvest.dataset.layout import manifest_key
from harvest.demo_site import DEMO_LABELS
from harvest.model.labels import resolve_labels
from harvest.model.registry import model_key
from harvest.settings.config import build_config
from harvest.stages.publish import select_kept
from harvest_ui.app import create_app
from harvest_ui.gallery import STATUSES, Item, one_card_per_image
from harvest_ui.settings import THUMBNAIL_SIZE

from .conftest import ESPRESSO_THRESHOLD, RUN_ALL_LABELS, RUN_ESPRESSO


@pytest.fixture
def client(harvested):
    with TestClient(create_app(harvested.settings())) as client:
        yield client


def _items(client, **params) -> list[dict]:
    """Items of every status (skipped and failed are left out unless asked for)."""
    response = client.get("/api/items", params={"limit": 1000, "status": ",".join(STATUSES), **params})
    assert response.status_code == 200, response.text
    return response.json()["items"]


def _by_path(items: list[dict], base: str) -> dict[str, dict]:
    return {item["url"].removeprefix(base + "/"): item for item in items}


def _manifest(harvested, run_id: str) -> list[dict]:
    path = harvested.home / "dataset" / manifest_key(run_id)
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_statuses_match_what_the_run_did(client, harvested):
    items = _items(client, run=RUN_ALL_LABELS)
    by_path = _by_path(items, harvested.site)
    kept = {path: item["label"] for path, item in by_path.items() if item["status"] == "kept"}
    assert kept == EXPECTED_KEPT
    assert {(row["url"], row["label"]) for row in _manifest(harvested, RUN_ALL_LABELS)} == {
        (item["url"], item["label"]) for item in items if item["status"] == "kept"
    }
    assert by_path["photos/chelsea-copy.jpg"]["status"] == "duplicate"
    assert by_path["photos/chelsea-copy.jpg"]["duplicate_of"] == f"{harvested.site}/photos/chelsea.jpg"
    assert by_path["photos/missing.jpg"]["status"] == "failed"
    assert "HTTP 404" in by_path["photos/missing.jpg"]["reason"]
    assert by_path["photos/broken.jpg"]["status"] == "skipped"
    assert by_path["static/pixel.gif"]["status"] == "skipped"
    for item in items:
        if item["status"] == "kept":
            assert item["score"] >= item["threshold"] and item["published"]
            assert item["top"] and item["width"] >= 64 and item["sha256"]
        if item["status"] == "rejected":
            assert item["score"] is None or item["score"] < item["threshold"]
            assert item["reason"]


def test_the_second_run_rejects_what_its_threshold_does_not_reach(client, harvested):
    items = _items(client, run=RUN_ESPRESSO)
    assert {item["domain"] for item in items} == {"localhost"}
    assert _manifest(harvested, RUN_ESPRESSO) == []
    espresso = [item for item in items if item["label"] == "espresso"]
    assert len(espresso) == 1
    assert espresso[0]["status"] == "rejected" and espresso[0]["threshold"] == ESPRESSO_THRESHOLD
    assert espresso[0]["score"] < ESPRESSO_THRESHOLD
    assert not [item for item in items if item["status"] == "kept"]
    # other photos have no target label in this run
    assert {item["label"] for item in items if item["status"] in ("kept", "rejected")} <= {"espresso", None}


def test_filters_by_label_domain_run_and_status(client, harvested):
    everything = client.get("/api/items", params={"limit": 1000, "status": ",".join(STATUSES)}).json()
    assert everything["total"] == sum(everything["counts"].values())
    assert set(everything["domains"]) == {"127.0.0.1", "localhost"}
    assert set(everything["labels"]) == {"egyptian_cat", "espresso", "palace", "daisy"}
    runs = {item["run_id"] for item in everything["items"]}
    assert runs == {RUN_ALL_LABELS, RUN_ESPRESSO}

    espresso = _items(client, label="espresso")
    assert {item["run_id"] for item in espresso} == {RUN_ALL_LABELS, RUN_ESPRESSO}
    assert {item["status"] for item in espresso} == {"kept", "rejected"}

    localhost = _items(client, domain="localhost")
    assert localhost and {item["run_id"] for item in localhost} == {RUN_ESPRESSO}

    chosen = client.get("/api/items", params={"status": "kept,duplicate", "run": RUN_ALL_LABELS}).json()
    assert {item["status"] for item in chosen["items"]} == {"kept", "duplicate"}
    assert (
        chosen["total"] == chosen["counts"]["kept"] + chosen["counts"]["duplicate"] == len(EXPECTED_KEPT) + 1
    )

    page = client.get("/api/items", params={"limit": 3, "offset": 3, "status": ",".join(STATUSES)}).json()
    assert [i["id"] for i in page["items"]] == [i["id"] for i in everything["items"][3:6]]

    response = client.get("/api/items", params={"status": "placeholder"})
    assert response.status_code == 422 and "unknown status" in response.text


@pytest.mark.parametrize("threshold", [0.0, 0.2, 0.35, 0.5, 0.96])
def test_scores_predict_what_publish_would_keep_at_another_threshold(client, harvested, threshold):
    """The slider counts ``score >= t``; the publish stage's own selection at t must agree."""
    scores = client.get("/api/scores", params={"run": RUN_ALL_LABELS}).json()
    assert scores["thresholds"] == [0.2]
    would_keep = sum(1 for s in scores["scores"] if s["score"] is not None and s["score"] >= threshold)
    cfg = build_config(
        {"seeds": [f"{harvested.site}/index.html"], "labels": list(DEMO_LABELS), "threshold": threshold},
        RUN_ALL_LABELS,
        env={"HARVEST_HOME": str(harvested.home)},
        database_url=harvested.database_url,
    )
    kept, _ = select_kept(
        cfg, resolve_labels(cfg.labels, cfg.models_dir), model_key(cfg.model, cfg.models_dir)
    )
    assert would_keep == len(kept)


def test_item_metadata(client, harvested):
    items = _by_path(_items(client, run=RUN_ALL_LABELS), harvested.site)
    coffee = client.get(f"/api/items/{items['photos/coffee-large.jpg']['id']}").json()
    assert coffee["alt"] == "An espresso on a saucer"
    assert coffee["page_url"] == f"{harvested.site}/blog/coffee.html"
    assert coffee["top"][0]["name"] == "espresso" and coffee["label"] == "espresso"
    assert coffee["published"] == [f"{harvested.home / 'dataset'}/images/espresso/{coffee['sha256']}.jpg"]
    assert client.get("/api/items/999999").status_code == 404


def test_domain_stats(client, harvested):
    rows = {row["domain"]: row for row in client.get("/api/stats").json()["domains"]}
    run1 = _items(client, run=RUN_ALL_LABELS)
    loopback = rows["127.0.0.1"]
    assert loopback["candidates"] == len(run1)
    assert loopback["kept"] == len(EXPECTED_KEPT)
    assert loopback["failed"] == sum(1 for i in run1 if i["status"] == "failed")
    finished = loopback["downloaded"] + loopback["failed"] + loopback["skipped"]
    assert loopback["success_rate"] == round(loopback["downloaded"] / finished, 4)
    assert loopback["reasons"]["HTTP 404"] == 1
    assert "not a decodable image" in loopback["reasons"]
    assert sum(loopback["reasons"].values()) == loopback["failed"] + loopback["skipped"]
    assert rows["localhost"]["kept"] == 0
    only_espresso = client.get("/api/stats", params={"label": "espresso"}).json()["domains"]
    assert {row["domain"]: row["candidates"] for row in only_espresso} == {"127.0.0.1": 1, "localhost": 1}


def test_thumbnails_are_small_jpegs_cached_by_sha256(client, harvested):
    settings = harvested.settings()
    kept = [i for i in _items(client, run=RUN_ALL_LABELS) if i["status"] == "kept"]
    for item in kept:
        response = client.get(f"/thumbnails/{item['sha256']}.jpg")
        assert response.status_code == 200, response.text
        assert response.headers["content-type"] == "image/jpeg"
        assert response.headers["cache-control"] == "private, max-age=3600"  # per user, never shared
        with Image.open(io.BytesIO(response.content)) as thumb:
            assert max(thumb.size) == min(THUMBNAIL_SIZE, max(item["width"], item["height"]))
            assert abs(thumb.size[0] / thumb.size[1] - item["width"] / item["height"]) < 0.02
        cached = settings.thumbnails_dir / str(THUMBNAIL_SIZE) / item["sha256"][:2] / f"{item['sha256']}.jpg"
        assert cached.read_bytes() == response.content
    assert client.get(f"/thumbnails/{'0' * 64}.jpg").status_code == 404
    assert client.get("/thumbnails/not-a-digest.jpg").status_code == 404


def test_thumbnail_from_the_published_copy_when_staging_is_gone(harvested, tmp_path):
    """Staging may be cleaned up after publishing; kept images are still shown from the destination."""
    settings = harvested.settings(HARVEST_HOME=str(tmp_path / "other-home"))
    staging = harvested.home / "staging"
    moved = tmp_path / "staging-away"
    with TestClient(create_app(settings)) as client:
        items = _items(client, run=RUN_ALL_LABELS)
        kept = next(i for i in items if i["status"] == "kept")
        rejected = next(i for i in items if i["status"] == "rejected" and i["sha256"])
        shutil.move(staging, moved)
        try:
            assert client.get(f"/thumbnails/{kept['sha256']}.jpg").status_code == 200
            missing = client.get(f"/thumbnails/{rejected['sha256']}.jpg")
            assert missing.status_code == 404 and "bytes not found" in missing.text
            assert str(staging) in missing.text
        finally:
            shutil.move(moved, staging)


class _AirflowApi(BaseHTTPRequestHandler):
    """Answers POST /api/v2/dags/{dag_id}/dagRuns like Airflow's REST API and records the requests."""

    known_dags = {"image_rethreshold", "custom_rethreshold"}
    requests: list[dict] = []

    def do_POST(self) -> None:  # noqa: N802 - the handler's naming
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.requests.append({"path": self.path, "auth": self.headers.get("Authorization"), "body": body})
        dag_id = self.path.split("/")[4]
        if self.headers.get("Authorization") != "Bearer user-token":
            self._reply(401, {"detail": "Not authenticated"})
        elif dag_id not in self.known_dags:
            self._reply(404, {"detail": f"The Dag with dag_id: `{dag_id}` was not found"})
        else:
            self._reply(200, {"dag_run_id": "manual__2026-11-23T12:00:00+00:00", "state": "queued"})

    def _reply(self, status: int, data: dict) -> None:
        payload = json.dumps(data).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def airflow_api():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _AirflowApi)
    _AirflowApi.requests = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_rethreshold_triggers_the_dag_as_the_logged_in_user(harvested, airflow_api):
    settings = harvested.settings(HARVEST_AIRFLOW_API_URL=airflow_api)
    with TestClient(create_app(settings), cookies={"_token": "user-token"}) as client:
        body = {"threshold": 0.35, "run_id": RUN_ALL_LABELS, "labels": ["espresso"]}
        response = client.post("/api/rethreshold", json=body)
        assert response.status_code == 200, response.text
        assert response.json()["dag_run_id"] == "manual__2026-11-23T12:00:00+00:00"
        sent = _AirflowApi.requests[-1]
        assert sent["path"] == "/api/v2/dags/image_rethreshold/dagRuns"
        assert sent["auth"] == "Bearer user-token"
        assert sent["body"]["conf"] == {
            "threshold": 0.35,
            "harvest_run_id": RUN_ALL_LABELS,
            "labels": ["espresso"],
        }
        assert sent["body"]["logical_date"] is None

        assert client.post("/api/rethreshold", json={"threshold": 1.5}).status_code == 422

    custom = harvested.settings(
        HARVEST_AIRFLOW_API_URL=airflow_api, HARVEST_RETHRESHOLD_DAG="custom_rethreshold"
    )
    with TestClient(create_app(custom), cookies={"_token": "user-token"}) as client:
        assert client.post("/api/rethreshold", json={"threshold": 0.3}).status_code == 200
        assert _AirflowApi.requests[-1]["path"] == "/api/v2/dags/custom_rethreshold/dagRuns"

    missing = harvested.settings(HARVEST_AIRFLOW_API_URL=airflow_api, HARVEST_RETHRESHOLD_DAG="nope")
    with TestClient(create_app(missing), cookies={"_token": "user-token"}) as client:
        response = client.post("/api/rethreshold", json={"threshold": 0.3})
        assert response.status_code == 404 and "HARVEST_RETHRESHOLD_DAG" in response.json()["detail"]

    with TestClient(create_app(settings)) as anonymous:
        response = anonymous.post("/api/rethreshold", json={"threshold": 0.3})
        assert response.status_code == 403 and "not allowed" in response.json()["detail"]


def test_rethreshold_reports_an_unreachable_airflow_with_its_url(harvested):
    from conftest import free_port

    url = f"http://127.0.0.1:{free_port()}"
    with TestClient(create_app(harvested.settings(HARVEST_AIRFLOW_API_URL=url))) as client:
        response = client.post("/api/rethreshold", json={"threshold": 0.3})
    assert response.status_code == 502
    assert f"{url}/api/v2/dags/image_rethreshold/dagRuns" in response.json()["detail"]
    assert "not reachable" in response.json()["detail"]


def test_gallery_page_and_static_files(client):
    page = client.get("/")
    assert page.status_code == 200 and 'src="static/gallery.js"' in page.text
    assert client.get("/static/gallery.js").status_code == 200
    assert client.get("/static/gallery.css").status_code == 200


def test_an_empty_state_db_shows_an_empty_gallery(tmp_path):
    """Before the first harvest the tables do not exist yet; the gallery shows nothing instead of failing."""
    from harvest_ui.settings import load_settings

    url = f"sqlite:///{tmp_path / 'empty.db'}"
    settings = load_settings({"HARVEST_DATABASE_URL": url, "HARVEST_HOME": str(tmp_path)}, use_airflow=False)
    with TestClient(create_app(settings)) as client:
        assert client.get("/api/runs").json()["runs"] == []
        assert client.get("/api/items").json()["total"] == 0
        assert client.get("/api/stats").json()["domains"] == []
        assert client.get("/api/scores").json()["scores"] == []


def test_settings_follow_the_dags_precedence(tmp_path, postgres_url):
    from harvest_ui.settings import DEFAULT_RETHRESHOLD_DAG, load_settings

    home = tmp_path / "home"
    default = load_settings({"HARVEST_HOME": str(home)}, use_airflow=False)
    assert default.database_url == f"sqlite:///{home / 'state.db'}"
    assert default.thumbnails_dir == home / "thumbnails"
    assert default.rethreshold_dag == DEFAULT_RETHRESHOLD_DAG and default.airflow_api_url == ""
    explicit = load_settings(
        {
            "HARVEST_HOME": str(home),
            "HARVEST_DATABASE_URL": postgres_url.replace("postgresql+psycopg2://", "postgres://"),
            "HARVEST_RETHRESHOLD_DAG": "my_rethreshold",
            "HARVEST_AIRFLOW_API_URL": "http://airflow.internal:8080/",
        },
        use_airflow=False,
    )
    assert explicit.database_url == postgres_url
    assert explicit.rethreshold_dag == "my_rethreshold"
    assert explicit.airflow_api_url == "http://airflow.internal:8080"


def test_thumbnail_from_an_s3_staging_area(tmp_path, s3, bucket, site_root):
    """Workers on several machines stage bytes in S3; the gallery reads them from there."""
    import hashlib

    from harvest.state.db import dispose_engines, migrate, session_scope
    from harvest.state.models import Image as ImageRow
    from harvest.storage import open_store
    from harvest_ui.settings import GallerySettings
    from harvest_ui.thumbnails import ensure_thumbnail

    data = (site_root / "photos" / "china.jpg").read_bytes()
    sha = hashlib.sha256(data).hexdigest()
    staging = f"s3://{bucket}/_staging"
    open_store(staging, s3).put(f"images/{sha}.jpg", data, "image/jpeg")
    url = f"sqlite:///{tmp_path / 'state.db'}"
    migrate(url)
    with session_scope(url) as session:
        session.add(
            ImageRow(
                sha256=sha,
                staging=staging,
                storage_key=f"images/{sha}.jpg",
                format="JPEG",
                mime_type="image/jpeg",
                width=640,
                height=427,
                size_bytes=len(data),
                first_url="http://example.org/china.jpg",
            )
        )
    settings = GallerySettings(
        database_url=url, s3=s3, thumbnails_dir=tmp_path / "thumbs", models_dir=tmp_path
    )
    try:
        with TestClient(create_app(settings)) as client:
            response = client.get(f"/thumbnails/{sha}.jpg")
        assert response.status_code == 200, response.text
        with Image.open(io.BytesIO(response.content)) as thumb:
            assert thumb.size == (THUMBNAIL_SIZE, round(THUMBNAIL_SIZE * 427 / 640))
        # the cached file is what a second call returns, without S3
        assert (
            ensure_thumbnail(url, settings.thumbnails_dir, sha, THUMBNAIL_SIZE, None).read_bytes()
            == response.content
        )
    finally:
        dispose_engines()


def test_skipped_and_failed_are_counts_unless_asked_for(client, harvested):
    default = client.get("/api/items", params={"limit": 1000}).json()
    assert not {item["status"] for item in default["items"]} & {"skipped", "failed"}
    assert default["collapsed"]["failed"] == default["counts"]["failed"] >= 1
    assert default["total"] == sum(default["counts"].values()) - sum(default["collapsed"].values())
    failed = client.get("/api/items", params={"limit": 1000, "status": "failed"}).json()
    assert failed["total"] == default["counts"]["failed"] and failed["collapsed"] == {}


def test_runs_are_named_as_airflow_names_them(client, harvested):
    names = {run["run_id"]: run["name"] for run in client.get("/api/runs").json()["runs"]}
    assert names == {RUN_ALL_LABELS: RUN_ALL_LABELS, RUN_ESPRESSO: RUN_ESPRESSO}
    assert {item["run_name"] for item in _items(client)} == {RUN_ALL_LABELS, RUN_ESPRESSO}


def _item(run_name: str, status: str, url: str = "http://a.example/cat.jpg", sha256: str | None = "c" * 64):
    return Item(
        1,
        "interval__x",
        url,
        "http://a.example/",
        "a.example",
        "img",
        None,
        None,
        status,
        None,
        1,
        sha256,
        run_name=run_name,
    )


def test_one_card_per_image_lists_its_runs():
    """A photo kept by three runs (a nightly, a backfill, a manual re-run) is one kept card, not three."""
    runs = ["scheduled__2026-11-01T00:00:00+00:00", "backfill__2026-11-02T00:00:00+00:00", "manual__x"]
    items = [
        _item(runs[0], "kept"),
        _item(runs[1], "rejected"),
        _item(runs[2], "kept"),
        _item(runs[0], "duplicate", url="http://a.example/copy.jpg"),
        _item(runs[1], "failed", url="http://a.example/gone.jpg", sha256=None),
        _item(runs[2], "failed", url="http://a.example/gone.jpg", sha256=None),
    ]
    cards = one_card_per_image(items)
    by_url = {card.url: card for card in cards}
    assert len(cards) == 3
    assert by_url["http://a.example/cat.jpg"].status == "kept"
    assert by_url["http://a.example/cat.jpg"].runs == runs
    assert by_url["http://a.example/gone.jpg"].runs == runs[1:]
    assert items[0].runs == []  # the cached items are not changed
