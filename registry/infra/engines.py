"""Engines and sessions for SQLite (embedded) and PostgreSQL (deployment).

`unit_of_work` is one short transaction, for the CLI and tests. The server goes through
`registry.infra.database.Database`, which bounds every wait (registry/infra/database.py).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, MetaData, create_engine, event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.orm import DeclarativeBase, Session, sessionmaker
from sqlalchemy.pool import StaticPool

# Stable constraint names, so Alembic migrations name constraints the same way on
# every database and a later migration can drop them by name.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# Used when a caller sets no bound of its own (the CLI, migrations, tests).
DEFAULT_LOCK_TIMEOUT_SECONDS = 30.0
# Our transactions never sit idle: each runs start to end in one thread, in milliseconds.
DEFAULT_IDLE_TRANSACTION_SECONDS = 30.0


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


def is_sqlite(url: str) -> bool:
    return make_url(url).get_backend_name() == "sqlite"


def is_memory_sqlite(url: str) -> bool:
    parsed = make_url(url)
    return parsed.get_backend_name() == "sqlite" and parsed.database in (None, "", ":memory:")


def make_engine(url: str, *, writer: bool = True, pool_size: int = 5,
                pool_timeout_s: float = 30.0,
                lock_timeout_s: float = DEFAULT_LOCK_TIMEOUT_SECONDS,
                idle_transaction_timeout_s: float = DEFAULT_IDLE_TRANSACTION_SECONDS) -> Engine:
    """An engine whose waits on locks end after `lock_timeout_s` with an error.

    On SQLite, a `writer` engine starts every transaction with BEGIN IMMEDIATE; a reader
    engine starts deferred transactions on connections that refuse writes.
    """
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        return _sqlite_engine(parsed, writer, pool_size, pool_timeout_s, lock_timeout_s)
    lock_ms, idle_ms = int(lock_timeout_s * 1000), int(idle_transaction_timeout_s * 1000)
    # No pre-ping: it is a round trip on every checkout (a fifth of a 304's CPU). A
    # connection the server dropped (a restart) fails its request with a 503
    # `DatabaseUnavailable` and Retry-After, and SQLAlchemy then discards every pooled
    # connection older than the failure, so the next requests reconnect.
    return create_engine(
        url, pool_pre_ping=False, pool_size=pool_size, max_overflow=0,
        pool_timeout=pool_timeout_s,
        connect_args={
            # A statement waiting on a row or advisory lock gives up instead of queueing
            # forever behind a stuck transaction (the caller turns that into a 503).
            # A transaction left open by a frozen process (a worker paused mid-heartbeat)
            # is ended by the server, so its row locks cannot outlive a job's lease;
            # keepalives notice a peer machine that vanished in minutes, not hours.
            "options": f"-c lock_timeout={lock_ms} "
                       f"-c idle_in_transaction_session_timeout={idle_ms}",
            "connect_timeout": max(1, int(lock_timeout_s)),
            "keepalives": 1, "keepalives_idle": 30, "keepalives_interval": 10,
            "keepalives_count": 3,
        },
    )


def _sqlite_engine(url: URL, writer: bool, pool_size: int, pool_timeout_s: float,
                   lock_timeout_s: float) -> Engine:
    options: dict[str, Any] = {"connect_args": {"check_same_thread": False,
                                                "timeout": lock_timeout_s}}
    if url.database in (None, "", ":memory:"):
        # One connection shared by everyone, or each would see its own empty database.
        options["poolclass"] = StaticPool
    else:
        Path(url.database).parent.mkdir(parents=True, exist_ok=True)
        options.update(pool_size=pool_size, max_overflow=0, pool_timeout=pool_timeout_s)
    engine = create_engine(url, **options)
    _configure_sqlite(engine, writer, int(lock_timeout_s * 1000))
    return engine


def _configure_sqlite(engine: Engine, writer: bool, busy_timeout_ms: int) -> None:
    """WAL, foreign keys, a busy timeout, and BEGIN IMMEDIATE for writers only.

    In WAL mode readers never wait for the writer, so read transactions stay deferred
    and never touch the write lock. A transaction that reads and then writes, though,
    fails at once ("database is locked") when another writer got there first: SQLite
    cannot wait there without deadlocking. So writers take the write lock at BEGIN and
    queue on the busy timeout instead. Readers' connections are query-only, so a write
    slipped into a read transaction fails loudly rather than taking the lock.
    """

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # we issue BEGIN ourselves
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA busy_timeout={busy_timeout_ms}")
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        if not writer:
            cursor.execute("PRAGMA query_only=ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE" if writer else "BEGIN")


def make_session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(bind=engine, expire_on_commit=False, autoflush=False)


@contextlib.contextmanager
def unit_of_work(factory: sessionmaker[Session]) -> Iterator[Session]:
    """One short transaction: commit on success, roll back on any error."""
    with factory() as session:
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise
