"""The database layer under contention: reads never wait for writers, every wait is bounded.

These drive `registry.infra.database.Database` directly; tests/registry/test_load.py does the
same through a server process under load.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import anyio
import pytest
from sqlalchemy import create_engine, select, text
from sqlalchemy.orm import Session

from registry.errors import DatabaseBusy
from registry.infra.database import Database
from registry.tables import Model, ModelKind, Status


@pytest.fixture
def database(database_url: str) -> Iterator[Database]:
    db = Database(database_url, readers=2, writers=2, queue_timeout_s=0.5, lock_timeout_s=0.5,
                  retry_after_s=3)
    yield db
    db.dispose()


def _add_model(session: Session, name: str) -> int:
    model = Model(name=name, kind=ModelKind.BASE, status=Status.PENDING)
    session.add(model)
    session.flush()
    return model.id


def _names(session: Session) -> list[str]:
    return list(session.scalars(select(Model.name).order_by(Model.id)))


def test_writes_commit_and_reads_see_them(database: Database) -> None:
    async def scenario() -> list[str]:
        await database.write(lambda s: _add_model(s, "a"))
        return await database.read(_names)

    assert anyio.run(scenario) == ["a"]


def test_a_failed_write_leaves_nothing(database: Database) -> None:
    def add_then_fail(session: Session) -> None:
        _add_model(session, "half")
        raise RuntimeError("boom")

    async def scenario() -> list[str]:
        with pytest.raises(RuntimeError):
            await database.write(add_then_fail)
        return await database.read(_names)

    assert anyio.run(scenario) == []


def test_sqlite_read_transactions_cannot_write(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    _migrate(url)
    db = Database(url)
    try:
        with pytest.raises(Exception, match=r"readonly|read-only|query_only"), db.reading() as s:
            _add_model(s, "sneaky")
    finally:
        db.dispose()


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    _migrate(url)
    return url


def _migrate(url: str) -> None:
    from registry.infra.migrate import upgrade

    upgrade(url)


def test_sqlite_reads_answer_while_another_process_holds_the_write_lock(
        sqlite_url: str) -> None:
    db = Database(sqlite_url, lock_timeout_s=0.5, retry_after_s=3)
    async def seed() -> None:
        await db.write(lambda s: _add_model(s, "before"))
    anyio.run(seed)
    # Another process's connection (plain sqlite3, as any other program would) takes
    # the write lock and keeps it.
    other = sqlite3.connect(sqlite_url.removeprefix("sqlite:///"), isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    other.execute("INSERT INTO models (name, kind, status, created_at) "
                  "VALUES ('theirs', 'base', 'pending', '2026-01-01')")
    try:
        async def scenario() -> tuple[list[str], float, DatabaseBusy]:
            names = await db.read(_names)  # a reader does not queue behind the writer
            started = time.monotonic()
            with pytest.raises(DatabaseBusy) as busy:
                await db.write(lambda s: _add_model(s, "mine"))
            return names, time.monotonic() - started, busy.value

        names, waited, busy = anyio.run(scenario)
    finally:
        other.rollback()
        other.close()
    assert names == ["before"]
    assert 0.4 < waited < 3.0  # the lock timeout, not 30 s
    assert busy.headers() == {"Retry-After": "3"}
    assert "lock" in busy.detail
    db.dispose()


def test_a_full_queue_answers_busy_within_the_bound(database: Database) -> None:
    """More concurrent writers than turns: the ones that wait too long get DatabaseBusy."""
    def slow_write(session: Session) -> None:
        session.execute(text("SELECT 1"))
        time.sleep(1.0)  # holds its turn past the others' queue timeout

    async def scenario() -> list[str]:
        outcomes: list[str] = []

        async def one() -> None:
            started = time.monotonic()
            try:
                await database.write(slow_write)
                outcomes.append("ok")
            except DatabaseBusy:
                assert time.monotonic() - started < 0.9  # gave up at the queue timeout
                outcomes.append("busy")

        async with anyio.create_task_group() as group:
            for _ in range(database.writers + 3):
                group.start_soon(one)
        return outcomes

    outcomes = anyio.run(scenario)
    assert outcomes.count("ok") == database.writers
    assert outcomes.count("busy") == 3


def test_readers_are_not_starved_by_queued_writers(database: Database) -> None:
    def slow_write(session: Session) -> None:
        time.sleep(0.3)

    async def scenario() -> float:
        async with anyio.create_task_group() as group:
            for _ in range(database.writers * 3):
                group.start_soon(_ignore_busy, database, slow_write)
            await anyio.sleep(0.05)
            started = time.monotonic()
            await database.read(_names)
            return time.monotonic() - started

    assert anyio.run(scenario) < 0.25


async def _ignore_busy(database: Database, work: Callable[[Session], None]) -> None:
    with contextlib.suppress(DatabaseBusy):
        await database.write(work)


@pytest.mark.postgres
def test_postgres_row_lock_wait_is_bounded(postgres_url: str) -> None:
    from tests.conftest import _truncate_all

    _truncate_all(postgres_url)
    db = Database(postgres_url, lock_timeout_s=0.5, retry_after_s=3)
    holder = create_engine(postgres_url)
    try:
        async def seed() -> int:
            return await db.write(lambda s: _add_model(s, "locked"))
        model_id = anyio.run(seed)
        with holder.connect() as conn:
            trans = conn.begin()
            conn.execute(text("SELECT id FROM models WHERE id = :id FOR UPDATE"),
                         {"id": model_id})

            def lock_it(session: Session) -> None:
                session.execute(select(Model).where(Model.id == model_id).with_for_update())

            async def scenario() -> tuple[float, list[str]]:
                started = time.monotonic()
                with pytest.raises(DatabaseBusy):
                    await db.write(lock_it)
                waited = time.monotonic() - started
                return waited, await db.read(_names)  # plain reads do not wait

            waited, names = anyio.run(scenario)
            trans.rollback()
        assert 0.4 < waited < 3.0
        assert names == ["locked"]
    finally:
        holder.dispose()
        db.dispose()


def test_each_event_loop_gets_its_own_turns(database: Database) -> None:
    """The app outlives event loops (TestClient, then uvicorn): turns are per loop."""
    for _ in range(2):
        assert asyncio.run(database.read(_names)) == []


@pytest.mark.postgres
def test_the_suite_brings_its_own_postgres_unless_one_is_named(postgres_url: str) -> None:
    """With DELTAHUB_TEST_POSTGRES_URL unset, no shared server (127.0.0.1:5432) is used."""
    import os

    from sqlalchemy.engine import make_url

    named = os.environ.get("DELTAHUB_TEST_POSTGRES_URL")
    url = make_url(postgres_url)
    if named:
        assert url.host == make_url(named).host
        return
    assert url.host is None
    assert str(url.query["host"]).startswith("/")
    engine = create_engine(postgres_url)
    try:
        with engine.connect() as conn:
            # A Unix-socket connection has no server address: nothing reached over TCP.
            assert conn.execute(text("SELECT inet_server_addr()")).scalar() is None
            assert conn.execute(text("SHOW server_version_num")).scalar_one() >= "160000"
    finally:
        engine.dispose()
