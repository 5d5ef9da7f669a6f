"""Who hears about a failed or late harvest. Read when a DAG file is parsed: a nightly run that fails
should not also fail to tell anyone because a setting was misspelt, so a bad value stops the DAG file
from loading, naming the setting."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass

from harvest.settings.env import env_float
from harvest.settings.errors import ConfigError

#: Longest deadline: past a day the next night's run is due anyway.
MAX_DEADLINE_HOURS = 24.0
_ADDRESS = re.compile(r"^[^@\s,]+@[^@\s,]+\.[^@\s,]+$")


@dataclass(frozen=True)
class AlertSettings:
    """``webhook_conn_id``: an Airflow HTTP connection whose URL gets a JSON POST; ``email_to`` with
    ``smtp_conn_id``: an e-mail through Airflow's SMTP provider; ``deadline_hours``: a run still going this
    long after it was queued is announced as late on the same channels."""

    webhook_conn_id: str | None = None
    smtp_conn_id: str = "smtp_default"
    email_to: tuple[str, ...] = ()
    email_from: str | None = None
    deadline_hours: float | None = None

    @property
    def any_channel(self) -> bool:
        return bool(self.webhook_conn_id or self.email_to)


def alert_settings(env: Mapping[str, str] | None = None) -> AlertSettings:
    """HARVEST_ALERT_WEBHOOK_CONN, HARVEST_ALERT_EMAIL (comma-separated), HARVEST_ALERT_SMTP_CONN,
    HARVEST_ALERT_FROM and HARVEST_RUN_DEADLINE_HOURS, every problem listed at once."""
    env = os.environ if env is None else env
    problems: list[str] = []
    emails = tuple(item.strip() for item in (env.get("HARVEST_ALERT_EMAIL") or "").split(",") if item.strip())
    for address in emails:
        if not _ADDRESS.match(address):
            problems.append(f"HARVEST_ALERT_EMAIL: {address!r} is not an e-mail address")
    sender = (env.get("HARVEST_ALERT_FROM") or "").strip() or None
    if sender and not _ADDRESS.match(sender):
        problems.append(f"HARVEST_ALERT_FROM: {sender!r} is not an e-mail address")
    deadline = env_float(env, "HARVEST_RUN_DEADLINE_HOURS", 0.0, 0.0, MAX_DEADLINE_HOURS, problems)
    webhook = (env.get("HARVEST_ALERT_WEBHOOK_CONN") or "").strip() or None
    if deadline and not (webhook or emails):
        problems.append(
            "HARVEST_RUN_DEADLINE_HOURS is set but no one would hear of a late run: "
            "set HARVEST_ALERT_WEBHOOK_CONN or HARVEST_ALERT_EMAIL"
        )
    if problems:
        raise ConfigError(problems)
    return AlertSettings(
        webhook_conn_id=webhook,
        smtp_conn_id=(env.get("HARVEST_ALERT_SMTP_CONN") or "").strip() or "smtp_default",
        email_to=emails,
        email_from=sender,
        deadline_hours=deadline or None,
    )
