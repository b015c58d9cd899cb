"""Fixtures shared by the whole suite: databases, the app, tokens, a live server.

PostgreSQL tests never skip. With DELTAHUB_TEST_POSTGRES_URL unset, the suite starts a
throwaway PostgreSQL of its own (the `pgserver` wheel's binaries, on a Unix socket in a
temporary directory) and stops it at the end, so a bare machine needs no server set up by
hand. With it set, the tests use that server instead. Either way they create a database
of their own, migrate it once, and truncate it between tests; an unreachable server fails
them rather than skipping them.
"""

from __future__ import annotations

import os
import secrets
import shutil
import tempfile
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError

from registry.app import create_app
from registry.auth.service import create_token
from registry.infra.engines import Base, make_engine, make_session_factory, unit_of_work
from registry.infra.migrate import upgrade
from registry.settings import Settings
from registry.storage.local import LocalBlobStore
from tests.ports import serving_in_thread

# Fixture modules, visible to every test (pytest takes this list in the root conftest only).
pytest_plugins = ["tests.s3server", "tests.finetune", "tests.compress.bitdelta.distill_helpers"]

# Without a GPU the Triton kernels run in Triton's interpreter. The variable is read when
# triton is first imported (none of the imports above does), so it is set here, before
# pytest imports any test module.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

POSTGRES_ENV = "DELTAHUB_TEST_POSTGRES_URL"
# Read at import: the server may first be asked for inside a test that points tempfile
# elsewhere (a spool check, say), and it must neither land nor be counted there.
PG_PARENT_DIR = tempfile.gettempdir()


@pytest.fixture(scope="session")
def postgres_admin_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A PostgreSQL server to create test databases on: the named one, or our own."""
    named = os.environ.get(POSTGRES_ENV)
    if named:
        yield named
        return
    with warnings.catch_warnings():
        # platformdirs warns at pgserver's import when XDG_RUNTIME_DIR is unset (CI, root).
        warnings.simplefilter("ignore")
        import pgserver  # type: ignore[import-untyped]
    # Short path: the server's Unix socket path must stay under the kernel's 107 bytes.
    pgdata = Path(tempfile.mkdtemp(prefix="dh-pg-", dir=PG_PARENT_DIR))
    server = pgserver.get_server(pgdata, cleanup_mode="delete")
    socket_dir = make_url(server.get_uri()).query["host"]
    try:
        yield f"postgresql+psycopg://postgres@/postgres?host={socket_dir}"
    finally:
        server.cleanup()
        shutil.rmtree(pgdata, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres_url(postgres_admin_url: str) -> Iterator[str]:
    """A freshly created and migrated PostgreSQL database for this test session."""
    admin_url = postgres_admin_url
    name = f"deltahub_test_{os.getpid()}_{secrets.token_hex(3)}"
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    except OperationalError as exc:
        pytest.fail(f"PostgreSQL is unreachable at {admin_url} ({exc.orig}); start it, or "
                    f"unset {POSTGRES_ENV} to let the suite start its own")
    url = make_url(admin_url).set(database=name).render_as_string(hide_password=False)
    try:
        upgrade(url)
        yield url
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A migrated SQLite file that each test copies (faster than migrating each time)."""
    path = tmp_path_factory.mktemp("sqlite-template") / "deltahub.db"
    upgrade(f"sqlite:///{path}")
    return path


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        template: Path = request.getfixturevalue("sqlite_template")
        path = tmp_path / "deltahub.db"
        shutil.copyfile(template, path)
        return f"sqlite:///{path}"
    url: str = request.getfixturevalue("postgres_url")
    _truncate_all(url)
    return url


def _truncate_all(url: str) -> None:
    engine = create_engine(url)
    tables = ", ".join(f'"{t.name}"' for t in Base.metadata.sorted_tables)
    with engine.begin() as conn:
        conn.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))
    engine.dispose()


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    engine = make_engine(database_url)
    yield engine
    engine.dispose()


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    # No embedded worker: tests that run jobs drive a Worker themselves.
    return Settings(_env_file=None, DATABASE_URL=database_url,  # type: ignore[call-arg]
                    STORAGE_URL=f"file://{tmp_path / 'blobs'}", EMBEDDED_WORKERS=0,
                    WORK_DIR=str(tmp_path / "work"))


@pytest.fixture
def store(tmp_path: Path) -> LocalBlobStore:
    return LocalBlobStore(tmp_path / "blobs")


@pytest.fixture
def app(settings: Settings, store: LocalBlobStore) -> Iterator[FastAPI]:
    app = create_app(settings, store=store)
    yield app
    app.state.database.dispose()


@pytest.fixture
def client(app: FastAPI) -> Iterator[TestClient]:
    with TestClient(app) as test_client:
        yield test_client


@dataclass(frozen=True)
class Tokens:
    """Bearer headers for a token of each scope."""

    admin: dict[str, str]
    push: dict[str, str]
    read: dict[str, str]
    compress: dict[str, str]


@pytest.fixture
def tokens(engine: Engine) -> Tokens:
    headers = {}
    with unit_of_work(make_session_factory(engine)) as session:
        for scope in ("admin", "push", "read", "compress"):
            issued = create_token(session, f"test-{scope}", [scope])
            headers[scope] = {"Authorization": f"Bearer {issued.secret}"}
    return Tokens(**headers)


@dataclass(frozen=True)
class LiveServer:
    url: str
    app: FastAPI


@pytest.fixture
def live_server(app: FastAPI) -> Iterator[LiveServer]:
    """The app behind a real uvicorn on loopback, for the CLI and raw-socket tests."""
    with serving_in_thread(app, lifespan="off", start_timeout_s=15) as url:
        yield LiveServer(url, app)
