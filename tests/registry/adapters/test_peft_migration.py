"""The PEFT kinds migration goes down and up again on both databases, and its widened
kind constraint still refuses a kind nobody defined."""

from __future__ import annotations

import pytest
from alembic import command
from sqlalchemy import Engine, inspect, text
from sqlalchemy.exc import IntegrityError

from registry.infra.migrate import alembic_config, current_revision, head_revision, upgrade

BEFORE = "b8e2f05c1d93"
PEFT_KINDS = "c41d7e9a2b06"


def _columns(engine: Engine) -> set[str]:
    return {c["name"] for c in inspect(engine).get_columns("adapters")}


def _insert(engine: Engine, kind: str) -> None:
    with engine.begin() as conn:
        conn.execute(text(
            "INSERT INTO models (name, kind, status, created_at) VALUES "
            "(:name, 'base', 'ready', CURRENT_TIMESTAMP)"), {"name": f"base-{kind}"})
        base_id = conn.execute(text("SELECT id FROM models WHERE name = :name"),
                               {"name": f"base-{kind}"}).scalar()
        conn.execute(text(
            "INSERT INTO adapters (name, kind, status, base_id, params, size_bytes, "
            "created_at) VALUES (:name, :kind, 'pending', :base, '{}', 0, CURRENT_TIMESTAMP)"),
            {"name": f"a-{kind}", "kind": kind, "base": base_id})


def _clean(engine: Engine) -> None:
    """Remove this test's rows only: the PostgreSQL database is shared."""
    with engine.begin() as conn:
        conn.execute(text("DELETE FROM adapters WHERE name LIKE 'a-%'"))
        conn.execute(text("DELETE FROM models WHERE name LIKE 'base-%'"))


def test_downgrade_and_upgrade_keep_the_kind_constraint(engine: Engine,
                                                        database_url: str) -> None:
    try:
        _insert(engine, "peft")
        with pytest.raises(IntegrityError):
            _insert(engine, "hologram")
        _clean(engine)
        command.downgrade(alembic_config(database_url), BEFORE)
        assert current_revision(engine) == BEFORE
        assert "peft_type" not in _columns(engine)
        with pytest.raises(IntegrityError):
            _insert(engine, "peft")
        upgrade(database_url, PEFT_KINDS)
        assert "peft_type" in _columns(engine)
        _insert(engine, "peft")
    finally:
        _clean(engine)
        upgrade(database_url)  # the PostgreSQL database is shared by the session's tests
    assert current_revision(engine) == head_revision(database_url)
