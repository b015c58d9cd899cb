"""Adapters as plain rows, for listings: the page with its bases' and sources' names in
one statement, then its files and aliases in one more.

A listing is what every serving replica polls, so it skips the ORM's objects (identity
map, instance state, relationship collections: a third of a listing's CPU when it loaded
them); `AdapterOut.of` reads these rows as it reads `Adapter`s.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import (
    BindParameter,
    Connection,
    Select,
    bindparam,
    literal,
    null,
    select,
    union_all,
)
from sqlalchemy.orm import Session, aliased

from registry.tables import Adapter, AdapterAlias, AdapterFile, AdapterKind, Model, Status


@dataclass(frozen=True)
class FileRow:
    filename: str
    sha256: str
    size: int


@dataclass(frozen=True)
class AliasRow:
    alias: str


@dataclass
class AdapterRow:
    id: int
    name: str
    version: int | None
    kind: AdapterKind
    status: Status
    base_id: int
    source_model_id: int | None
    params: dict[str, Any]
    size_bytes: int
    compression_ratio: float | None
    quality: dict[str, Any] | None
    gain_kept: float | None
    content_digest: str | None
    created_at: datetime
    finalized_at: datetime | None
    base_name: str
    source_name: str | None
    files: list[FileRow] = field(default_factory=list)
    aliases: list[AliasRow] = field(default_factory=list)


_COLUMNS = (Adapter.id, Adapter.name, Adapter.version, Adapter.kind, Adapter.status,
            Adapter.base_id, Adapter.source_model_id, Adapter.params, Adapter.size_bytes,
            Adapter.compression_ratio, Adapter.quality, Adapter.gain_kept,
            Adapter.content_digest, Adapter.created_at, Adapter.finalized_at)


# Statements are built once: building one (aliases, a union) costs as much CPU as running
# it, and the built statement is immutable (each `.where` makes a new one).
@functools.cache
def row_select() -> Select[Any]:
    """The columns of `AdapterRow`, the base's and source's names joined in; callers add
    the filters and the order."""
    base, source = aliased(Model), aliased(Model)
    return (select(*_COLUMNS, base.name.label("base_name"), source.name.label("source_name"))
            .join(base, base.id == Adapter.base_id)
            .outerjoin(source, source.id == Adapter.source_model_id))


def load_rows(session: Session, query: Select[Any]) -> list[AdapterRow]:
    """`query` (a `row_select`) read, with each row's files and aliases: two statements.

    Run on the session's connection, as Core: the ORM's execution path (its compile
    step and result processing for entities) cost more than the rows themselves."""
    connection = session.connection()
    rows = [AdapterRow(**row._mapping) for row in connection.execute(query)]
    _attach_files_and_aliases(connection, rows)
    return rows


def _attach_files_and_aliases(connection: Connection, rows: Sequence[AdapterRow]) -> None:
    if not rows:
        return
    by_id = {row.id: row for row in rows}
    for owner, label, sha256, size, part in connection.execute(_files_and_aliases(),
                                                                {"ids": sorted(by_id)}):
        row = by_id[owner]
        if part == 0:
            row.files.append(FileRow(label, sha256, size))
        else:
            row.aliases.append(AliasRow(label))


@functools.cache
def _files_and_aliases() -> Select[Any]:
    """Files and aliases of the adapters `:ids`, in one statement: files are the rows with
    a digest (`part` 0), aliases those without (`part` 1)."""
    ids: BindParameter[list[int]] = bindparam("ids", expanding=True)
    files = select(AdapterFile.adapter_id.label("owner"), AdapterFile.filename.label("label"),
                   AdapterFile.sha256.label("sha256"), AdapterFile.size.label("size"),
                   literal(0).label("part")).where(AdapterFile.adapter_id.in_(ids))
    aliases = select(AdapterAlias.adapter_id, AdapterAlias.alias, null(), null(),
                     literal(1)).where(AdapterAlias.adapter_id.in_(ids))
    both = union_all(files, aliases).subquery()
    # The order of `Adapter.files` and `Adapter.aliases` (by name), as single gets show.
    return select(both).order_by(both.c.owner, both.c.part, both.c.label)
