from __future__ import annotations

from collections.abc import Collection
from datetime import datetime
from typing import Any

from sqlalchemy import (
    ColumnElement,
    ScalarSelect,
    Select,
    and_,
    delete,
    func,
    or_,
    select,
    text,
)
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session, selectinload

from registry.adapters.rows import AdapterRow, load_rows, row_select
from registry.infra.listing import newest_first_query
from registry.models.repository import candidate_names
from registry.tables import Adapter, AdapterAlias, AdapterFile, AdapterKind, Status, utcnow


class AdapterRepository:
    def __init__(self, session: Session) -> None:
        self.session = session

    def _query(self, full: bool = False) -> Select[Adapter]:
        # Without `full`, the files' safetensors headers stay unloaded: only finalize
        # needs them, and a listing would otherwise carry every header of every file.
        files = selectinload(Adapter.files)
        if not full:
            files = files.defer(AdapterFile.header, raiseload=True)
        return select(Adapter).options(files, selectinload(Adapter.aliases))

    def by_id(self, adapter_id: int, lock: bool = False, full: bool = False) -> Adapter | None:
        query = self._query(full).where(Adapter.id == adapter_id)
        if lock:
            # What the lock waited for is read, even over a copy the session holds from
            # resolving the reference.
            query = query.with_for_update(of=Adapter).execution_options(populate_existing=True)
        return self.session.scalars(query).first()

    def by_version(self, name: str, version: int) -> Adapter | None:
        return self.session.scalars(self._query().where(
            Adapter.name == name, Adapter.version == version)).first()

    def by_alias(self, name: str, alias: str) -> Adapter | None:
        return self.session.scalars(self._query().join(
            AdapterAlias, AdapterAlias.adapter_id == Adapter.id).where(
            AdapterAlias.adapter_name == name, AdapterAlias.alias == alias)).first()

    # -- plain rows (registry/adapters/rows.py), for reads that show an adapter ------
    def row_by_id(self, adapter_id: int) -> AdapterRow | None:
        return self._one_row(row_select().where(Adapter.id == adapter_id))

    def row_by_version(self, name: str, version: int) -> AdapterRow | None:
        return self._one_row(row_select().where(Adapter.name == name,
                                                Adapter.version == version))

    def row_by_alias(self, name: str, alias: str) -> AdapterRow | None:
        return self._one_row(row_select().join(
            AdapterAlias, AdapterAlias.adapter_id == Adapter.id).where(
            AdapterAlias.adapter_name == name, AdapterAlias.alias == alias))

    def row_latest(self, name: str) -> AdapterRow | None:
        return self._one_row(row_select().where(
            Adapter.name == name, Adapter.status == Status.READY).order_by(
            Adapter.version.desc()))

    def _one_row(self, query: Select[Any]) -> AdapterRow | None:
        rows = load_rows(self.session, query.limit(1))
        return rows[0] if rows else None

    def delete_alias(self, name: str, alias: str) -> bool:
        """Remove one alias of the adapter name; whether it existed."""
        result = self.session.execute(delete(AdapterAlias).where(
            AdapterAlias.adapter_name == name, AdapterAlias.alias == alias))
        self.session.expire_all()  # loaded aliases lists are stale now
        return bool(getattr(result, "rowcount", 0))

    def aliases_of(self, name: str, limit: int = 100) -> list[str]:
        return list(self.session.scalars(select(AdapterAlias.alias).where(
            AdapterAlias.adapter_name == name).order_by(AdapterAlias.alias).limit(limit)))

    def latest(self, name: str) -> Adapter | None:
        return self.session.scalars(self._query().where(
            Adapter.name == name, Adapter.status == Status.READY).order_by(
            Adapter.version.desc()).limit(1)).first()

    def by_digest(self, name: str, digest: str) -> Adapter | None:
        return self.session.scalars(self._query().where(
            Adapter.name == name, Adapter.content_digest == digest)).first()

    def lock_name(self, name: str) -> None:
        """Serialise finalizes of one adapter name until this transaction ends.

        PostgreSQL: a transaction-scoped advisory lock on the name. SQLite needs none:
        every transaction there takes the database write lock at BEGIN (registry/infra/engines.py).
        """
        if self.session.get_bind().dialect.name == "postgresql":
            self.session.execute(text("SELECT pg_advisory_xact_lock(hashtextextended(:key, 0))"),
                                 {"key": f"deltahub.adapter:{name}"})

    def own_draft(self, name: str, token_id: int | None, declared_digest: str) -> Adapter | None:
        """The newest pending draft of `name` started for the files `declared_digest`
        names by `token_id` (or with no recorded creator), locked: the push that resumes
        it holds it until its transaction ends."""
        creator: ColumnElement[bool] = Adapter.created_by_token_id.is_(None)
        if token_id is not None:
            creator = or_(creator, Adapter.created_by_token_id == token_id)
        return self.session.scalars(self._query().where(
            Adapter.name == name, Adapter.status == Status.PENDING,
            Adapter.declared_digest == declared_digest, creator).order_by(
            Adapter.id.desc()).limit(1).with_for_update(of=Adapter)).first()

    def candidate_names(self, name: str) -> list[str]:
        """Names of finalized adapters `name` may misspell, from bounded reads."""
        return candidate_names(self.session, Adapter.name, name,
                               [Adapter.status == Status.READY], Adapter.id)

    def max_version(self, name: str) -> int:
        value = self.session.scalar(select(func.max(Adapter.version)).where(
            Adapter.name == name))
        return int(value or 0)

    def stale_drafts(self, touched_before: datetime, limit: int) -> list[Adapter]:
        """Up to `limit` pending drafts no push touched since `touched_before`, locked.

        A draft that a push holds locked right now is skipped (PostgreSQL; on SQLite
        writers take turns): that push is touching it.
        """
        touched = func.coalesce(Adapter.touched_at, Adapter.created_at)
        return list(self.session.scalars(
            self._query()
            .where(Adapter.status == Status.PENDING, touched < touched_before)
            .order_by(Adapter.id).limit(limit).with_for_update(of=Adapter, skip_locked=True)))

    def add(self, adapter: Adapter) -> Adapter:
        self.session.add(adapter)
        self.session.flush()
        return adapter

    def delete(self, adapter: Adapter) -> None:
        self.session.delete(adapter)
        self.session.flush()

    def set_alias(self, name: str, alias: str, adapter_id: int) -> None:
        dialect = self.session.get_bind().dialect.name
        insert = pg_insert if dialect == "postgresql" else sqlite_insert
        now = utcnow()
        statement = insert(AdapterAlias).values(adapter_name=name, alias=alias,
                                                adapter_id=adapter_id, updated_at=now)
        self.session.execute(statement.on_conflict_do_update(
            index_elements=["adapter_name", "alias"],
            set_={"adapter_id": adapter_id, "updated_at": now}))
        self.session.expire_all()  # loaded aliases lists are stale now

    def page(self, *, base_id: int | ScalarSelect[int] | None, kind: AdapterKind | None,
             name: str | None, alias: str | None, after_id: int | None, limit: int,
             peft_type: str | None = None, by_gain: bool = False,
             after_gain: float | None = None,
             base_ids: Collection[int] | None = None) -> list[AdapterRow]:
        """A page newest first, or (`by_gain`) by gain kept, highest first, versions
        without one last, ties newest first; after the row (`after_gain`, `after_id`).
        `base_id`: an id, or a subquery that finds it (no statement of its own).
        `base_ids`: on any of these bases (a compatible listing). Plain rows, in three
        statements (registry/adapters/rows.py)."""
        query = row_select().where(Adapter.status == Status.READY)
        if base_ids is not None:
            query = query.where(Adapter.base_id.in_(sorted(base_ids)))
        if alias is not None:
            query = query.where(Adapter.id.in_(select(AdapterAlias.adapter_id).where(
                AdapterAlias.alias == alias)))
        equal = {Adapter.base_id: base_id, Adapter.kind: kind, Adapter.name: name,
                 Adapter.peft_type: peft_type}
        if not by_gain:
            return load_rows(self.session, newest_first_query(
                query, Adapter.id, equal=equal, after_id=after_id, limit=limit))
        for column, value in equal.items():
            if value is not None:
                query = query.where(column == value)
        if after_id is not None:
            query = query.where(_after_by_gain(after_gain, after_id))
        return load_rows(self.session, query.order_by(
            Adapter.gain_kept.desc().nulls_last(), Adapter.id.desc()).limit(limit))


def _after_by_gain(gain: float | None, adapter_id: int) -> ColumnElement[bool]:
    """Rows after (gain, id) in the order gain desc nulls last, id desc."""
    if gain is None:
        return and_(Adapter.gain_kept.is_(None), Adapter.id < adapter_id)
    return or_(Adapter.gain_kept < gain,
               and_(Adapter.gain_kept == gain, Adapter.id < adapter_id),
               Adapter.gain_kept.is_(None))
