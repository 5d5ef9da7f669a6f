"""Run the crawl and extract stages against a loopback site and read back what they recorded."""

from __future__ import annotations

import os
from pathlib import Path

from sqlalchemy import select

from harvest.pipeline import prepare_run
from harvest.settings.config import HarvestConfig, build_config
from harvest.state.db import session_scope
from harvest.state.models import Candidate, Page


def crawl_config(seed: str, tmp_path: Path, params: dict | None = None, **env: str) -> HarvestConfig:
    environment = {**os.environ, **env}
    cfg = build_config(
        {"seeds": [seed], "labels": ["goldfish"], "destination": str(tmp_path / "out"), **(params or {})},
        f"manual__{tmp_path.name}",
        env=environment,
        database_url=f"sqlite:///{tmp_path / 'state.db'}",
    )
    prepare_run(cfg)
    return cfg


def pages(cfg: HarvestConfig, base: str) -> dict[str, tuple[str, str | None]]:
    """Page path -> (status, error)."""
    with session_scope(cfg.database_url) as session:
        rows = session.execute(
            select(Page.url, Page.status, Page.error).where(Page.run_id == cfg.run_id)
        ).all()
    return {url.removeprefix(base): (status, error) for url, status, error in rows}


def candidates(cfg: HarvestConfig, base: str) -> dict[str, Candidate]:
    with session_scope(cfg.database_url) as session:
        rows = session.scalars(select(Candidate).where(Candidate.run_id == cfg.run_id)).all()
    return {row.url.removeprefix(base): row for row in rows}
