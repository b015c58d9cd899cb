"""drafts: who created a model or adapter draft, when a push last touched it, and the
files the push declared

Revision ID: bc460c14b59f
Revises: 8c3f2a61d0b4
Create Date: 2026-12-01 09:00:00

Plain ADD COLUMN on both databases, never a batch rebuild: SQLite rebuilds a table by
dropping it, and with foreign keys on that drop cascades into model_files, adapter_files
and jobs. So the columns are nullable, and existing rows get `touched_at = created_at`.
The token reference has no ON DELETE rule: tokens are revoked, never deleted, and
SQLite does not report the rule of a reference added this way, so the schema check
would see drift.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op


revision: str = 'bc460c14b59f'
down_revision: str | None = '8c3f2a61d0b4'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_TABLES = ('models', 'adapters')


def upgrade() -> None:
    sqlite = op.get_bind().dialect.name == 'sqlite'
    for table in _TABLES:
        fk = f'fk_{table}_created_by_token_id_tokens'
        if sqlite:
            # SQLite adds a foreign key only inline, in the column's own definition.
            op.execute(f'ALTER TABLE {table} ADD COLUMN created_by_token_id INTEGER '
                       f'CONSTRAINT {fk} REFERENCES tokens (id)')
        else:
            op.add_column(table, sa.Column('created_by_token_id', sa.Integer(), nullable=True))
            op.create_foreign_key(fk, table, 'tokens', ['created_by_token_id'], ['id'])
        op.add_column(table, sa.Column('touched_at', sa.DateTime(timezone=True),
                                       nullable=True))
        op.execute(f'UPDATE {table} SET touched_at = created_at')
        op.add_column(table, sa.Column('declared_digest', sa.String(length=64),
                                       nullable=True))


def downgrade() -> None:
    sqlite = op.get_bind().dialect.name == 'sqlite'
    for table in _TABLES:
        if sqlite:
            # SQLite (3.35+) drops a column that no index or named constraint other than
            # its own inline reference uses.
            op.execute(f'ALTER TABLE {table} DROP COLUMN declared_digest')
            op.execute(f'ALTER TABLE {table} DROP COLUMN touched_at')
            op.execute(f'ALTER TABLE {table} DROP COLUMN created_by_token_id')
        else:
            op.drop_constraint(f'fk_{table}_created_by_token_id_tokens', table,
                               type_='foreignkey')
            op.drop_column(table, 'declared_digest')
            op.drop_column(table, 'touched_at')
            op.drop_column(table, 'created_by_token_id')
