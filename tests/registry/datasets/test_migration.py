"""The data set migration goes down and up again on both databases."""

from __future__ import annotations

from alembic import command
from sqlalchemy import Engine, inspect

from registry.infra.migrate import alembic_config, current_revision, head_revision, upgrade

BEFORE = "bc460c14b59f"  # the revision the data set tables came after
DATASETS = "d4e7a2c91f30"


def _tables(engine: Engine) -> set[str]:
    return set(inspect(engine).get_table_names())


def test_downgrade_drops_the_tables_and_upgrade_restores_them(engine: Engine,
                                                              database_url: str) -> None:
    assert {"datasets", "dataset_files"} <= _tables(engine)
    try:
        command.downgrade(alembic_config(database_url), BEFORE)
        assert current_revision(engine) == BEFORE
        assert not {"datasets", "dataset_files"} & _tables(engine)
        assert "model_files" in _tables(engine)
        upgrade(database_url, DATASETS)
        assert {"datasets", "dataset_files"} <= _tables(engine)
    finally:
        upgrade(database_url)  # the PostgreSQL database is shared by the session's tests
    assert current_revision(engine) == head_revision(database_url)
