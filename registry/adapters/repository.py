from __future__ import annotations

from sqlalchemy import Select, func, select, text
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session, selectinload

from registry.repository import newest_first
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
            query = query.with_for_update(of=Adapter)
        return self.session.scalars(query).first()

    def by_version(self, name: str, version: int) -> Adapter | None:
        return self.session.scalars(self._query().where(
            Adapter.name == name, Adapter.version == version)).first()

    def by_alias(self, name: str, alias: str) -> Adapter | None:
        return self.session.scalars(self._query().join(
            AdapterAlias, AdapterAlias.adapter_id == Adapter.id).where(
            AdapterAlias.adapter_name == name, AdapterAlias.alias == alias)).first()

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
        every transaction there takes the database write lock at BEGIN (registry/db.py).
        """
        if self.session.get_bind().dialect.name == "postgresql":
            self.session.execute(text("SELECT pg_advisory_xact_lock(hashtextextended(:key, 0))"),
                                 {"key": f"deltahub.adapter:{name}"})

    def max_version(self, name: str) -> int:
        value = self.session.scalar(select(func.max(Adapter.version)).where(
            Adapter.name == name))
        return int(value or 0)

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

    def page(self, *, base_id: int | None, kind: AdapterKind | None, name: str | None,
             alias: str | None, after_id: int | None, limit: int) -> list[Adapter]:
        query = self._query().where(Adapter.status == Status.READY)
        if alias is not None:
            query = query.where(Adapter.id.in_(select(AdapterAlias.adapter_id).where(
                AdapterAlias.alias == alias)))
        return newest_first(self.session, query, Adapter.id,
                            equal={Adapter.base_id: base_id, Adapter.kind: kind,
                                   Adapter.name: name},
                            after_id=after_id, limit=limit)
