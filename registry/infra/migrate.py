"""Apply and inspect Alembic migrations from code (`deltahub db upgrade`, tests)."""

from __future__ import annotations

import errno
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine

MIGRATIONS_DIR = Path(__file__).resolve().parents[2] / "migrations"


def alembic_config(url: str) -> Config:
    # The migrations live beside the packages in a checkout (the fixed layout puts them
    # at the top), so a wheel install has none: say so, rather than Alembic's bare
    # "Path doesn't exist" from deep inside `db upgrade` or `serve`.
    if not MIGRATIONS_DIR.is_dir():
        raise FileNotFoundError(
            errno.ENOENT, "deltahub's database migrations are not installed beside its "
            "packages (a wheel does not carry them); install the server from a checkout "
            "with pip install -e '.[server]', as the Dockerfile does", str(MIGRATIONS_DIR))
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    # Alembic's Config interpolates %; URLs may contain %-escaped passwords.
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def upgrade(url: str, revision: str = "head") -> None:
    command.upgrade(alembic_config(url), revision)


def head_revision(url: str) -> str | None:
    return ScriptDirectory.from_config(alembic_config(url)).get_current_head()


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()
