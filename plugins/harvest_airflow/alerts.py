"""Telling someone when a harvest fails or runs late, through Airflow's notifier and deadline machinery.

Failed tasks and runs call the notifiers from ``failure_notifiers`` (Airflow's ``on_failure_callback``);
a run still going ``HARVEST_RUN_DEADLINE_HOURS`` after it was queued fires the DAG's deadline alert, whose
callback runs in the triggerer and sends the same message. Channels: a JSON POST to the URL of an HTTP
connection, and an e-mail through the SMTP provider's notifier. Nothing here contacts anyone at parse time.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta
from typing import Any

from airflow.sdk import BaseNotifier

from harvest.settings.alerts import AlertSettings

log = logging.getLogger(__name__)

WEBHOOK_TIMEOUT_SECONDS = 10


def _field(obj: Any, name: str) -> Any:
    """An attribute of a task instance or run, or the key of its serialised form (the triggerer's)."""
    if obj is None:
        return None
    if isinstance(obj, dict):
        return obj.get(name)
    return getattr(obj, name, None)


def alert_payload(context: dict, event: str) -> dict[str, Any]:
    """What a receiver needs to act: which DAG, run and task, what happened, and why."""
    run = context.get("dag_run")
    ti = context.get("ti") or context.get("task_instance")
    exception = context.get("exception")
    logical_date = _field(run, "logical_date")
    return {
        "event": event,
        "dag_id": _field(run, "dag_id") or _field(ti, "dag_id") or context.get("dag_id"),
        # the triggerer's context holds the run as the REST API shows it, with its id as "dag_run_id"
        "run_id": _field(run, "run_id") or _field(run, "dag_run_id") or _field(ti, "run_id"),
        "run_type": str(_field(run, "run_type") or "") or None,
        "logical_date": logical_date.isoformat() if hasattr(logical_date, "isoformat") else logical_date,
        "task_id": _field(ti, "task_id"),
        "map_index": _field(ti, "map_index"),
        "try_number": _field(ti, "try_number"),
        "reason": str(exception) if exception else context.get("reason"),
    }


def webhook_url(conn: Any) -> str:
    """The URL an HTTP connection names: ``host`` may be a whole URL, else schema://host:port + endpoint."""
    extra = conn.extra_dejson
    host = conn.host or ""
    if "://" in host:
        base = host
    else:
        base = f"{conn.schema or 'https'}://{host}" + (f":{conn.port}" if conn.port else "")
    endpoint = extra.get("endpoint") or ""
    return base.rstrip("/") + ("/" + endpoint.lstrip("/") if endpoint else "")


class WebhookNotifier(BaseNotifier):
    """POSTs the alert as JSON to the URL of an Airflow HTTP connection (its ``headers`` extra is sent)."""

    template_fields = ()

    def __init__(self, conn_id: str, event: str = "failed"):
        super().__init__()
        self.conn_id = conn_id
        self.event = event

    def notify(self, context: dict) -> None:
        import requests
        from airflow.sdk import BaseHook

        conn = BaseHook.get_connection(self.conn_id)
        url = webhook_url(conn)
        headers = {str(k): str(v) for k, v in (conn.extra_dejson.get("headers") or {}).items()}
        response = requests.post(
            url, json=alert_payload(context, self.event), headers=headers, timeout=WEBHOOK_TIMEOUT_SECONDS
        )
        if response.status_code >= 400:
            raise RuntimeError(f"alert webhook {url} answered {response.status_code}")


def _email_notifier(settings: AlertSettings, event: str) -> BaseNotifier:
    from airflow.providers.smtp.notifications.smtp import SmtpNotifier

    what = "failed" if event == "failed" else f"still running after {settings.deadline_hours:g} h"
    return SmtpNotifier(
        smtp_conn_id=settings.smtp_conn_id,
        from_email=settings.email_from,
        to=list(settings.email_to),
        subject=f"[image harvester] {{{{ dag.dag_id }}}} {{{{ run_id }}}} {what}",
        html_content=(
            f"<p>The harvest run {{{{ run_id }}}} of {{{{ dag.dag_id }}}} {what}.</p>"
            "<p>Task: {{ ti.task_id if ti else '' }}<br>Reason: {{ exception or '' }}</p>"
        ),
    )


def failure_notifiers(settings: AlertSettings) -> list[BaseNotifier]:
    """The ``on_failure_callback`` list for tasks and runs; empty when no channel is configured."""
    notifiers: list[BaseNotifier] = []
    if settings.webhook_conn_id:
        notifiers.append(WebhookNotifier(settings.webhook_conn_id))
    if settings.email_to:
        notifiers.append(_email_notifier(settings, "failed"))
    return notifiers


async def run_is_late(context: dict, **channels: Any) -> None:
    """The deadline alert's callback (run by the triggerer): the run is still going past its deadline."""
    settings = AlertSettings(
        webhook_conn_id=channels.get("webhook_conn_id"),
        smtp_conn_id=channels.get("smtp_conn_id") or "smtp_default",
        email_to=tuple(channels.get("email_to") or ()),
        email_from=channels.get("email_from"),
        deadline_hours=channels.get("deadline_hours"),
    )
    late = dict(context, reason=f"still running {settings.deadline_hours:g} h after it was queued")
    if settings.webhook_conn_id:
        await asyncio.to_thread(WebhookNotifier(settings.webhook_conn_id, event="late").notify, late)
    if settings.email_to:
        await asyncio.to_thread(_email_notifier(settings, "late").notify, late)


def deadline_alert(settings: AlertSettings):
    """A DeadlineAlert for runs still going ``deadline_hours`` after they were queued, or None."""
    if not settings.deadline_hours:
        return None
    from airflow.sdk import AsyncCallback, DeadlineAlert, DeadlineReference

    return DeadlineAlert(
        reference=DeadlineReference.DAGRUN_QUEUED_AT,
        interval=timedelta(hours=settings.deadline_hours),
        callback=AsyncCallback(
            "harvest_airflow.alerts.run_is_late",
            kwargs={
                "webhook_conn_id": settings.webhook_conn_id,
                "smtp_conn_id": settings.smtp_conn_id,
                "email_to": list(settings.email_to),
                "email_from": settings.email_from,
                "deadline_hours": settings.deadline_hours,
            },
        ),
        name="harvest_run_late",
    )
