"""One politeness budget per host for a whole deployment, kept in the state DB (Postgres).

The in-process gate (harvest.web.politeness.HostGate) holds a host to its limits within one task;
four download shards on four workers would each hold it there and together send four times as much.
Here the host's spacing, next start and requests in flight live in one row of ``host_budget`` and
in ``host_leases``, so the concurrency and the spacing hold summed over every task and worker:

- a request starts with one UPDATE of the host's row that succeeds only while the row's ``active``
  count is under the host's concurrency and its next start has come (Postgres checks again on the
  row another worker just left), adds one to ``active``, moves the next start on by the delay, and
  records a lease;
- its answer moves the host's adaptive delay (harvest.web.adaptive) in the same row as its lease is
  given back; a worker that dies leaves leases that expire, and the next worker that finds the host
  full drops them and takes their slots.

Times are the database's clock, so workers on machines whose clocks differ still space requests
correctly. SQLite has no row locks: the embedded default runs one process at a time and keeps the
in-process gate (harvest.web.client chooses).
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from sqlalchemy import create_engine, func, text
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Connection, Engine

from harvest.state.db import name_the_database, session_scope
from harvest.state.models import HostRate
from harvest.web.adaptive import CDN_AFTER, IDLE_RESET, Answer, Limits, Pace, adapt
from harvest.web.politeness import HostGate, SlotTimeout, check_patience

#: seconds between looks at a host's row while its slots are all taken (a start that waits for the
#: spacing sleeps exactly until its time instead)
POLL = 0.02
POLL_MAX = 0.25

_NOW = "extract(epoch from clock_timestamp())::float8"
_ENSURE = text(
    "INSERT INTO host_budget (host, delay, floor, next_start, held_until, streak, pages, images, requests, "
    "throttled, errors, peak_rate, updated_at) VALUES (:host, :delay, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, "
    f"{_NOW}) ON CONFLICT (host) DO NOTHING"
)
_LOCK = text(
    "SELECT delay, floor, next_start, held_until, streak, pages, images, requests, throttled, errors, "
    f"peak_rate, updated_at, active, {_NOW} AS now FROM host_budget WHERE host = :host FOR UPDATE"
)
#: take a slot in one statement: the row's WHERE is checked again under its lock when another worker
#: held it (Postgres re-reads a locked row for an UPDATE), so ``active`` never passes the limit; the
#: host's concurrency is the CDN's once it has served only images (harvest.web.adaptive.Pace.kind)
_START = text(
    "WITH started AS (UPDATE host_budget SET active = active + 1, "
    f"next_start = {_NOW} + delay, updated_at = {_NOW} "
    f"WHERE host = :host AND next_start <= {_NOW} AND active < CASE WHEN images >= :cdn_after "
    "AND pages = 0 THEN :cdn_limit ELSE :limit END RETURNING host, updated_at) "
    "INSERT INTO host_leases (host, holder, expires_at) SELECT host, :holder, updated_at + :ttl "
    "FROM started RETURNING id"
)
_STATE = text(
    f"SELECT delay, next_start, active, images, pages, {_NOW} AS now FROM host_budget WHERE host = :host"
)
#: leases of workers that died (their lease expired, or their process on this machine is gone):
#: dropped, and no longer counted in ``active``
_EXPIRE = text(
    "WITH gone AS (DELETE FROM host_leases WHERE host = :host "
    f"AND (expires_at < {_NOW} OR holder = ANY(:dead)) RETURNING id) "
    "UPDATE host_budget SET active = greatest(active - (SELECT count(*) FROM gone), 0) "
    "WHERE host = :host AND EXISTS (SELECT 1 FROM gone) RETURNING active"
)
_HOLDERS = text("SELECT DISTINCT holder FROM host_leases WHERE host = :host")


def _process_alive(pid: str) -> bool:
    try:
        os.kill(int(pid), 0)
    except (ValueError, ProcessLookupError):
        return False
    except PermissionError:  # another user's process: alive
        return True
    return True


#: a lease given back: counted off ``active`` only if it had not expired and been dropped meanwhile
_RELEASE = text(
    "WITH gone AS (DELETE FROM host_leases WHERE id = :id RETURNING host) "
    "UPDATE host_budget SET active = greatest(active - 1, 0) WHERE host IN (SELECT host FROM gone)"
)
_RESET = text(
    "UPDATE host_budget SET delay = :delay, floor = 0, streak = 0, held_until = 0, next_start = 0 "
    "WHERE host = :host"
)
#: a task meeting an idle host: the configured spacing again (never under its Crawl-delay floor), the
#: next start moved up to what that spacing allows after the last start
_RESTART = text(
    "UPDATE host_budget SET next_start = least(next_start, next_start - delay + greatest(:delay, floor)), "
    "delay = greatest(:delay, floor), streak = 0 WHERE host = :host"
)
#: the answer's effect on the host's pace, and its lease given back (see _RELEASE)
_SAVE = text(
    "WITH gone AS (DELETE FROM host_leases WHERE id = :id RETURNING host) "
    "UPDATE host_budget SET delay = :delay, floor = :floor, streak = :streak, pages = :pages, "
    "images = :images, requests = :requests, throttled = :throttled, errors = :errors, "
    "peak_rate = :peak_rate, next_start = :next_start, held_until = :held_until, updated_at = :now, "
    "active = greatest(active - (SELECT count(*) FROM gone), 0) WHERE host = :host"
)
_HOLD = text(
    f"UPDATE host_budget SET held_until = greatest(held_until, {_NOW} + :seconds), "
    f"next_start = greatest(next_start, {_NOW} + :seconds) WHERE host = :host"
)
_FLOOR = text(
    "UPDATE host_budget SET floor = greatest(floor, :seconds), delay = greatest(delay, :seconds) "
    "WHERE host = :host"
)
_DELAY = text("SELECT delay FROM host_budget WHERE host = :host")

_engines: dict[str, Engine] = {}
_engines_lock = threading.Lock()


def budget_engine(database_url: str) -> Engine:
    """An engine of the budget's own: its short transactions never queue behind the stage's claims
    for a pooled connection (a download task holds several open at once)."""
    with _engines_lock:
        engine = _engines.get(database_url)
        if engine is None:
            engine = _engines[database_url] = create_engine(
                database_url, pool_size=4, max_overflow=128, pool_pre_ping=True
            )
        return engine


def _kind(images: int, pages: int) -> str:
    return Pace(delay=0.0, images=images, pages=pages).kind


def _pace(row) -> Pace:
    return Pace(
        delay=row.delay,
        floor=row.floor,
        streak=row.streak,
        pages=row.pages,
        images=row.images,
        requests=row.requests,
        throttled=row.throttled,
        errors=row.errors,
        peak_rate=row.peak_rate,
    )


class SharedHostGate:
    """HostGate's interface, with the host's limits held for every worker in the state DB.

    A host's failure count and pause stay per task (a task gives up on a host that keeps failing
    for it); the start spacing, concurrency, adaptive rate and Retry-After holds are shared."""

    def __init__(
        self,
        database_url: str,
        limits: Limits,
        failure_limit: int = 5,
        max_delay: float = float("inf"),
        lease_seconds: float = 120.0,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.limits = limits
        self.concurrency = limits.concurrency
        self.delay = limits.delay
        self.database_url = database_url
        self.engine = budget_engine(database_url)
        #: single statements that are their own transaction (taking and giving back a slot)
        self.auto = self.engine.execution_options(isolation_level="AUTOCOMMIT")
        #: pauses and failure counts of this task; its own cap keeps the task's threads from all
        #: polling the row of a host whose shared slots are taken
        self.local = HostGate(
            concurrency=limits.concurrency_of("images"),
            delay=0.0,
            failure_limit=failure_limit,
            clock=clock,
            max_delay=max_delay,
        )
        self.lease_seconds = lease_seconds
        self.holder = f"{socket.gethostname()}:{os.getpid()}"
        self._clock = clock
        self._known: set[str] = set()
        self._thread = threading.local()  # the lease of the request this thread is making
        self._lock = threading.Lock()
        self._task: dict[str, Pace] = {}  # this task's own counts per host, for HostRate
        #: one thread per host and process asks the state DB for a start at a time; the others wait
        #: here. Without it, every thread waiting for a host woke at its next start and raced for it,
        #: each losing race a round trip: with 16 threads on a host at 50 requests/s, ~800 a second.
        self._askers: dict[str, threading.Lock] = {}

    # -- the shared slot ------------------------------------------------------------------------

    def _ensure(self, host: str) -> None:
        """The host's row, once per process. A task that finds the host idle (no request in flight
        from any worker, no Retry-After hold) starts it again from the configured rate: what an
        earlier task learned (a back-off after a bad hour) is stale, and a re-run must be able to
        reach a host that has recovered. A row unused for a while starts again too."""
        if host in self._known:
            return
        with self._db(self.engine.begin()) as conn:
            conn.execute(_ENSURE, {"host": host, "delay": self.limits.delay})
            row = conn.execute(_LOCK, {"host": host}).one()
            if row.now - row.updated_at > IDLE_RESET and row.next_start < row.now:
                conn.execute(_RESET, {"host": host, "delay": max(self.limits.delay, 0.0)})
            elif row.active == 0 and row.held_until <= row.now and row.delay > self.limits.delay:
                conn.execute(_RESTART, {"host": host, "delay": max(self.limits.delay, 0.0)})
        self._known.add(host)

    def _locked(self, conn: Connection, host: str):
        self._ensure(host)
        return conn.execute(_LOCK, {"host": host}).one()

    def _try_start(self, host: str) -> tuple[int | None, float, str]:
        """A lease id when the request may start now (one statement, no transaction around it);
        else seconds to wait (-1: until a slot comes free) and why."""
        self._ensure(host)
        values = {
            "host": host,
            "holder": self.holder,
            "ttl": self.lease_seconds,
            "cdn_after": CDN_AFTER,
            "limit": self.limits.concurrency_of("site"),
            "cdn_limit": self.limits.concurrency_of("images"),
        }
        with self._db(self.auto.connect()) as conn:
            lease = conn.execute(_START, values).scalar()
            if lease is not None:
                return lease, 0.0, ""
            row = conn.execute(_STATE, {"host": host}).one()
            limit = self.limits.concurrency_of(_kind(row.images, row.pages))
            if (
                row.active >= limit
                and conn.execute(_EXPIRE, {"host": host, "dead": self._dead_holders(conn, host)}).first()
                is not None
            ):
                lease = conn.execute(_START, values).scalar()  # a dead worker's slot came free
                if lease is not None:
                    return lease, 0.0, ""
            why = (
                f"{row.active} of {limit} requests in flight across all workers, {row.delay:g}s between "
                f"requests, next start in {max(row.next_start - row.now, 0.0):.1f}s"
            )
            if row.active < limit:
                return None, max(row.next_start - row.now, 0.0), why
            return None, -1.0, why

    @contextmanager
    def _db(self, opening) -> Iterator[Connection]:
        """A connection of the budget's; a failure names the state DB it came from, as the stages' do."""
        try:
            with opening as conn:
                yield conn
        except BaseException as exc:
            name_the_database(exc, self.database_url)
            raise

    def _dead_holders(self, conn: Connection, host: str) -> list[str]:
        """Holders of the host's leases that ran on this machine and whose process is gone (a task
        killed mid-request): their slots come free now rather than when the leases expire."""
        here = self.holder.rsplit(":", 1)[0] + ":"
        holders = conn.execute(_HOLDERS, {"host": host}).scalars().all()
        return [h for h in holders if h.startswith(here) and not _process_alive(h[len(here) :])]

    @contextmanager
    def slot(self, host: str, deadline: float | None = None) -> Iterator[None]:
        """A slot of ``host`` in the shared budget; HostPaused and SlotTimeout as HostGate's."""
        with self.local.slot(host, deadline):
            queued = self._clock()
            with self._asking(host, deadline, queued):
                lease = self._wait_for_start(host, deadline, queued)
            self._thread.answer, self._thread.open = None, True
            try:
                yield
            finally:
                self._thread.open = False
                self._end(host, lease, self._thread.answer)
                self._thread.answer = None

    @contextmanager
    def _asking(self, host: str, deadline: float | None, queued: float) -> Iterator[None]:
        """This thread's turn to ask the state DB for a start at ``host``, among this process's threads."""
        with self._lock:
            asker = self._askers.setdefault(host, threading.Lock())
        timeout = -1 if deadline is None else max(deadline - self._clock(), 0.0)
        if not asker.acquire(timeout=timeout):
            waited = self._clock() - queued
            raise SlotTimeout(
                host,
                waited,
                f"waited {waited:.1f}s for a request slot at {host} (this task's other requests first)",
            )
        try:
            yield
        finally:
            asker.release()

    def _wait_for_start(self, host: str, deadline: float | None, queued: float) -> int:
        """A lease once the shared row lets a request start; SlotTimeout or HostBusy before that."""
        poll = POLL
        while True:
            lease, wait, why = self._try_start(host)
            if lease is not None:
                return lease
            now = self._clock()
            if wait < 0:  # every slot taken: look again soon, a little later each time
                wait, poll = poll, min(poll * 1.5, POLL_MAX)
            else:
                check_patience(host, wait)
            if deadline is not None and now + wait > deadline:
                waited = now - queued
                raise SlotTimeout(host, waited, f"waited {waited:.1f}s for a request slot at {host} ({why})")
            time.sleep(min(wait, 1.0))

    def _end(self, host: str, lease: int, answer: Answer | None) -> None:
        """Drop the lease and, in the same transaction, let the answer move the host's pace."""
        if answer is None:
            with self._db(self.auto.connect()) as conn:
                conn.execute(_RELEASE, {"id": lease})
            return
        with self._db(self.engine.begin()) as conn:
            self._apply(conn, host, answer, lease)

    def _apply(self, conn: Connection, host: str, answer: Answer, lease: int | None = None) -> None:
        row = self._locked(conn, host)
        pace = _pace(row)
        before = pace.delay
        hold = adapt(pace, answer, self.limits)
        held_until = max(row.held_until, row.now + hold) if hold else row.held_until
        # the next start was the last start plus the old delay: it moves with the delay
        next_start = max(row.next_start - before + pace.delay, held_until)
        conn.execute(
            _SAVE,
            {
                **vars(pace),
                "host": host,
                "id": lease,
                "next_start": next_start,
                "held_until": held_until,
                "now": row.now,
            },
        )
        with self._lock:
            mine = self._task.setdefault(host, Pace(delay=pace.delay))
            mine.delay, mine.floor, mine.images, mine.pages = pace.delay, pace.floor, pace.images, pace.pages
            mine.requests += 1
            mine.throttled += pace.throttled - row.throttled
            mine.errors += pace.errors - row.errors
            mine.peak_rate = max(mine.peak_rate, pace.rate)

    # -- the rest of HostGate's interface -----------------------------------------------------

    def observe(self, host: str, answer: Answer) -> None:
        """The answer of the request this thread is making; applied when its slot ends."""
        if getattr(self._thread, "open", False):
            self._thread.answer = answer
            return
        with self._db(self.engine.begin()) as conn:  # outside a slot: at once
            self._apply(conn, host, answer)

    def hold(self, host: str, seconds: float) -> None:
        with self._db(self.engine.begin()) as conn:
            self._locked(conn, host)
            conn.execute(_HOLD, {"host": host, "seconds": seconds})

    def set_delay(self, host: str, seconds: float) -> None:
        """A robots.txt Crawl-delay: the host's floor for every worker; over the cap, the task
        defers the host as HostGate does."""
        if seconds > self.local.max_delay:
            self.local.set_delay(host, seconds)
            return
        with self._db(self.engine.begin()) as conn:
            self._locked(conn, host)
            conn.execute(_FLOOR, {"host": host, "seconds": max(seconds, self.limits.delay)})

    def delay_of(self, host: str) -> float:
        with self._db(self.engine.begin()) as conn:
            value = conn.execute(_DELAY, {"host": host}).scalar()
        return self.limits.delay if value is None else value

    def succeeded(self, host: str) -> None:
        self.local.succeeded(host)

    def failed(self, host: str, reason: str) -> None:
        self.local.failed(host, reason)

    def paused_hosts(self) -> dict[str, str]:
        return self.local.paused_hosts()

    def paces(self) -> dict[str, Pace]:
        with self._lock:
            return {host: Pace(**vars(pace)) for host, pace in self._task.items()}


