"""Placeholders ("image not available" served for many URLs of one host) and near-blank images are
never published, and a placeholder recognised only in a later run is withdrawn from the dataset.

The classifier's answers are recorded up front (stage_setup.record_answers): each picture here
would be kept for its label, so only the curation rules can hold it back.
"""

from __future__ import annotations

import numpy as np
from fixed_server import Response, serve
from helpers import manifest_rows
from PIL import Image, ImageDraw
from skimage import data
from sqlalchemy import select
from stage_setup import encode, make_config, record_answers, seed_candidates

from harvest.dataset.layout import manifest_key
from harvest.stages.download import run_download
from harvest.stages.publish import run_publish
from harvest.state.db import session_scope
from harvest.state.models import Image as ImageRow
from harvest.state.models import ImageUrl, Publication


def not_available(quality: int = 90) -> bytes:
    """A typical placeholder: textured grey card with a crossed-out frame and a caption."""
    rng = np.random.default_rng(11)
    card = Image.fromarray((rng.normal(170, 30, (240, 320, 3))).clip(0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(card)
    draw.rectangle((40, 40, 280, 200), outline=(60, 60, 60), width=6)
    draw.line((40, 40, 280, 200), fill=(60, 60, 60), width=6)
    draw.text((90, 210), "image not available", fill=(20, 20, 20))
    return encode(card, "JPEG", quality=quality)


def _published(destination) -> set[str]:
    return {p.relative_to(destination).as_posix() for p in destination.rglob("images/*/*") if p.is_file()}


def _shas(cfg) -> dict[str, str]:
    with session_scope(cfg.database_url) as session:
        return dict(session.execute(select(ImageUrl.url, ImageUrl.sha256)).all())


def test_one_host_serving_one_picture_for_twenty_urls_publishes_none(postgres_url, tmp_path):
    same, recompressed = not_available(90), not_available(80)  # same picture, two encodings
    routes = {f"/photos/{i}.jpg": Response(same if i % 2 else recompressed) for i in range(20)}
    destination = tmp_path / "dataset"
    with serve(routes) as base:
        cfg = make_config(postgres_url, "manual__placeholder", str(destination))
        seed_candidates(cfg, [base + path for path in routes])
        assert run_download(cfg, 0).done == 20
        shas = set(_shas(cfg).values())
        assert len(shas) == 2
        record_answers(cfg, dict.fromkeys(shas, "espresso"))
        report = run_publish(cfg)
    assert report.done == 0 and report.reasons["placeholder"] == 2
    assert _published(destination) == set()
    assert (destination / manifest_key(cfg.run_id)).read_bytes() == b""
    with session_scope(cfg.database_url) as session:
        reasons = {row.excluded for row in session.scalars(select(ImageRow))}
    assert reasons == {"placeholder: 20 different URLs on 127.0.0.1 serve this picture"}


def test_placeholder_first_seen_in_a_later_run_is_withdrawn(postgres_url, tmp_path):
    card = not_available()
    photo = encode(Image.fromarray(data.coffee()), "JPEG", quality=90)
    routes = {f"/img/{i}.jpg": Response(card) for i in range(12)} | {"/coffee.jpg": Response(photo)}
    destination = tmp_path / "dataset"
    with serve(routes) as base:
        first = make_config(postgres_url, "manual__early", str(destination))
        seed_candidates(first, [base + f"/img/{i}.jpg" for i in range(4)] + [base + "/coffee.jpg"])
        run_download(first, 0)
        shas = _shas(first)
        answers = {shas[base + "/img/0.jpg"]: "espresso", shas[base + "/coffee.jpg"]: "espresso"}
        record_answers(first, answers)
        assert run_publish(first).done == 2  # 4 URLs: not yet recognisable as a placeholder

        later = make_config(postgres_url, "manual__later", str(destination))
        seed_candidates(later, [base + f"/img/{i}.jpg" for i in range(4, 12)])
        run_download(later, 0)
        report = run_publish(later)
    card_sha, coffee_sha = shas[base + "/img/0.jpg"], shas[base + "/coffee.jpg"]
    assert report.extra["withdrawn"] == 1 and report.reasons["placeholder"] == 1
    assert _published(destination) == {f"images/espresso/{coffee_sha}.jpg"}
    assert manifest_rows((destination / manifest_key(later.run_id)).read_bytes()) == []
    with session_scope(postgres_url) as session:
        withdrawn = session.scalars(select(Publication).where(Publication.sha256 == card_sha)).one()
    assert withdrawn.withdrawn_reason.startswith("placeholder: 12 different URLs")


def test_near_blank_images_are_not_published(postgres_url, tmp_path):
    rng = np.random.default_rng(3)
    flat = Image.fromarray(rng.normal(200, 0.6, (200, 300)).clip(0, 255).astype(np.uint8)).convert("RGB")
    photo = encode(Image.fromarray(data.chelsea()), "JPEG", quality=90)
    routes = {"/blank.png": Response(encode(flat, "PNG"), "image/png"), "/cat.jpg": Response(photo)}
    destination = tmp_path / "dataset"
    with serve(routes) as base:
        cfg = make_config(postgres_url, "manual__blank", str(destination))
        seed_candidates(cfg, [base + path for path in routes])
        run_download(cfg, 0)
        shas = _shas(cfg)
        record_answers(cfg, {shas[base + "/blank.png"]: "espresso", shas[base + "/cat.jpg"]: "egyptian_cat"})
        report = run_publish(cfg)
    assert report.done == 1 and report.reasons["low information"] == 1
    assert _published(destination) == {f"images/egyptian_cat/{shas[base + '/cat.jpg']}.jpg"}
    with session_scope(postgres_url) as session:
        blank = session.get(ImageRow, shas[base + "/blank.png"])
    assert blank.entropy < 2 and blank.excluded.startswith("low information (grey-level entropy")
