"""``publish_format: jpeg``: every published image also gets an RGB JPEG training copy, the originals
kept as they are; a withdrawn image loses its copy too. Real photos served as PNG with transparency,
GIF and WebP by a loopback server, downloaded and published by the real stages on Postgres."""

from __future__ import annotations

import hashlib

import pytest
from fixed_server import Response, serve
from PIL import Image
from skimage import data
from sqlalchemy import select
from stage_setup import encode, make_config, record_answers, seed_candidates

from harvest.images.variants import TRAINING_JPEG_QUALITY
from harvest.settings.config import ConfigError, build_config
from harvest.stages.download import run_download
from harvest.stages.publish import run_publish
from harvest.state.db import session_scope
from harvest.state.models import ImageUrl


def _transparent_png() -> bytes:
    """The astronaut photo with its left half fully transparent."""
    photo = Image.fromarray(data.astronaut()).resize((256, 256)).convert("RGBA")
    alpha = Image.new("L", photo.size, 255)
    alpha.paste(0, (0, 0, 128, 256))
    photo.putalpha(alpha)
    return encode(photo, "PNG")


def _sha_of(cfg, url: str) -> str:
    with session_scope(cfg.database_url) as session:
        return session.scalars(select(ImageUrl.sha256).where(ImageUrl.url == url)).one()


def test_non_jpeg_originals_get_an_rgb_jpeg_training_copy(postgres_url, tmp_path):
    files = {
        "/astronaut.png": _transparent_png(),
        "/coffee.gif": encode(Image.fromarray(data.coffee()).resize((200, 133)).convert("P"), "GIF"),
        "/cat.webp": encode(Image.fromarray(data.chelsea()), "WEBP", quality=85),
    }
    destination = tmp_path / "dataset"
    with serve({path: Response(body) for path, body in files.items()}) as base:
        cfg = make_config(postgres_url, "manual__jpeg", str(destination)).with_(publish_format="jpeg")
        seed_candidates(cfg, [base + path for path in files])
        run_download(cfg, 0)
        shas = {path: _sha_of(cfg, base + path) for path in files}
        record_answers(
            cfg,
            {
                shas["/astronaut.png"]: "egyptian_cat",
                shas["/coffee.gif"]: "espresso",
                shas["/cat.webp"]: "egyptian_cat",
            },
        )
        report = run_publish(cfg)
    assert report.done == 3
    originals = sorted(p for p in (destination / "images").rglob("*") if p.suffix != ".jsonl" and p.is_file())
    assert sorted(p.suffix for p in originals) == [".gif", ".png", ".webp"]
    for original in originals:
        assert hashlib.sha256(original.read_bytes()).hexdigest() == original.stem  # kept as published
        copy = destination / "training" / original.parent.name / f"{original.stem}.jpg"
        with Image.open(original) as source, Image.open(copy) as jpeg:
            assert jpeg.format == "JPEG" and jpeg.mode == "RGB" and jpeg.size == source.size
            if original.suffix == ".png":  # transparency flattened onto white
                assert min(jpeg.getpixel((10, 128))) >= 250 and jpeg.getpixel((200, 128)) != (255, 255, 255)
    assert TRAINING_JPEG_QUALITY == 90


def test_a_withdrawn_image_loses_its_training_copy(postgres_url, tmp_path):
    cat = Image.fromarray(data.chelsea())
    small = encode(cat.resize((int(cat.width * 0.9), int(cat.height * 0.9))), "JPEG", quality=90)
    large = encode(cat, "JPEG", quality=90)
    destination = tmp_path / "dataset"
    with serve({"/small.jpg": Response(small), "/large.jpg": Response(large)}) as base:
        first = make_config(postgres_url, "manual__first", str(destination)).with_(publish_format="jpeg")
        seed_candidates(first, [base + "/small.jpg"])
        run_download(first, 0)
        record_answers(first, {_sha_of(first, base + "/small.jpg"): "egyptian_cat"})
        assert run_publish(first).done == 1
        (small_copy,) = (destination / "training").rglob("*.jpg")

        second = make_config(postgres_url, "manual__second", str(destination)).with_(publish_format="jpeg")
        seed_candidates(second, [base + "/large.jpg"])
        run_download(second, 0)
        large_sha = _sha_of(second, base + "/large.jpg")
        record_answers(second, {large_sha: "egyptian_cat"})
        assert run_publish(second).extra["withdrawn"] == 1
    assert not small_copy.exists()
    assert [p.name for p in (destination / "training").rglob("*.jpg")] == [f"{large_sha}.jpg"]


def test_publish_format_is_checked():
    params = {"seeds": ["http://127.0.0.1/"], "labels": ["espresso"], "publish_format": "png"}
    with pytest.raises(ConfigError, match=r"publish_format must be one of \['original', 'jpeg'\], got 'png'"):
        build_config(params, "manual__bad")
    assert build_config({**params, "publish_format": "JPEG"}, "manual__ok").publish_format == "jpeg"
    assert build_config({**params, "publish_format": ""}, "manual__ok").publish_format == "original"
