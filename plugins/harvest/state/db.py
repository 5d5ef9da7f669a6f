"""Engine, sessions and schema migrations for the state DB (Postgres in production, SQLite embedded)."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, event, text
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
_ADVISORY_LOCK_ID = 0x1A6E5  # serialises concurrent migrations on Postgres
INSERT_BATCH = 500

_engines: dict[str, Engine] = {}
_lock = threading.Lock()


def get_engine(url: str) -> Engine:
    """One engine per URL and process; SQLite gets a busy timeout and foreign keys."""
    with _lock:
        engine = _engines.get(url)
        if engine is None:
            if url.startswith("sqlite"):
                path = url.split("///", 1)[-1]
                if path and path != ":memory:":
                    Path(path).parent.mkdir(parents=True, exist_ok=True)
                engine = create_engine(url, connect_args={"timeout": 60})

                @event.listens_for(engine, "connect")
                def _sqlite_pragmas(dbapi_connection, _record) -> None:
                    cursor = dbapi_connection.cursor()
                    cursor.execute("PRAGMA journal_mode=WAL")
                    cursor.execute("PRAGMA foreign_keys=ON")
                    cursor.close()
            else:
                engine = create_engine(url, pool_pre_ping=True)
            _engines[url] = engine
        return engine


def dispose_engines() -> None:
    with _lock:
        for engine in _engines.values():
            engine.dispose()
        _engines.clear()


@contextmanager
def session_scope(url: str) -> Iterator[Session]:
    """A transaction: committed on success, rolled back on any error."""
    session = sessionmaker(bind=get_engine(url), expire_on_commit=False)()
    try:
        yield session
        session.commit()
    except BaseException as exc:
        name_the_database(exc, url)
        try:
            session.rollback()
        except BaseException as lost:  # the connection is gone too: its error names the database as well
            name_the_database(lost, url)
            raise
        raise
    finally:
        session.close()


def name_the_database(exc: BaseException, url: str) -> None:
    """The driver says "server closed the connection unexpectedly" or "connection refused" without
    saying which server: the error is noted with the state DB (password hidden) it came from."""
    if isinstance(exc, OperationalError) and not any(
        "state DB" in note for note in getattr(exc, "__notes__", [])
    ):
        where = make_url(url).render_as_string(hide_password=True)
        exc.add_note(f"while using the state DB {where}")


def alembic_config(url: str):
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def migrate(url: str) -> None:
    """Bring the schema to the newest revision; safe to call from many tasks at once."""
    from alembic import command

    engine = get_engine(url)
    config = alembic_config(url)
    if engine.dialect.name == "postgresql":
        with engine.connect() as connection:
            connection.execute(text("SELECT pg_advisory_lock(:id)"), {"id": _ADVISORY_LOCK_ID})
            try:
                config.attributes["connection"] = connection
                command.upgrade(config, "head")
                connection.commit()
            finally:
                connection.execute(text("SELECT pg_advisory_unlock(:id)"), {"id": _ADVISORY_LOCK_ID})
                connection.commit()
    else:
        with engine.begin() as connection:
            config.attributes["connection"] = connection
            command.upgrade(config, "head")


def chunks(items: Sequence, size: int) -> Iterator[Sequence]:
    """Slices of ``items`` of at most ``size``: IN lists and multi-row VALUES stay short (SQLite caps
    bound parameters per statement)."""
    for start in range(0, len(items), size):
        yield items[start : start + size]


def insert_ignore(session: Session, model: Any, rows: Sequence[dict], index_elements: Sequence[str]) -> int:
    """INSERT ... ON CONFLICT DO NOTHING for Postgres and SQLite; returns how many rows were new.

    Sent as one executemany per set of columns, with RETURNING to count the new rows: the statement
    compiles once, where a multi-row VALUES of 500 rows compiled anew for every batch and cost more
    CPU than the database's work (0.1-0.2 s a batch)."""
    if not rows:
        return 0
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    elif dialect == "sqlite":
        from sqlalchemy.dialects.sqlite import insert
    else:  # pragma: no cover - only the two supported backends
        raise RuntimeError(f"unsupported state DB dialect {dialect!r}")
    table = model.__table__ if hasattr(model, "__table__") else model
    key = next(iter(table.primary_key.columns))
    by_columns: dict[tuple[str, ...], list[dict]] = {}
    for row in rows:  # executemany needs the same columns in every row
        by_columns.setdefault(tuple(sorted(row)), []).append(row)
    statement = insert(table).on_conflict_do_nothing(index_elements=list(index_elements)).returning(key)
    inserted = 0
    for same in by_columns.values():
        for batch in chunks(same, INSERT_BATCH):
            inserted += len(session.execute(statement, list(batch)).all())
    return inserted
