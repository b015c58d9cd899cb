"""webhook delivery attempts: every try in the delivery log; the event horizon's one row

Revision ID: d5a1c8e3f027
Revises: f2a6d8c4b1e9
Create Date: 2026-12-07 23:40:00

A new table (plain CREATE TABLE on both databases): `webhook_deliveries` kept only each
delivery's last attempt. Existing deliveries that were attempted get one attempt row (their
last; the earlier ones were never kept). `event_horizon` gets its single row here, so
that no two `deltahub gc` runs race to create it (the code also inserts it with ON
CONFLICT DO NOTHING, for databases created from the models).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = 'd5a1c8e3f027'
down_revision: str | None = 'f2a6d8c4b1e9'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('webhook_delivery_attempts',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('delivery_id', sa.Integer(), nullable=False),
    sa.Column('webhook_id', sa.Integer(), nullable=False),
    sa.Column('event_id', sa.BigInteger(), nullable=True),
    sa.Column('attempt', sa.Integer(), nullable=False),
    sa.Column('outcome', sa.String(length=16), nullable=False),
    sa.Column('status_code', sa.Integer(), nullable=True),
    sa.Column('latency_ms', sa.Float(), nullable=True),
    sa.Column('error', sa.Text(), nullable=True),
    sa.Column('response_excerpt', sa.Text(), nullable=True),
    sa.Column('attempted_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['delivery_id'], ['webhook_deliveries.id'],
                            name=op.f('fk_webhook_delivery_attempts_delivery_id_webhook_deliveries'),
                            ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['webhook_id'], ['webhooks.id'],
                            name=op.f('fk_webhook_delivery_attempts_webhook_id_webhooks'),
                            ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_webhook_delivery_attempts'))
    )
    with op.batch_alter_table('webhook_delivery_attempts', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_webhook_delivery_attempts_delivery_id'),
                              ['delivery_id'], unique=False)
        batch_op.create_index('ix_webhook_delivery_attempts_event',
                              ['webhook_id', 'event_id', 'id'], unique=False)
        batch_op.create_index('ix_webhook_delivery_attempts_webhook_id',
                              ['webhook_id', 'id'], unique=False)
    # The last attempt each delivery kept, so the log does not start empty.
    op.execute(
        "INSERT INTO webhook_delivery_attempts (delivery_id, webhook_id, event_id, attempt, "
        "outcome, status_code, latency_ms, error, response_excerpt, attempted_at) "
        "SELECT id, webhook_id, event_id, attempt, "
        "CASE WHEN status = 'pending' THEN 'retrying' ELSE status END, "
        "status_code, latency_ms, error, response_excerpt, attempted_at "
        "FROM webhook_deliveries WHERE attempted_at IS NOT NULL AND attempt > 0 ORDER BY id")
    op.execute("INSERT INTO event_horizon (id, pruned_through) SELECT 1, 0 WHERE NOT EXISTS "
               "(SELECT 1 FROM event_horizon WHERE id = 1)")


def downgrade() -> None:
    with op.batch_alter_table('webhook_delivery_attempts', schema=None) as batch_op:
        batch_op.drop_index('ix_webhook_delivery_attempts_webhook_id')
        batch_op.drop_index('ix_webhook_delivery_attempts_event')
        batch_op.drop_index(batch_op.f('ix_webhook_delivery_attempts_delivery_id'))
    op.drop_table('webhook_delivery_attempts')
