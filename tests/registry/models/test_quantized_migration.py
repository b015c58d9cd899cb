"""The 4-bit bases migration goes down and up again on both databases."""

from __future__ import annotations

from alembic import command
from sqlalchemy import Engine, inspect

from registry.infra.migrate import alembic_config, current_revision, head_revision, upgrade

BEFORE = "b8e2f05c1d93"  # the events outbox
QUANTIZED = "c3d9f4a8e215"
COLUMNS = {"quantization", "quantized_from_id"}


def _columns(engine: Engine) -> set[str]:
    return {c["name"] for c in inspect(engine).get_columns("models")}


def test_downgrade_drops_the_columns_and_upgrade_restores_them(engine: Engine,
                                                               database_url: str) -> None:
    assert _columns(engine) >= COLUMNS
    try:
        command.downgrade(alembic_config(database_url), BEFORE)
        assert current_revision(engine) == BEFORE
        assert not COLUMNS & _columns(engine)
        assert {"model_files", "adapters"} <= set(inspect(engine).get_table_names())
        upgrade(database_url, QUANTIZED)
        assert _columns(engine) >= COLUMNS
        assert "ix_models_quantized_from_id" in {
            i["name"] for i in inspect(engine).get_indexes("models")}
    finally:
        upgrade(database_url)  # the PostgreSQL database is shared by the session's tests
    assert current_revision(engine) == head_revision(database_url)
