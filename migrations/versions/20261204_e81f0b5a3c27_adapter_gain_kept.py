"""adapters: gain kept as a column, so listings sort by it

Revision ID: e81f0b5a3c27
Revises: d4e7a2c91f30
Create Date: 2026-12-04 18:00:00

A plain nullable ADD COLUMN (no batch rebuild on SQLite: see bc460c14b59f for why), set
from each version's quality JSON where it states a finite `gain_kept` (done in Python:
the JSON functions of SQLite and PostgreSQL differ), and an index for a base's versions
ordered by it.
"""

import json
import math
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = 'e81f0b5a3c27'
down_revision: str | None = 'd4e7a2c91f30'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_INDEX = 'ix_adapters_base_id_gain_kept_id'


def upgrade() -> None:
    op.add_column('adapters', sa.Column('gain_kept', sa.Float(), nullable=True))
    op.create_index(_INDEX, 'adapters', ['base_id', 'gain_kept', 'id'])
    bind = op.get_bind()
    adapters = sa.table('adapters', sa.column('id', sa.Integer()),
                        sa.column('quality', sa.JSON()), sa.column('gain_kept', sa.Float()))
    rows = bind.execute(sa.select(adapters.c.id, adapters.c.quality).where(
        adapters.c.quality.is_not(None))).all()
    for adapter_id, quality in rows:
        value = _gain_kept(quality)
        if value is not None:
            bind.execute(adapters.update().where(adapters.c.id == adapter_id).values(
                gain_kept=value))


def downgrade() -> None:
    op.drop_index(_INDEX, table_name='adapters')
    if op.get_bind().dialect.name == 'sqlite':
        # SQLite (3.35+) drops a column no index uses in place; a batch rebuild would drop
        # the table, and that cascades into adapter_files, adapter_aliases and jobs.
        op.execute('ALTER TABLE adapters DROP COLUMN gain_kept')
    else:
        op.drop_column('adapters', 'gain_kept')


def _gain_kept(quality: object) -> float | None:
    if isinstance(quality, str):
        quality = json.loads(quality)
    value = quality.get('gain_kept') if isinstance(quality, dict) else None
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return None
