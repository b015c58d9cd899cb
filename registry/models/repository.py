from __future__ import annotations

from sqlalchemy import Select, func, or_, select
from sqlalchemy.orm import Session, selectinload

from registry.tables import Adapter, Model, ModelKind


class ModelRepository:
    def __init__(self, session: Session) -> None:
        self.session = session

    def _query(self) -> Select[Model]:
        return select(Model).options(selectinload(Model.files))

    def by_ref(self, ref: str, lock: bool = False) -> Model | None:
        """A model by id (all digits) or by name; `lock` takes a row lock (PostgreSQL)."""
        query = self._query()
        query = query.where(Model.id == int(ref)) if ref.isdigit() else query.where(
            Model.name == ref)
        if lock:
            query = query.with_for_update()
        return self.session.scalars(query).first()

    def by_id(self, model_id: int) -> Model | None:
        return self.session.scalars(self._query().where(Model.id == model_id)).first()

    def name_of(self, model_id: int | None) -> str | None:
        if model_id is None:
            return None
        return self.session.scalar(select(Model.name).where(Model.id == model_id))

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
        query = self._query().order_by(Model.id.desc()).limit(limit)
        if kind is not None:
            query = query.where(Model.kind == kind)
        if base_id is not None:
            query = query.where(Model.base_id == base_id)
        if after_id is not None:
            query = query.where(Model.id < after_id)
        return list(self.session.scalars(query))

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
