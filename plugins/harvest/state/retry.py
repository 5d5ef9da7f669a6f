"""Re-opening failed rows on a re-run: a failure that may pass gets another attempt, up to a limit.

Pages and candidates record their failures differently (a page keeps its HTTP status, a candidate
the error text), so each table has its own test of "may pass"; re-opening itself is one update.
"""

from __future__ import annotations

from sqlalchemy import ColumnElement, or_, update

from harvest.state.db import session_scope
from harvest.state.models import Candidate, Page, Status


def page_failure_may_pass() -> ColumnElement[bool]:
    """No answer, a server error (5xx) or too many requests (429)."""
    return or_(Page.http_status.is_(None), Page.http_status >= 500, Page.http_status == 429)


def candidate_failure_may_pass() -> ColumnElement[bool]:
    """Timeouts, failed connections, 5xx and 429 answers, and downloads deferred by a Crawl-delay
    over the cap."""
    return or_(
        Candidate.error.like("%timed out%"),
        Candidate.error.like("%connection failed%"),
        Candidate.error.like("%HTTP 5__%"),
        Candidate.error.like("%HTTP 429%"),
        Candidate.error.like("%deferred to a later run%"),  # Crawl-delay over the cap
    )


def reopen_failed(
    database_url: str,
    table: type[Page] | type[Candidate],
    max_attempts: int,
    may_pass: ColumnElement[bool],
    *scope: ColumnElement[bool],
) -> None:
    """Rows of ``table`` within ``scope`` that failed for a reason that ``may_pass``, with fewer than
    ``max_attempts`` attempts, set back to pending."""
    with session_scope(database_url) as session:
        session.execute(
            update(table)
            .where(*scope, table.status == Status.FAILED, table.attempts < max_attempts, may_pass)
            .values(status=Status.PENDING)
        )
