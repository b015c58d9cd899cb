"""SQL for blob rows and the file rows that point at them."""

from __future__ import annotations

from collections.abc import Collection
from datetime import datetime
from typing import Any, cast

from sqlalchemy import ColumnElement, delete, exists, select, union
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from registry.tables import AdapterFile, Blob, DatasetFile, ModelFile, utcnow

FileRow = ModelFile | AdapterFile | DatasetFile
# Every table whose rows point at blobs: a blob any of them references is kept.
_REFERENCING = (ModelFile, AdapterFile, DatasetFile)


def _unreferenced() -> list[ColumnElement[bool]]:
    """The conditions under which no file row points at a blob row."""
    return [~exists().where(table.sha256 == Blob.sha256) for table in _REFERENCING]


class BlobRepository:
    def __init__(self, session: Session) -> None:
        self.session = session

    def ensure(self, sha256: str, size: int) -> None:
        """Insert the blob row unless it exists; safe when identical uploads race."""
        dialect = self.session.get_bind().dialect.name
        insert = pg_insert if dialect == "postgresql" else sqlite_insert
        statement = insert(Blob).values(sha256=sha256, size=size, created_at=utcnow())
        self.session.execute(statement.on_conflict_do_nothing(index_elements=["sha256"]))

    def attach(self, row_type: type[ModelFile] | type[AdapterFile] | type[DatasetFile],
               owner_column: str,
               owner_id: int,
               filename: str, sha256: str, size: int,
               header: dict[str, Any] | None) -> FileRow:
        """Point the owner's `filename` at a blob (a re-upload replaces it)."""
        self.ensure(sha256, size)
        owner = getattr(row_type, owner_column)
        row = cast(FileRow | None, self.session.scalars(select(row_type).where(
            owner == owner_id, row_type.filename == filename)).first())
        if row is None:
            row = row_type(filename=filename, **{owner_column: owner_id})
            self.session.add(row)
        row.sha256, row.size, row.header = sha256, size, header
        self.session.flush()
        return row

    def holds(self, row_type: type[ModelFile] | type[AdapterFile] | type[DatasetFile],
              owner_column: str, owner_id: int, filename: str, sha256: str) -> bool:
        """Whether the owner's `filename` points at the blob `sha256`."""
        owner = getattr(row_type, owner_column)
        return self.session.scalar(select(exists().where(
            owner == owner_id, row_type.filename == filename,
            row_type.sha256 == sha256))) is True

    def referenced(self) -> set[str]:
        """Every sha256 a model, adapter or data set file points at."""
        rows = self.session.execute(union(*(select(t.sha256) for t in _REFERENCING)))
        return {row[0] for row in rows}

    def unreferenced_among(self, sha256s: Collection[str]) -> set[str]:
        """Those of `sha256s` that no file row points at."""
        if not sha256s:
            return set()
        return set(self.session.scalars(select(Blob.sha256).where(
            Blob.sha256.in_(sha256s), *_unreferenced())))

    def delete_unreferenced_rows(self, sha256s: Collection[str]) -> int:
        """Drop the blob rows of `sha256s` that are still unreferenced; how many."""
        if not sha256s:
            return 0
        result = self.session.execute(delete(Blob).where(
            Blob.sha256.in_(sha256s), *_unreferenced()))
        return int(getattr(result, "rowcount", 0) or 0)

    def delete_unreferenced(self, created_before: datetime) -> int:
        """Drop blob rows no file points at and older than the cutoff; how many."""
        result = self.session.execute(delete(Blob).where(
            Blob.created_at < created_before, *_unreferenced()))
        return int(getattr(result, "rowcount", 0) or 0)
