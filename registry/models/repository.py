from __future__ import annotations

from sqlalchemy import Select, func, or_, select
from sqlalchemy.orm import Session, defer, selectinload

from registry.names import is_id, parse_id
from registry.repository import newest_first
from registry.tables import Adapter, Model, ModelFile, ModelKind


class ModelRepository:
    def __init__(self, session: Session) -> None:
        self.session = session

    def _query(self, full: bool = False) -> Select[Model]:
        if full:
            return select(Model).options(selectinload(Model.files))
        return select(Model).options(
            defer(Model.manifest, raiseload=True),
            selectinload(Model.files).defer(ModelFile.header, raiseload=True))

    def by_ref(self, ref: str, lock: bool = False, full: bool = False) -> Model | None:
        """A model by id (ASCII digits) or by name; `lock` takes a row lock (PostgreSQL).

        Without `full`, the manifest and the files' safetensors headers stay unloaded:
        they can be megabytes, and only finalize needs them.
        """
        query = self._query(full)
        if is_id(ref):
            model_id = parse_id(ref)
            if model_id is None:
                return None
            query = query.where(Model.id == model_id)
        else:
            query = query.where(Model.name == ref)
        if lock:
            query = query.with_for_update()
        return self.session.scalars(query).first()

    def id_of(self, ref: str) -> int | None:
        """Just the id of the model an id or name refers to (for filters)."""
        if is_id(ref):
            model_id = parse_id(ref)
            query = select(Model.id).where(Model.id == model_id) if model_id else None
        else:
            query = select(Model.id).where(Model.name == ref)
        return None if query is None else self.session.scalar(query)

    def by_id(self, model_id: int, full: bool = False) -> Model | None:
        return self.session.scalars(self._query(full).where(Model.id == model_id)).first()

    def names_of(self, ids: set[int]) -> dict[int, str]:
        if not ids:
            return {}
        rows = self.session.execute(select(Model.id, Model.name).where(Model.id.in_(ids)))
        return {row.id: row.name for row in rows}

    def name_exists(self, name: str) -> bool:
        return self.session.scalar(select(Model.id).where(Model.name == name)) is not None

    def add(self, model: Model) -> Model:
        self.session.add(model)
        self.session.flush()
        return model

    def page(self, kind: ModelKind | None, base_id: int | None, after_id: int | None,
             limit: int) -> list[Model]:
        return newest_first(self.session, self._query(), Model.id,
                            equal={Model.kind: kind, Model.base_id: base_id},
                            after_id=after_id, limit=limit)

    def dependents(self, model_id: int) -> tuple[int, int]:
        """(fine-tunes built on it, adapters on it or compressed from it)."""
        finetunes = self.session.scalar(
            select(func.count()).select_from(Model).where(Model.base_id == model_id))
        adapters = self.session.scalar(select(func.count()).select_from(Adapter).where(
            or_(Adapter.base_id == model_id, Adapter.source_model_id == model_id)))
        return int(finetunes or 0), int(adapters or 0)

    def delete(self, model: Model) -> None:
        self.session.delete(model)
        self.session.flush()
