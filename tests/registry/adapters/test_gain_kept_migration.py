"""The gain-kept migration clears the ranked column where the fine-tune did not improve
the headline data set (issue 27), and its downgrade sets it back, on both databases."""

from __future__ import annotations

import json

from alembic import command
from sqlalchemy import Engine, text

from registry.infra.migrate import alembic_config, current_revision, head_revision, upgrade

BEFORE = "c41d7e9a2b06"
REVISION = "f2a6d8c4b1e9"


def _quality(base: float, finetune: float) -> str:
    return json.dumps({"gain_kept": 0.985, "evaluation": {"datasets": [
        {"name": "first", "base": {"loss": base}, "finetune": {"loss": finetune},
         "compressed": {"loss": 1.0}, "gain_kept": 0.985}]}})


def _insert(engine: Engine, name: str, quality: str) -> None:
    with engine.begin() as conn:
        conn.execute(text(
            "INSERT INTO models (name, kind, status, created_at) VALUES "
            "(:name, 'base', 'ready', CURRENT_TIMESTAMP)"), {"name": f"gk-base-{name}"})
        base_id = conn.execute(text("SELECT id FROM models WHERE name = :name"),
                               {"name": f"gk-base-{name}"}).scalar()
        conn.execute(text(
            "INSERT INTO adapters (name, kind, status, base_id, params, size_bytes, quality, "
            "gain_kept, created_at) VALUES (:name, 'bitdelta', 'ready', :base, '{}', 0, "
            ":quality, 0.985, CURRENT_TIMESTAMP)"),
            {"name": f"gk-{name}", "base": base_id, "quality": quality})


def _gains(engine: Engine) -> dict[str, float | None]:
    with engine.begin() as conn:
        return dict(conn.execute(text(
            "SELECT name, gain_kept FROM adapters WHERE name LIKE 'gk-%'")).all())


def _clean(engine: Engine) -> None:
    """Remove this test's rows only: the PostgreSQL database is shared."""
    with engine.begin() as conn:
        conn.execute(text("DELETE FROM adapters WHERE name LIKE 'gk-%'"))
        conn.execute(text("DELETE FROM models WHERE name LIKE 'gk-base-%'"))


def test_a_regressing_headline_leaves_the_ranking(engine: Engine, database_url: str) -> None:
    try:
        command.downgrade(alembic_config(database_url), BEFORE)
        _insert(engine, "improved", _quality(2.0, 1.5))
        _insert(engine, "regressed", _quality(1.283, 1.503))
        _insert(engine, "flat", _quality(2.0, 2.0004))
        _insert(engine, "unevaluated", json.dumps({"gain_kept": 0.985}))
        upgrade(database_url, REVISION)
        assert _gains(engine) == {"gk-improved": 0.985, "gk-regressed": None,
                                  "gk-flat": None, "gk-unevaluated": 0.985}
        command.downgrade(alembic_config(database_url), BEFORE)
        assert set(_gains(engine).values()) == {0.985}
    finally:
        _clean(engine)
        upgrade(database_url)  # the PostgreSQL database is shared by the session's tests
    assert current_revision(engine) == head_revision(database_url)
