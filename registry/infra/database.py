"""The server's way into the database: bounded turns, one thread per transaction.

Each request's SQL runs as one function in one worker thread, in one transaction that
commits there, so a pooled connection is held only by a running thread. The wait for a
turn and the wait on a lock are bounded; either ends in a JSON 503 `DatabaseBusy` with
`Retry-After`. docs/architecture.md, "Requests and the database".
"""

from __future__ import annotations

import asyncio
import contextlib
import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TypeVar

import anyio
import anyio.to_thread
from sqlalchemy import Engine, text
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.orm import Session, sessionmaker

from registry.errors import DatabaseBusy, DatabaseUnavailable, Unavailable
from registry.infra.engines import (
    is_memory_sqlite,
    is_sqlite,
    make_engine,
    make_session_factory,
    unit_of_work,
)
from registry.settings import Settings

T = TypeVar("T")

# Connections beyond the turns, for the readiness probe and the odd synchronous caller.
_SPARE_CONNECTIONS = 2
# PostgreSQL SQLSTATEs that mean "waited too long on a lock": lock_not_available,
# query_canceled (statement or lock timeout), deadlock_detected.
_PG_BUSY = {"55P03", "57014", "40P01"}
_SQLITE_BUSY = ("database is locked", "database table is locked", "database is busy")


@dataclass
class _Gates:
    """Per event loop: turns for readers and writers, and the threads that run them."""

    readers: anyio.Semaphore
    writers: anyio.Semaphore
    threads: anyio.CapacityLimiter


class Database:
    def __init__(self, url: str, *, readers: int = 8, writers: int = 4,
                 queue_timeout_s: float = 10.0, lock_timeout_s: float = 5.0,
                 retry_after_s: int = 2, idle_transaction_timeout_s: float = 30.0) -> None:
        self.url = url
        self.readers = readers
        # SQLite has one writer at a time; more turns would only queue inside it.
        self.writers = 1 if is_sqlite(url) else writers
        self.queue_timeout_s = queue_timeout_s
        self.retry_after_s = retry_after_s
        pool = self.readers + self.writers + _SPARE_CONNECTIONS
        self.write_engine = make_engine(url, writer=True, pool_size=pool,
                                        pool_timeout_s=queue_timeout_s,
                                        lock_timeout_s=lock_timeout_s,
                                        idle_transaction_timeout_s=idle_transaction_timeout_s)
        if is_sqlite(url) and not is_memory_sqlite(url):
            self.read_engine = make_engine(url, writer=False, pool_size=pool,
                                           pool_timeout_s=queue_timeout_s,
                                           lock_timeout_s=lock_timeout_s)
        else:
            self.read_engine = self.write_engine
        self._read_factory = make_session_factory(self.read_engine)
        self._write_factory = make_session_factory(self.write_engine)
        self._gates: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Gates] = (
            weakref.WeakKeyDictionary())

    @classmethod
    def from_settings(cls, settings: Settings) -> Database:
        return cls(settings.DATABASE_URL, readers=settings.DB_READERS,
                   writers=settings.DB_WRITERS,
                   queue_timeout_s=settings.DB_QUEUE_TIMEOUT_SECONDS,
                   lock_timeout_s=settings.DB_LOCK_TIMEOUT_SECONDS,
                   retry_after_s=settings.RETRY_AFTER_SECONDS,
                   # A worker frozen inside a short transaction holds its job's row lock,
                   # which claims skip (SKIP LOCKED): end it within one lease.
                   idle_transaction_timeout_s=settings.JOB_LEASE_SECONDS)

    @property
    def engine(self) -> Engine:
        return self.write_engine

    @property
    def write_factory(self) -> sessionmaker[Session]:
        return self._write_factory

    # -- synchronous: for code already running in a worker thread --------------------

    @contextlib.contextmanager
    def reading(self) -> Iterator[Session]:
        with self._translated(), unit_of_work(self._read_factory) as session:
            yield session

    @contextlib.contextmanager
    def writing(self) -> Iterator[Session]:
        with self._translated(), unit_of_work(self._write_factory) as session:
            yield session

    # -- asynchronous: for request handlers -------------------------------------------

    async def read(self, work: Callable[[Session], T]) -> T:
        """Run `work(session)` in a read-only transaction, in a worker thread."""
        gates = self._gates_here()
        return await self._run(gates.readers, "read", self.reading, work, gates)

    async def write(self, work: Callable[[Session], T]) -> T:
        """Run `work(session)` in a transaction that may write, in a worker thread."""
        gates = self._gates_here()
        return await self._run(gates.writers, "write", self.writing, work, gates)

    async def ping(self) -> None:
        await self.read(lambda session: session.execute(text("SELECT 1")))

    def dispose(self) -> None:
        self.write_engine.dispose()
        if self.read_engine is not self.write_engine:
            self.read_engine.dispose()

    async def _run(self, turn: anyio.Semaphore, kind: str,
                   transaction: Callable[[], contextlib.AbstractContextManager[Session]],
                   work: Callable[[Session], T], gates: _Gates) -> T:
        try:
            with anyio.fail_after(self.queue_timeout_s):
                await turn.acquire()
        except TimeoutError:
            raise DatabaseBusy(
                f"the database is busy: no {kind} turn came within "
                f"{self.queue_timeout_s:g} s; retry after {self.retry_after_s} s",
                retry_after_seconds=self.retry_after_s) from None
        try:
            def in_thread() -> T:
                with transaction() as session:
                    return work(session)

            # Not abandoned on cancellation: a transaction always finishes (commit or
            # rollback) in its own thread before its turn is handed on.
            return await anyio.to_thread.run_sync(in_thread, limiter=gates.threads)
        finally:
            turn.release()

    def _gates_here(self) -> _Gates:
        # Semaphores belong to one event loop; the app may be served by several over its
        # life (tests), so each loop gets its own.
        loop = asyncio.get_running_loop()
        gates = self._gates.get(loop)
        if gates is None:
            gates = _Gates(anyio.Semaphore(self.readers), anyio.Semaphore(self.writers),
                           anyio.CapacityLimiter(self.readers + self.writers))
            self._gates[loop] = gates
        return gates

    @contextlib.contextmanager
    def _translated(self) -> Iterator[None]:
        try:
            yield
        except Unavailable:
            raise
        except PoolTimeout as exc:
            raise DatabaseBusy(
                f"no database connection was free within {self.queue_timeout_s:g} s; "
                f"retry after {self.retry_after_s} s",
                retry_after_seconds=self.retry_after_s) from exc
        except DBAPIError as exc:
            raise translate_db_error(exc, self.retry_after_s) from exc