def record_rates(database_url: str, run_id: str, paces: dict[str, Pace]) -> None:
    """Add one task's paces to the run's per-host rates (HostRate): counts summed over the run's
    tasks, the rate the last task ended at, the highest any reached."""
    if not paces:
        return
    rows = [
        {
            "run_id": run_id,
            "host": host,
            "kind": pace.kind,
            "requests": pace.requests,
            "throttled": pace.throttled,
            "errors": pace.errors,
            "rate": pace.rate,
            "peak_rate": pace.peak_rate,
        }
        for host, pace in sorted(paces.items())
        if pace.requests
    ]
    if not rows:
        return
    with session_scope(database_url) as session:
        dialect = session.get_bind().dialect.name
        insert = pg_insert if dialect == "postgresql" else sqlite_insert
        statement = insert(HostRate.__table__)
        table = HostRate.__table__
        greatest = "greatest" if dialect == "postgresql" else "max"
        statement = statement.on_conflict_do_update(
            index_elements=["run_id", "host"],
            set_={
                "kind": statement.excluded.kind,
                "requests": table.c.requests + statement.excluded.requests,
                "throttled": table.c.throttled + statement.excluded.throttled,
                "errors": table.c.errors + statement.excluded.errors,
                "rate": statement.excluded.rate,
                "peak_rate": getattr(func, greatest)(table.c.peak_rate, statement.excluded.peak_rate),
            },
        )
        session.connection().execute(statement, rows)
