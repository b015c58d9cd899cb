"""adapters: kind `peft` (every PEFT type but LoRA) and the adapter's peft_type

Revision ID: c41d7e9a2b06
Revises: c3d9f4a8e215
Create Date: 2026-12-07 21:00:00

`peft_type` is a plain nullable ADD COLUMN with an index (listings filter by it), set
to LORA for the LoRA adapters already there. The kind is a CHECK constraint
(ck_adapters_adapter_kind), widened to take 'peft'. PostgreSQL drops and recreates it.
SQLite cannot alter a constraint, and a batch rebuild would drop the table (cascading
into adapter_files, adapter_aliases and jobs: see bc460c14b59f), so the table's stored
SQL is edited in place, the procedure SQLite documents for changing CHECK constraints
(https://sqlite.org/lang_altertable.html, "making other kinds of table schema
changes"): widening it leaves every existing row valid.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = 'c41d7e9a2b06'
down_revision: str | None = 'c3d9f4a8e215'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_CHECK = 'ck_adapters_adapter_kind'
_INDEX = 'ix_adapters_peft_type'
_OLD = "'lora', 'bitdelta')"
_NEW = "'lora', 'bitdelta', 'peft')"


def upgrade() -> None:
    op.add_column('adapters', sa.Column('peft_type', sa.String(length=64), nullable=True))
    op.create_index(_INDEX, 'adapters', ['peft_type'])
    op.execute("UPDATE adapters SET peft_type = 'LORA' WHERE kind = 'lora'")
    _set_kinds(_OLD, _NEW)


def downgrade() -> None:
    bind = op.get_bind()
    if bind.execute(sa.text("SELECT count(*) FROM adapters WHERE kind = 'peft'")).scalar():
        raise RuntimeError("adapters of kind 'peft' exist; delete them before downgrading")
    _set_kinds(_NEW, _OLD)
    op.drop_index(_INDEX, table_name='adapters')
    if bind.dialect.name == 'sqlite':
        op.execute('ALTER TABLE adapters DROP COLUMN peft_type')
    else:
        op.drop_column('adapters', 'peft_type')


def _set_kinds(old: str, new: str) -> None:
    bind = op.get_bind()
    if bind.dialect.name != 'sqlite':
        op.drop_constraint(op.f(_CHECK), 'adapters', type_='check')
        op.create_check_constraint(op.f(_CHECK), 'adapters', f"kind IN ({new}")
        return
    sql = bind.execute(sa.text(
        "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'adapters'")).scalar()
    if not isinstance(sql, str) or sql.count(old) != 1:
        raise RuntimeError(f"adapters' kind constraint is not the expected {old!r}")
    version = bind.execute(sa.text('PRAGMA schema_version')).scalar()
    bind.execute(sa.text('PRAGMA writable_schema = ON'))
    bind.execute(sa.text("UPDATE sqlite_master SET sql = :sql WHERE type = 'table' "
                         "AND name = 'adapters'"), {'sql': sql.replace(old, new)})
    bind.execute(sa.text(f'PRAGMA schema_version = {int(version or 0) + 1}'))
    bind.execute(sa.text('PRAGMA writable_schema = OFF'))
    if bind.execute(sa.text('PRAGMA integrity_check')).scalar() != 'ok':
        raise RuntimeError("adapters' schema failed SQLite's integrity check after the edit")
