"""Pieces of the crash tests: run a stage as its own process and SIGKILL it at a chosen point, copy and
compare what the state DB and the staging area hold.

A kill point is an amount of observable progress: requests the site served the process (crawl and
download), rows it committed to the state DB (extract, classify, publish), or seconds since it logged
that its work started (prepare, whose few commits are not worth counting).
"""

from __future__ import annotations

import hashlib
import json
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import create_engine, func, insert, select, text
from sqlalchemy.pool import NullPool

from harvest.state.db import migrate, session_scope
from harvest.state.models import Base, Page, Prediction, Publication, Status

from .crash_site import KillSwitch

#: per table, the columns that differ between two equivalent runs: row ids, clocks, the destination
#: (each run publishes to its own bucket) and the per-attempt report counters
VOLATILE = {
    "runs": {"params", "started_at", "counters"},
    "pages": {"id", "fetched_at"},
    "candidates": {"id", "updated_at", "elapsed_ms"},
    "images": {"created_at"},
    "image_urls": {"id", "created_at"},
    "predictions": {"id", "created_at"},
    "publications": {"id", "created_at", "destination"},
    "keepers": {"candidate_id"},  # the id of a candidates row, volatile like that id
}
#: the politeness budget's state: how fast each host was asked and how it answered, which a killed
#: and re-run stage changes by the requests it makes again; not the harvest's output
PACING_TABLES = {"host_budget", "host_leases", "host_rates"}
#: timestamps compared only as "set or not"
WHETHER = {"finished_at", "withdrawn_at"}

#: what a stage's progress is counted in, when it is counted in state DB rows
COMMITTED = {
    "extract": select(func.count()).select_from(Page).where(Page.extract_status != Status.PENDING),
    "classify": select(func.count()).select_from(Prediction),
    "publish": select(func.count()).select_from(Publication),
}


def snapshot(database_url: str) -> dict[str, list[dict]]:
    """Every row of every harvest table."""
    with session_scope(database_url) as session:
        return {
            table.name: [dict(row) for row in session.execute(select(table)).mappings()]
            for table in Base.metadata.sorted_tables
        }


def restore(rows: dict[str, list[dict]], database_url: str) -> None:
    """Load a snapshot into an empty database, ids included, with the id sequences moved past them."""
    migrate(database_url)
    with session_scope(database_url) as session:
        for table in Base.metadata.sorted_tables:
            if rows[table.name]:
                session.execute(insert(table), rows[table.name])
            if "id" in table.c:
                session.execute(
                    text(
                        f"SELECT setval(pg_get_serial_sequence('{table.name}', 'id'), "
                        f"(SELECT coalesce(max(id), 0) + 1 FROM {table.name}), false)"
                    )
                )


def comparable(rows: dict[str, list[dict]]) -> dict[str, Counter]:
    """Each table as a multiset of rows without the columns that legitimately differ between runs."""

    def value(column: str, item):
        if column in WHETHER:
            return item is not None
        if isinstance(item, bytes):  # score vectors: compared by digest, shown short
            return f"{len(item)} bytes, sha256 {hashlib.sha256(item).hexdigest()[:16]}"
        return json.dumps(item, sort_keys=True) if isinstance(item, dict | list) else item

    return {
        table: Counter(
            tuple(sorted((c, value(c, v)) for c, v in row.items() if c not in VOLATILE.get(table, ())))
            for row in table_rows
        )
        for table, table_rows in rows.items()
        if table not in PACING_TABLES
    }


def differences(expected: dict[str, Counter], actual: dict[str, Counter]) -> dict[str, dict[str, list]]:
    """Per table, the rows an interrupted run lost and the rows it has in excess (duplicated or changed)."""
    found = {}
    for table in expected.keys() | actual.keys():
        lost = expected.get(table, Counter()) - actual.get(table, Counter())
        extra = actual.get(table, Counter()) - expected.get(table, Counter())
        if lost or extra:
            found[table] = {
                "lost": [dict(r) for r in lost.elements()],
                "extra": [dict(r) for r in extra.elements()],
            }
    return found


def staged_files(root: Path) -> dict[str, str]:
    """Relative path -> sha256 of every file in a local staging area, temporary files included."""
    if not root.exists():
        return {}
    return {
        path.relative_to(root).as_posix(): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(root.rglob("*"))
        if path.is_file()
    }


@dataclass
class Attempt:
    """One run of a stage process: where it was to be killed, and how it ended."""

    kill_at: str
    returncode: int
    log: Path

    @property
    def killed(self) -> bool:
        return self.returncode == -signal.SIGKILL


class StageProcess:
    """Runs ``python -m harvest.cli stage ...`` and kills it at a kill point."""

    def __init__(
        self, args: list[str], env: dict[str, str], database_url: str, logs: Path, switch: KillSwitch
    ):
        self.args = args
        self.env = env
        self.database_url = database_url
        self.logs = logs
        self.switch = switch
        self.attempts: list[Attempt] = []

    def run(self, stage: str, extra: list[str] = (), kill: tuple[str, float] | None = None) -> Attempt:
        """Run the stage once; ``kill`` is (what to count, how many) or None to let it finish."""
        log = self.logs / f"{stage}{''.join(extra)}-{len(self.attempts) + 1}.log"
        command = [sys.executable, "-m", "harvest.cli", "stage", stage, *self.args, *extra]
        with log.open("wb") as out:
            process = subprocess.Popen(command, env=self.env, stdout=out, stderr=subprocess.STDOUT)
            stop = threading.Event()
            watcher = None
            if kill is None:
                described = "none"
            else:
                kind, at = kill
                described = f"{kind} {at:g}"
                if kind in ("page request", "image request"):
                    self.switch.arm(process.pid, kind.split()[0], int(at))
                elif kind == "seconds":
                    watcher = threading.Thread(target=self._kill_after_start, args=(process, log, at, stop))
                    watcher.start()
                else:
                    watcher = threading.Thread(
                        target=self._kill_after_rows, args=(process, stage, int(at), stop)
                    )
                    watcher.start()
            try:
                returncode = process.wait(timeout=300)
            finally:
                stop.set()
                self.switch.disarm()
                if watcher is not None:
                    watcher.join()
        attempt = Attempt(described, returncode, log)
        self.attempts.append(attempt)
        return attempt

    def _kill_after_start(self, process: subprocess.Popen, log: Path, seconds: float, stop: threading.Event):
        """Kill ``seconds`` after the process logged the start of its work (imports done)."""
        while not stop.is_set() and b" starting (" not in log.read_bytes():
            time.sleep(0.002)
        if not stop.wait(seconds):
            _kill(process)

    def _kill_after_rows(self, process: subprocess.Popen, stage: str, at: int, stop: threading.Event) -> None:
        """Kill once the stage has committed ``at`` rows in all, and at least one in this attempt."""
        engine = create_engine(self.database_url, poolclass=NullPool)
        try:
            with engine.connect() as conn:
                start = conn.execute(COMMITTED[stage]).scalar_one()
                target = max(at, start + 1)
                while not stop.is_set():
                    if conn.execute(COMMITTED[stage]).scalar_one() >= target:
                        _kill(process)
                        return
                    conn.rollback()
                    time.sleep(0.003)
        finally:
            engine.dispose()


def _kill(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGKILL)
