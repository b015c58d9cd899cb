"""Record a committed upload: its blob row and the owner's file row, in one transaction."""

from __future__ import annotations

from typing import TypeVar

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from registry.tables import AdapterFile, Blob, ModelFile, utcnow
from registry.uploads.pipeline import UploadResult

FileRow = TypeVar("FileRow", ModelFile, AdapterFile)


def ensure_blob(session: Session, sha256: str, size: int) -> None:
    """Insert the blob row unless it exists; safe when identical uploads race."""
    dialect = session.get_bind().dialect.name
    insert = pg_insert if dialect == "postgresql" else sqlite_insert
    statement = insert(Blob).values(sha256=sha256, size=size, created_at=utcnow())
    session.execute(statement.on_conflict_do_nothing(index_elements=["sha256"]))


def record_file(session: Session, row_type: type[FileRow], owner_column: str, owner_id: int,
                filename: str, result: UploadResult) -> FileRow:
    """Point the owner's `filename` at the uploaded blob (a re-upload replaces it)."""
    ensure_blob(session, result.sha256, result.size)
    owner = getattr(row_type, owner_column)
    row = session.scalars(select(row_type).where(
        owner == owner_id, row_type.filename == filename)).first()
    if row is None:
        row = row_type(filename=filename, **{owner_column: owner_id})
        session.add(row)
    row.sha256, row.size, row.header = result.sha256, result.size, result.header
    session.flush()
    return row
