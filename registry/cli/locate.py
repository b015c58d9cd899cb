"""Find the server's database the way the server does, and never create one by accident.

`deltahub serve`, `worker`, `token`, `gc` and `db current` read `DELTAHUB_DATABASE_URL`
(or `.env`, or the default `./deltahub-data/deltahub.db`, relative to the current
directory) exactly as the server does (registry/settings.py). Opening a SQLite URL creates
the file, so a command run in the wrong directory would make an empty database and then
fail on a missing table. Instead, each checks first that the database exists and is
migrated, and otherwise says where it looked and how to create it. Only
`deltahub db upgrade` creates one.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

from sqlalchemy import Engine
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

from registry.cli.failures import EXIT_NO_DATABASE, CommandFailure
from registry.infra.engines import make_engine, make_session_factory
from registry.infra.migrate import current_revision, head_revision
from registry.settings import Settings

DATABASE_ENV = "DELTAHUB_DATABASE_URL"
CREATE_HINT = f"create it with `deltahub db upgrade`, or point {DATABASE_ENV} at the server's"


def shown(url: str) -> str:
    """The URL with any password hidden, for messages."""
    return make_url(url).render_as_string(hide_password=True)


def origin() -> str:
    """Where the database URL came from, as Settings reads it."""
    if DATABASE_ENV in os.environ:
        return DATABASE_ENV
    env_file = Path(".env")
    if env_file.is_file() and DATABASE_ENV in env_file.read_text(errors="replace"):
        return f"{env_file.resolve()}"
    return f"the default, relative to the current directory {Path.cwd()}"


def sqlite_path(url: str) -> Path | None:
    """The file of a SQLite URL (absolute), or None for another database or memory."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return None
    return Path(parsed.database).resolve()


def migrated_engine(settings: Settings) -> Engine:
    """An engine on the settings' database, which exists and is at the newest revision."""
    url = settings.DATABASE_URL
    path = sqlite_path(url)
    if path is not None and not path.is_file():
        raise CommandFailure("no database", f"{path} does not exist (from {origin()}); "
                             f"{CREATE_HINT}", EXIT_NO_DATABASE)
    engine = make_engine(url)
    try:
        current = current_revision(engine)
    except OperationalError as exc:
        engine.dispose()
        reason = str(exc.orig).strip().splitlines()[0] if exc.orig else str(exc)
        raise CommandFailure("cannot open the database", f"{shown(url)} (from {origin()}): "
                             f"{reason}; {CREATE_HINT}", EXIT_NO_DATABASE) from exc
    head = head_revision(url)
    if current != head:
        engine.dispose()
        state = "has no deltahub tables" if current is None else f"is at revision {current}"
        raise CommandFailure("database not migrated", f"{shown(url)} (from {origin()}) "
                             f"{state}, not {head}; run `deltahub db upgrade`",
                             EXIT_NO_DATABASE)
    return engine


@contextlib.contextmanager
def migrated_sessions(settings: Settings) -> Iterator[sessionmaker[Session]]:
    """Sessions on the migrated database; its engine's connections closed at the end
    (a command run in-process, as the tests run it, must not leave them to the GC)."""
    engine = migrated_engine(settings)
    try:
        yield make_session_factory(engine)
    finally:
        engine.dispose()


def revision_of(url: str) -> str | None:
    """The database's schema revision, on an engine closed again at once."""
    engine = make_engine(url)
    try:
        return current_revision(engine)
    finally:
        engine.dispose()
