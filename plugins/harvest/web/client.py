"""The HTTP client a task uses, built from the run's settings: one politeness gate and one
robots.txt cache shared by all of the task's threads.
"""

from __future__ import annotations

from harvest.settings.config import HarvestConfig
from harvest.web.http import HttpClient
from harvest.web.optout import TdmRepCache
from harvest.web.politeness import HostGate
from harvest.web.robots import RobotsCache


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
        gate=HostGate(
            cfg.host_concurrency, cfg.host_delay, cfg.host_failure_limit, max_delay=cfg.max_crawl_delay
        ),
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