def translate_db_error(exc: DBAPIError, retry_after_s: int) -> Exception:
    """A lock wait that ran out → DatabaseBusy; a database we cannot reach → Unavailable.

    Anything else is a bug, and stays the error it is.
    """
    if is_lock_timeout(exc):
        return DatabaseBusy(
            "the database is busy (a lock was held too long by another transaction); "
            f"nothing was changed, retry after {retry_after_s} s",
            retry_after_seconds=retry_after_s)
    if (isinstance(exc, OperationalError) and exc.connection_invalidated) or _unreachable(exc):
        return DatabaseUnavailable(
            f"the database cannot be reached; nothing was changed, retry after "
            f"{retry_after_s} s", retry_after_seconds=retry_after_s)
    return exc


def is_lock_timeout(exc: DBAPIError) -> bool:
    sqlstate = getattr(exc.orig, "sqlstate", None)
    if sqlstate in _PG_BUSY:
        return True
    message = str(exc.orig).lower()
    return isinstance(exc, OperationalError) and any(s in message for s in _SQLITE_BUSY)


def _unreachable(exc: DBAPIError) -> bool:
    sqlstate = getattr(exc.orig, "sqlstate", None) or ""
    # Class 08: connection exceptions; 57P0x: the server is shutting down or restarting.
    if sqlstate.startswith("08") or sqlstate.startswith("57P0"):
        return True
    message = str(exc.orig).lower()
    return isinstance(exc, OperationalError) and ("connection" in message
                                                  or "unable to open" in message)
