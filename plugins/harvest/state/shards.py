"""How a run's work is split into shards, sized by the work.

Every candidate is stored with a fixed *bucket* of its URL (one of :data:`BUCKETS`), known when it is
inserted; how many shards a run has is decided later, once its candidates are counted: one shard per
``shard_size`` candidates, at least ``min_shards``, at most ``num_shards`` (HarvestConfig). Shard
``k`` of ``n`` holds the buckets ``b`` with ``b % n == k``, so the split needs no rewrite of the
candidates, a retried task sees the same rows, and any worker can take any shard. The count is
recorded on the run, so the download, classify and publish tasks of one run all agree on it.
"""

from __future__ import annotations

import logging
import math

from sqlalchemy import ColumnElement, func, select

from harvest.settings.config import HarvestConfig
from harvest.state.db import session_scope
from harvest.state.models import Candidate, Run
from harvest.urls import shard_of

log = logging.getLogger(__name__)

#: buckets a URL falls into: the most shards a run can have (HARVEST_SHARDS is at most this)
BUCKETS = 256


def bucket_of(url: str) -> int:
    """Stable across processes and retries (unlike hash()), so a retried shard sees the same rows."""
    return shard_of(url, BUCKETS)


def shard_count(candidates: int, shard_size: int, min_shards: int, max_shards: int) -> int:
    """One shard per ``shard_size`` candidates, within ``[min_shards, max_shards]``: a 10-image run
    is one task, a million-image run as many as the cap allows."""
    wanted = math.ceil(candidates / max(shard_size, 1))
    return max(1, min(max(wanted, min_shards), max_shards, BUCKETS))


def buckets(shard: int, shards: int) -> list[int]:
    """The buckets of shard ``shard`` of ``shards`` (none when the shard is past the run's count)."""
    if not 0 <= shard < shards:
        return []
    return list(range(shard, BUCKETS, shards))


def in_shard(column: ColumnElement[int], shard: int | None, shards: int) -> ColumnElement[bool]:
    """``column`` (a bucket) lies in the shard; every row when ``shard`` is None. An IN list, so the
    (run_id, shard, status) index still serves."""
    if shard is None:
        return column.is_not(None)
    return column.in_(buckets(shard, shards))


def plan_shards(cfg: HarvestConfig) -> int:
    """Count the run's candidates and record its shard count; called once they are all known."""
    with session_scope(cfg.database_url) as session:
        total = session.scalar(
            select(func.count()).select_from(Candidate).where(Candidate.run_id == cfg.run_id)
        )
        shards = shard_count(total or 0, cfg.shard_size, cfg.min_shards, cfg.num_shards)
        run = session.get(Run, cfg.run_id)
        if run is not None:
            run.shards = shards
    log.info("run %s: %d candidates in %d shards (%d per shard)", cfg.run_id, total, shards, cfg.shard_size)
    return shards


def run_shards(cfg: HarvestConfig) -> int:
    """The run's recorded shard count; planned now when the run has none yet (a state DB from before
    shards were sized, or a stage run on its own)."""
    with session_scope(cfg.database_url) as session:
        shards = session.scalar(select(Run.shards).where(Run.run_id == cfg.run_id))
    if shards is None:
        return plan_shards(cfg)
    return shards
