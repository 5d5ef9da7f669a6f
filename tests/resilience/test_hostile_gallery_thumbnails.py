"""Thumbnails in the Airflow API server: a small file with huge pixels must not blow up the server.

The gallery's thumbnail route used to decode the whole image, then copy it several times (upright,
RGB on white, resampled): one 1 MB PNG of 64 megapixels took the server 1.4 GB. Now the cost of the
decode is read from the header first: an image too costly to preview gets a 404 with the reason (the
grid shows a placeholder), JPEGs are decoded at reduced scale, and nothing after the decode copies
the whole image. Each request is made through the real FastAPI app, in a process of its own whose
peak memory the kernel reports.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import harvest
from harvest.state.db import dispose_engines, migrate, session_scope
from harvest.state.models import Image as ImageRow

from .test_hostile_decode_memory import rgba_png

MB = 1024 * 1024
#: a thumbnail request through the gallery app, in a fresh process: its status, headers, body size
#: and how far it raised the process's peak memory
REQUEST = """
import json, pathlib, sys
from fastapi.testclient import TestClient
from harvest_ui.app import create_app
from harvest_ui.settings import GallerySettings

def peak():
    return next(int(l.split()[1]) * 1024 for l in pathlib.Path("/proc/self/status").read_text().splitlines() if l.startswith("VmHWM"))

database_url, thumbnails, sha = sys.argv[1:4]
settings = GallerySettings(database_url=database_url, s3=None, thumbnails_dir=pathlib.Path(thumbnails), models_dir=pathlib.Path(thumbnails))
with TestClient(create_app(settings)) as client:
    client.get("/api/runs")  # the app, the DB connection and the JSON encoder warmed up
    before = peak()
    response = client.get(f"/thumbnails/{sha}.jpg")
    grew = peak() - before
print(json.dumps({"status": response.status_code, "grew": grew, "cache": response.headers.get("cache-control"),
                  "body": response.content.hex() if response.status_code == 200 else response.text}))
"""


@pytest.fixture
def gallery_db(tmp_path):
    """A state DB and staging folder; ``add(data, fmt)`` stages an image and records its row."""
    url = f"sqlite:///{tmp_path / 'state.db'}"
    migrate(url)
    staging = tmp_path / "staging"

    def add(data: bytes, fmt: str, size: tuple[int, int]) -> str:
        sha = hashlib.sha256(data).hexdigest()
        key = f"images/{sha[:2]}/{sha}.{fmt.lower()}"
        (staging / key).parent.mkdir(parents=True, exist_ok=True)
        (staging / key).write_bytes(data)
        with session_scope(url) as session:
            session.add(
                ImageRow(
                    sha256=sha,
                    staging=str(staging),
                    storage_key=key,
                    format=fmt,
                    mime_type=f"image/{fmt.lower()}",
                    width=size[0],
                    height=size[1],
                    size_bytes=len(data),
                    first_url=f"http://example.org/{sha}",
                )
            )
        return sha

    yield url, add
    dispose_engines()


def request_thumbnail(database_url: str, thumbnails: Path, sha: str) -> dict:
    plugins = str(Path(harvest.__file__).resolve().parents[1])
    out = subprocess.run(
        [sys.executable, "-c", REQUEST, database_url, str(thumbnails), sha],
        env={**os.environ, "PYTHONPATH": plugins},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_a_huge_png_gets_no_thumbnail_and_costs_the_server_nothing(gallery_db, tmp_path):
    url, add = gallery_db
    (png,) = rgba_png(7999, 1)  # 64 megapixels in ~1 MB
    sha = add(png, "PNG", (7999, 7999))
    answer = request_thumbnail(url, tmp_path / "thumbs", sha)
    print(f"7999x7999 RGBA PNG thumbnail: HTTP {answer['status']}, server peak +{answer['grew'] / MB:.0f} MB")
    assert answer["grew"] < 32 * MB
    assert answer["status"] == 404
    assert "too large to preview: a 7999x7999 PNG takes 260 MB to decode" in answer["body"]
    assert not (tmp_path / "thumbs").exists() or not any((tmp_path / "thumbs").rglob("*.jpg"))


def _photo(size: tuple[int, int]) -> Image.Image:
    """A smooth picture with some noise, so that encoders cannot make it trivially small."""
    width, height = size
    rng = np.random.default_rng(3)
    x = np.linspace(0, 255, width, dtype=np.float32)[None, :]
    y = np.linspace(0, 255, height, dtype=np.float32)[:, None]
    pixels = np.stack([x + 0 * y, y + 0 * x, (x + y) / 2, 255 + 0 * x * y], axis=-1)
    pixels += rng.normal(0, 8, pixels.shape)
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "RGBA")


@pytest.mark.parametrize(
    ("name", "fmt", "mode", "size"),
    [
        # 12 megapixels RGBA, a 30 MB file: 46 MB decoded, and the old code added ~5 copies of it
        ("large.png", "PNG", "RGBA", (4000, 3000)),
        # 48 megapixels, baseline: decoded at 1/8 scale
        ("huge.jpg", "JPEG", "RGB", (8000, 6000)),
    ],
)
def test_a_large_image_is_previewed_within_its_decode_cost(gallery_db, tmp_path, name, fmt, mode, size):
    """The server's peak grows by the decode's reserved cost and the file's bytes, no more."""
    url, add = gallery_db
    out = io.BytesIO()
    _photo(size).convert(mode).save(out, fmt)
    data = out.getvalue()
    sha = add(data, fmt, size)
    answer = request_thumbnail(url, tmp_path / "thumbs", sha)
    print(
        f"{name} {size[0]}x{size[1]} thumbnail: HTTP {answer['status']}, server peak +{answer['grew'] / MB:.0f} MB"
    )
    assert answer["status"] == 200, answer["body"]
    assert answer["cache"] == "private, max-age=3600"
    with Image.open(io.BytesIO(bytes.fromhex(answer["body"]))) as thumb:
        assert thumb.format == "JPEG" and thumb.size == (256, 192)

    from harvest.images.decoding import declared_cost, declared_size

    cost = declared_cost(declared_size(data, fmt), draft_side=512)
    assert answer["grew"] < cost + len(data) + 16 * MB, (cost, len(data))


