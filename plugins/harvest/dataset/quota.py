"""Quotas: "at least N images per label" stops downloading a label once it has N, and reports shortfalls.

Labels here are the ones a URL list gives its rows (``label_hint``); counts are distinct downloaded
images, so duplicates served at several URLs count once.
"""

from __future__ import annotations

from sqlalchemy import func, select, update

from harvest.settings.config import HarvestConfig
from harvest.state.db import session_scope
from harvest.state.models import Candidate, Status
from harvest.state.shards import in_shard


def downloaded_per_label(database_url: str, run_id: str) -> dict[str, int]:
    with session_scope(database_url) as session:
        rows = session.execute(
            select(Candidate.label_hint, func.count(func.distinct(Candidate.sha256)))
            .where(
                Candidate.run_id == run_id,
                Candidate.status == Status.DONE,
                Candidate.label_hint.is_not(None),
            )
            .group_by(Candidate.label_hint)
        ).all()
    return {label: count for label, count in rows}


def labels_with_quota_met(cfg: HarvestConfig) -> set[str]:
    if cfg.quota <= 0:
        return set()
    return {
        label
        for label, count in downloaded_per_label(cfg.database_url, cfg.run_id).items()
        if count >= cfg.quota
    }


def close_met_labels(cfg: HarvestConfig, shard: int | None = None, shards: int = 1) -> int:
    """Record the candidates left over for full labels as skipped, so the run's accounting is complete."""
    full = labels_with_quota_met(cfg)
    if not full:
        return 0
    with session_scope(cfg.database_url) as session:
        query = update(Candidate).where(
            Candidate.run_id == cfg.run_id,
            Candidate.status == Status.PENDING,
            Candidate.label_hint.in_(full),
        )
        if shard is not None:
            query = query.where(in_shard(Candidate.shard, shard, shards))
        result = session.execute(query.values(status=Status.SKIPPED, error=f"quota of {cfg.quota} met"))
    return result.rowcount or 0


def shortfalls(cfg: HarvestConfig) -> dict[str, dict[str, int]]:
    """Labels of the list that ended below the quota, with what they got."""
    if cfg.quota <= 0:
        return {}
    with session_scope(cfg.database_url) as session:
        labels = session.scalars(
            select(Candidate.label_hint)
            .where(Candidate.run_id == cfg.run_id, Candidate.label_hint.is_not(None))
            .distinct()
        ).all()
    got = downloaded_per_label(cfg.database_url, cfg.run_id)
    return {
        label: {"wanted": cfg.quota, "downloaded": got.get(label, 0)}
        for label in sorted(labels)
        if got.get(label, 0) < cfg.quota
    }
