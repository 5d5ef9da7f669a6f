"""Set a run up at a given stage: the state DB with a run and its candidate URLs, ready for download,
or with the classifier's answers recorded, ready for publish."""

from __future__ import annotations

import io
import os

from PIL import Image

from harvest.model.labels import resolve_labels
from harvest.model.registry import model_key
from harvest.settings.config import HarvestConfig, build_config
from harvest.state.db import insert_ignore, migrate, session_scope
from harvest.state.models import Candidate, Prediction, Run, utcnow


def make_config(database_url: str, run_id: str, destination: str, s3=None, **env: str) -> HarvestConfig:
    return build_config(
        {"seeds": ["http://127.0.0.1/"], "labels": ["espresso", "Egyptian cat"], "destination": destination},
        run_id,
        env={**os.environ, **env},
        database_url=database_url,
        s3=s3,
    )


def record_run(session, cfg: HarvestConfig) -> None:
    """A bare run row, as prepare_run would leave it, for set-ups that skip the earlier stages."""
    insert_ignore(
        session,
        Run,
        [{"run_id": cfg.run_id, "params": {}, "started_at": utcnow(), "counters": {}}],
        ["run_id"],
    )


def seed_candidates(
    cfg: HarvestConfig, urls: list[str], page_url: str = "http://127.0.0.1/page.html"
) -> None:
    """The state the extract stage leaves behind: one pending candidate per URL, all in shard 0."""
    migrate(cfg.database_url)
    with session_scope(cfg.database_url) as session:
        record_run(session, cfg)
        insert_ignore(
            session,
            Candidate,
            [
                {
                    "run_id": cfg.run_id,
                    "url": url,
                    "page_url": page_url,
                    "source": "img",
                    "alt": f"picture {index}",
                    "shard": 0,
                    "status": "pending",
                    "attempts": 0,
                }
                for index, url in enumerate(urls)
            ],
            ["run_id", "url"],
        )


def record_answers(cfg: HarvestConfig, answers: dict[str, str], score: float = 0.9) -> None:
    """What the classifier would have said: sha256 -> label folder, so only the curation rules decide."""
    targets = {t.folder: t for t in resolve_labels(cfg.labels, cfg.models_dir)}
    key = model_key(cfg.model, cfg.models_dir)
    with session_scope(cfg.database_url) as session:
        insert_ignore(
            session,
            Prediction,
            [
                {
                    "sha256": sha256,
                    "model": key,
                    "top": [{"wnid": sorted(targets[label].wnids)[0], "name": label, "score": score}],
                    "created_at": utcnow(),
                }
                for sha256, label in answers.items()
            ],
            ["sha256", "model"],
        )


def encode(image: Image.Image, fmt: str = "JPEG", **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()
