"""events: the transactional outbox the event feed serves, and how far gc pruned it

Revision ID: b8e2f05c1d93
Revises: a7c3e19d5b42
Create Date: 2026-12-07 20:00:00

Two new tables, so plain CREATE TABLEs on both databases. `events` takes AUTOINCREMENT
on SQLite so that an id pruned by gc is never handed out again (a follower's cursor would
skip the new event). `event_horizon` starts empty: nothing pruned yet.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = 'b8e2f05c1d93'
down_revision: str | None = 'a7c3e19d5b42'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('event_horizon',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('pruned_through', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_event_horizon'))
    )
    op.create_table('events',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('type', sa.String(length=32), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('base', sa.String(length=128), nullable=True),
    sa.Column('name', sa.String(length=128), nullable=True),
    sa.Column('data', sa.JSON(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_events')),
    sqlite_autoincrement=True
    )
    with op.batch_alter_table('events', schema=None) as batch_op:
        batch_op.create_index('ix_events_base_id', ['base', 'id'], unique=False)
        batch_op.create_index(batch_op.f('ix_events_created_at'), ['created_at'], unique=False)
        batch_op.create_index('ix_events_name_id', ['name', 'id'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('events', schema=None) as batch_op:
        batch_op.drop_index('ix_events_name_id')
        batch_op.drop_index(batch_op.f('ix_events_created_at'))
        batch_op.drop_index('ix_events_base_id')

    op.drop_table('events')
    op.drop_table('event_horizon')
