"""jobs: idempotency keys per token, and the digest of the request each key was sent with

Revision ID: a7c3e19d5b42
Revises: a6c1f04e7d52
Create Date: 2026-12-07 17:00:00

The unique key moves from (idempotency_key) to (token_id, idempotency_key): another
token's same key is another request. SQLite drops a table constraint only by rebuilding
the table (a batch operation); that is safe for jobs, which no other table references
(a rebuild of a referenced table would cascade: see bc460c14b59f). `request_digest` is a
plain nullable column; jobs queued before it have none, and a retry of one with its key
is refused as a different request (registry/jobs/service.py).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = 'a7c3e19d5b42'
down_revision: str | None = 'a6c1f04e7d52'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.add_column(sa.Column('request_digest', sa.String(length=64), nullable=True))
        batch_op.drop_constraint('uq_jobs_idempotency_key', type_='unique')
        batch_op.create_unique_constraint('uq_jobs_token_id_idempotency_key',
                                          ['token_id', 'idempotency_key'])


def downgrade() -> None:
    # Fails where two tokens used the same key since the upgrade: the old schema cannot
    # hold that.
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.drop_constraint('uq_jobs_token_id_idempotency_key', type_='unique')
        batch_op.create_unique_constraint('uq_jobs_idempotency_key', ['idempotency_key'])
        batch_op.drop_column('request_digest')
