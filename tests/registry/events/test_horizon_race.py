"""Two gc runs creating the event horizon's one row at once: neither fails."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from datetime import timedelta
from pathlib import Path

import pytest
from fastapi import FastAPI
from sqlalchemy import delete, select, text, update

from registry.auth.service import create_token, revoke_token
from registry.events.repository import EventRepository
from registry.events.service import prune_events
from registry.tables import Event, EventHorizon, utcnow
from tests.registry.workerproc import poll_until


def _old_events(app: FastAPI, count: int) -> int:
    """`count` events, all past retention; the newest one's id."""
    for i in range(count):
        with app.state.database.writing() as session:
            revoke_token(session, create_token(session, f"t{i}", ["read"]).token.id)
    with app.state.database.writing() as session:
        session.execute(update(Event).values(created_at=utcnow() - timedelta(days=30)))
        session.execute(delete(EventHorizon))  # as a database made from the models
        return EventRepository(session).last_id()


def _horizon(app: FastAPI) -> list[int]:
    with app.state.database.reading() as session:
        return list(session.scalars(select(EventHorizon.pruned_through)))


def test_concurrent_gc_runs_create_the_horizon_once(app: FastAPI) -> None:
    newest = _old_events(app, 3)
    start, errors = threading.Barrier(2), list[BaseException]()

    def gc() -> None:
        try:
            start.wait()
            with app.state.database.writing() as session:
                prune_events(session, app.state.settings)
        except BaseException as exc:  # reported by the test
            errors.append(exc)

    runs = [threading.Thread(target=gc) for _ in range(2)]
    for run in runs:
        run.start()
    for run in runs:
        run.join()
    assert errors == []
    assert _horizon(app) == [newest]


# PostgreSQL's alone (SQLite has one writer at a time): run there, never skipped here.
@pytest.mark.parametrize("database_url", [pytest.param("postgres", marks=pytest.mark.postgres)],
                         indirect=True)
def test_gc_waits_for_another_creating_the_horizon(app: FastAPI, database_url: str) -> None:
    """Deterministic on PostgreSQL: one transaction has inserted the row, not committed;
    a gc run meanwhile waits on it (seen in pg_stat_activity), then goes on."""
    newest = _old_events(app, 2)
    errors = list[BaseException]()
    with app.state.database.writing() as first:
        EventRepository(first)._locked_horizon()  # inserted, uncommitted
        pid = first.scalar(text("SELECT pg_backend_pid()"))

        def gc() -> None:
            try:
                with app.state.database.writing() as session:
                    prune_events(session, app.state.settings)
            except BaseException as exc:  # reported by the test
                errors.append(exc)

        second = threading.Thread(target=gc)
        second.start()
        with app.state.database.reading() as watch:
            poll_until(lambda: bool(watch.scalar(text(
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                "AND :pid = ANY(pg_blocking_pids(pid))"), {"pid": pid})), 30,
                "the second gc to wait on the first one's row")
    second.join()
    assert errors == []
    assert _horizon(app) == [newest]


def test_two_gc_commands_at_once(app: FastAPI, database_url: str, tmp_path: Path) -> None:
    """`deltahub gc` twice at the same time, as two cron jobs would: both succeed."""
    newest = _old_events(app, 3)
    env = {k: v for k, v in os.environ.items() if not k.startswith("DELTAHUB_")}
    env.update({"DELTAHUB_DATABASE_URL": database_url, "DELTAHUB_EVENT_RETENTION_DAYS": "7",
                "DELTAHUB_STORAGE_URL": f"file://{tmp_path / 'blobs'}", "COLUMNS": "200"})
    command = [sys.executable, "-c", "from registry.cli.app import main; main()", "gc"]
    runs = [subprocess.Popen(command, env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT) for _ in range(2)]
    outputs = [run.communicate(timeout=120)[0].decode() for run in runs]
    assert [run.returncode for run in runs] == [0, 0], outputs
    assert _horizon(app) == [newest]
