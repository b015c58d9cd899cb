"""index adapter aliases by alias, for listings filtered by alias

Revision ID: 5b1e0c7a9d21
Revises: 011d1933c6d3
Create Date: 2026-11-30 06:40:00
"""

from collections.abc import Sequence

from alembic import op


revision: str = '5b1e0c7a9d21'
down_revision: str | None = '011d1933c6d3'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index('ix_adapter_aliases_alias_adapter_id', 'adapter_aliases',
                    ['alias', 'adapter_id'], unique=False)


def downgrade() -> None:
    op.drop_index('ix_adapter_aliases_alias_adapter_id', table_name='adapter_aliases')
