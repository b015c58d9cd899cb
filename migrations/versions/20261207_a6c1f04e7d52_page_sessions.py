"""page_sessions: web-page sessions a sign-out ends on the server

Revision ID: a6c1f04e7d52
Revises: e81f0b5a3c27
Create Date: 2026-12-07 16:40:00

One new table, so a plain CREATE TABLE on both databases. A session cookie names a row
here; signing out deletes it, and deleting a token deletes its sessions (CASCADE).
Cookies issued before this revision name no row: their holders sign in again.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op


revision: str = 'a6c1f04e7d52'
down_revision: str | None = 'e81f0b5a3c27'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('page_sessions',
    sa.Column('id', sa.String(length=64), nullable=False),
    sa.Column('token_id', sa.Integer(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['token_id'], ['tokens.id'], name=op.f('fk_page_sessions_token_id_tokens'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_page_sessions'))
    )
    op.create_index(op.f('ix_page_sessions_token_id'), 'page_sessions', ['token_id'], unique=False)
    op.create_index(op.f('ix_page_sessions_created_at'), 'page_sessions', ['created_at'], unique=False)


def downgrade() -> None:
    op.drop_index(op.f('ix_page_sessions_created_at'), table_name='page_sessions')
    op.drop_index(op.f('ix_page_sessions_token_id'), table_name='page_sessions')
    op.drop_table('page_sessions')
