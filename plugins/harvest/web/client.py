"""The HTTP client a task uses, built from the run's settings: one politeness gate and one
robots.txt cache shared by all of the task's threads.
"""

from __future__ import annotations

from harvest.settings.config import HarvestConfig
from harvest.web.adaptive import Limits
from harvest.web.http import HttpClient
from harvest.web.optout import TdmRepCache
from harvest.web.politeness import HostGate
from harvest.web.robots import RobotsCache


def limits_of(cfg: HarvestConfig) -> Limits:
    """The adaptive politeness settings of a run."""
    return Limits(
        concurrency=cfg.host_concurrency,
        delay=cfg.host_delay,
        max_rate=cfg.host_max_rate,
        cdn_concurrency=cfg.cdn_concurrency,
        cdn_max_rate=cfg.cdn_max_rate,
        fast_seconds=cfg.host_fast_seconds,
        slow_seconds=cfg.host_slow_seconds,
    )


def make_gate(cfg: HarvestConfig):
    """The task's politeness gate: on Postgres, one budget per host shared by every task and worker
    (harvest.web.host_budget); on SQLite (one process at a time) or with HARVEST_HOST_BUDGET=local,
    the task's own."""
    limits = limits_of(cfg)
    if cfg.host_budget == "auto" and cfg.database_url.startswith("postgresql"):
        from harvest.web.host_budget import SharedHostGate

        return SharedHostGate(
            cfg.database_url,
            limits,
            cfg.host_failure_limit,
            max_delay=cfg.max_crawl_delay,
            lease_seconds=2 * cfg.total_timeout,
        )
    return HostGate(
        cfg.host_concurrency,
        cfg.host_delay,
        cfg.host_failure_limit,
        max_delay=cfg.max_crawl_delay,
        limits=limits,
    )


def make_client(cfg: HarvestConfig) -> HttpClient:
    """The task's client; its politeness gate is shared by all the threads of the task, and its
    robots.txt cache (``client.robots``) is read before the first request to each host."""
    client = HttpClient(
        user_agent=cfg.user_agent,
        connect_timeout=cfg.connect_timeout,
        read_timeout=cfg.read_timeout,
        total_timeout=cfg.total_timeout,
        allow_private_networks=cfg.allow_private_networks,
        allowed_networks=cfg.allowed_networks,
        gate=make_gate(cfg),
        retry_attempts=cfg.status_retries,
        max_retry_after=cfg.max_retry_after,
    )
    client.robots = RobotsCache(
        client, cfg.user_agent, enabled=cfg.respect_robots, obeyed=cfg.obey_robots_agents
    )
    #: /.well-known/tdmrep.json of each origin, read on first use (harvest.web.optout)
    client.tdmrep = TdmRepCache(client, enabled=cfg.respect_optouts)
    client.first_contact = client.robots.prime
    return client


def record_paces(cfg: HarvestConfig, client: HttpClient) -> None:
    """Add the pace each host got from this task to the run's per-host rates (the per-domain
    statistics show them); a gate without adaptive state has none to add."""
    paces = getattr(client.gate, "paces", None)
    if paces is None:
        return
    from harvest.web.host_budget import record_rates

    record_rates(cfg.database_url, cfg.run_id, paces())
