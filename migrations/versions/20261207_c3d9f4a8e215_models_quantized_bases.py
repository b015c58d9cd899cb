"""models: 4-bit bases, with their quantization and the base they were quantized from

Revision ID: c3d9f4a8e215
Revises: c3d9e6a1f0b7
Create Date: 2026-12-07 21:00:00

Plain nullable ADD COLUMN on both databases, never a batch rebuild (see bc460c14b59f:
SQLite rebuilds a table by dropping it, and that drop cascades into model_files).
The reference to the parent model has no ON DELETE rule (deleting a parent with 4-bit
children is refused by the service), and SQLite takes a foreign key only inline.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = 'c3d9f4a8e215'
down_revision: str | None = 'c3d9e6a1f0b7'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_FK = 'fk_models_quantized_from_id_models'
_INDEX = 'ix_models_quantized_from_id'


def upgrade() -> None:
    op.add_column('models', sa.Column('quantization', sa.JSON(), nullable=True))
    if op.get_bind().dialect.name == 'sqlite':
        op.execute('ALTER TABLE models ADD COLUMN quantized_from_id INTEGER '
                   f'CONSTRAINT {_FK} REFERENCES models (id)')
    else:
        op.add_column('models', sa.Column('quantized_from_id', sa.Integer(), nullable=True))
        op.create_foreign_key(_FK, 'models', 'models', ['quantized_from_id'], ['id'])
    op.create_index(_INDEX, 'models', ['quantized_from_id'])


def downgrade() -> None:
    op.drop_index(_INDEX, table_name='models')
    if op.get_bind().dialect.name == 'sqlite':
        # SQLite (3.35+) drops a column whose only constraint is its inline reference.
        op.execute('ALTER TABLE models DROP COLUMN quantized_from_id')
        op.execute('ALTER TABLE models DROP COLUMN quantization')
    else:
        op.drop_constraint(_FK, 'models', type_='foreignkey')
        op.drop_column('models', 'quantized_from_id')
        op.drop_column('models', 'quantization')
