"""adapters: gain kept ranks only where the fine-tune improved the headline data set

Revision ID: f2a6d8c4b1e9
Revises: c41d7e9a2b06
Create Date: 2026-12-07 21:30:00

Where the fine-tune made its first evaluation data set worse (or changed it by under
0.001 nats per token), a higher gain kept there keeps more of the regression, so the
`adapters.gain_kept` column, which `sort=gain_kept` orders by, is cleared for such rows
(docs/architecture.md, "Gain kept"). The quality JSON is kept as stored: reading it drops
that headline too (registry/adapters/quality.py). Done in Python: the JSON functions of
SQLite and PostgreSQL differ. The downgrade sets the column back from the JSON.
"""

import json
import math
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op

revision: str = 'f2a6d8c4b1e9'
down_revision: str | None = 'c41d7e9a2b06'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_MIN_CHANGE_NATS = 1e-3  # compress.quality.report.MIN_GAIN_NATS as of this revision


def _adapters() -> sa.TableClause:
    return sa.table('adapters', sa.column('id', sa.Integer()),
                    sa.column('quality', sa.JSON()), sa.column('gain_kept', sa.Float()))


def upgrade() -> None:
    bind = op.get_bind()
    adapters = _adapters()
    rows = bind.execute(sa.select(adapters.c.id, adapters.c.quality).where(
        adapters.c.gain_kept.is_not(None))).all()
    for adapter_id, quality in rows:
        if not _improved(quality):
            bind.execute(adapters.update().where(adapters.c.id == adapter_id).values(
                gain_kept=None))


def downgrade() -> None:
    bind = op.get_bind()
    adapters = _adapters()
    rows = bind.execute(sa.select(adapters.c.id, adapters.c.quality).where(
        adapters.c.gain_kept.is_(None), adapters.c.quality.is_not(None))).all()
    for adapter_id, quality in rows:
        value = _number(_loaded(quality).get('gain_kept'))
        if value is not None:
            bind.execute(adapters.update().where(adapters.c.id == adapter_id).values(
                gain_kept=value))


def _loaded(quality: object) -> dict[str, Any]:
    if isinstance(quality, str):
        quality = json.loads(quality)
    return quality if isinstance(quality, dict) else {}


def _number(value: object) -> float | None:
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return None


def _improved(quality: object) -> bool:
    """False only where the first data set's losses show no improvement by the fine-tune."""
    evaluation = _loaded(quality).get('evaluation')
    sets = evaluation.get('datasets') if isinstance(evaluation, dict) else None
    first = sets[0] if isinstance(sets, list) and sets and isinstance(sets[0], dict) else {}
    base, finetune = (_number(first.get(m, {}).get('loss'))
                      if isinstance(first.get(m), dict) else None
                      for m in ('base', 'finetune'))
    if base is None or finetune is None:
        return True
    return finetune - base <= -_MIN_CHANGE_NATS