def test_the_grid_shows_a_page_of_48_at_a_time(tmp_path):
    """A page asks for at most 48 thumbnails; the pager walks through the rest."""
    from conftest import free_port
    from ui.browser import chromium, serve_app

    from harvest.settings.config import DEFAULT_MODELS_DIR
    from harvest.state.models import Candidate, Run
    from harvest_ui.app import create_app
    from harvest_ui.settings import GallerySettings

    url = f"sqlite:///{tmp_path / 'state.db'}"
    migrate(url)
    with session_scope(url) as session:
        session.add(Run(run_id="manual__many", params={"labels": ["daisy"]}))
        session.flush()
        session.add_all(
            Candidate(
                run_id="manual__many",
                url=f"http://example.org/{n}.jpg",
                page_url="http://example.org/",
                source="img",
                shard=0,
            )
            for n in range(100)
        )
    settings = GallerySettings(
        database_url=url, s3=None, thumbnails_dir=tmp_path / "thumbs", models_dir=DEFAULT_MODELS_DIR
    )
    try:
        with serve_app(create_app(settings), free_port()) as base, chromium() as browser:
            page = browser.new_page(viewport={"width": 1280, "height": 720})
            page.goto(f"{base}/")
            page.wait_for_selector("#grid .card")

            def cards() -> list[int]:
                return page.eval_on_selector_all("#grid .card", "cs => cs.map(c => Number(c.dataset.id))")

            first = cards()
            assert len(first) == 48
            assert page.text_content("#page-info") == "page 1 of 3"
            assert page.text_content("#summary") == "100 images (showing 1–48)"
            page.click("#next")
            page.wait_for_function("() => document.querySelector('#page-info').textContent === 'page 2 of 3'")
            second = cards()
            assert len(second) == 48 and not set(first) & set(second)
            page.click("#next")
            page.wait_for_function("() => document.querySelector('#page-info').textContent === 'page 3 of 3'")
            assert len(cards()) == 4 and page.is_disabled("#next")
            page.click("#prev")
            page.wait_for_function("() => document.querySelector('#page-info').textContent === 'page 2 of 3'")
            assert cards() == second
    finally:
        dispose_engines()
