from __future__ import annotations

from datetime import datetime

from sqlalchemy import ColumnElement, Select, func, or_, select, text
from sqlalchemy.orm import InstrumentedAttribute, Session, defer, selectinload

from registry.infra.listing import newest_first
from registry.names import is_id, parse_id
from registry.tables import Adapter, Model, ModelFile, ModelKind, Status

# How many names each suggestion query reads at most (see candidate_names).
SUGGESTION_SCAN = 100


def candidate_names(session: Session, column: InstrumentedAttribute[str], name: str,
                    where: list[ColumnElement[bool]],
                    id_column: InstrumentedAttribute[int]) -> list[str]:
    """Names in `column` that `name` may misspell, in three reads of SUGGESTION_SCAN rows:
    its neighbours in case-blind alphabetical order on either side (a typo after the
    first letters stays near), and the newest names (a typo in the first letter)."""
    folded, key = name.lower(), func.lower(column)
    query = select(column).where(*where).group_by(column).limit(SUGGESTION_SCAN)
    after = query.where(key >= folded).order_by(key)
    before = query.where(key < folded).order_by(key.desc())
    newest = query.order_by(func.max(id_column).desc())
    return [found for q in (after, before, newest) for found in session.scalars(q)]


def lock_name(session: Session, key: str) -> None:
    """Serialise, until this transaction ends, the transactions that lock `key` (a name
    with its kind, "model:llama"): looking up a name that does not exist locks no row.

    PostgreSQL: a transaction-scoped advisory lock. SQLite needs none: every write
    transaction there takes the database write lock at BEGIN (registry/infra/engines.py).
    """
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock(hashtextextended(:key, 0))"),
                        {"key": f"deltahub.{key}"})


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
        query = id_query(ref)
        return None if query is None else self.session.scalar(query)

    def by_id(self, model_id: int, lock: bool = False, full: bool = False) -> Model | None:
        query = self._query(full).where(Model.id == model_id)
        if lock:
            # As for adapters: a locked read sees the row the lock waited for.
            query = query.with_for_update().execution_options(populate_existing=True)
        return self.session.scalars(query).first()

    def names_of(self, ids: set[int]) -> dict[int, str]:
        if not ids:
            return {}
        rows = self.session.execute(select(Model.id, Model.name).where(Model.id.in_(ids)))
        return {row.id: row.name for row in rows}

    def lock_name(self, name: str) -> None:
        """Serialise the pushes that start or replace a draft of `name` (`lock_name`)."""
        lock_name(self.session, f"model:{name}")

    def candidate_names(self, name: str, kind: ModelKind | None = None) -> list[str]:
        """Names `name` may misspell, from bounded reads (see `candidate_names`)."""
        return candidate_names(self.session, Model.name, name,
                               [] if kind is None else [Model.kind == kind], Model.id)

    def stale_drafts(self, touched_before: datetime, limit: int) -> list[Model]:
        """Up to `limit` pending drafts no push touched since `touched_before`, locked.

        A draft that a push holds locked right now is skipped (PostgreSQL; on SQLite
        writers take turns): that push is touching it.
        """
        touched = func.coalesce(Model.touched_at, Model.created_at)
        files = selectinload(Model.files).defer(ModelFile.header, raiseload=True)
        return list(self.session.scalars(
            select(Model).options(files)
            .where(Model.status == Status.PENDING, touched < touched_before)
            # Fine-tunes first: a base draft goes only after the fine-tune drafts on it.
            .order_by(Model.kind.desc(), Model.id).limit(limit)
            .with_for_update(of=Model, skip_locked=True)))

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

    def quantized_from_of(self, model_id: int) -> int | None:
        """The base a 4-bit base was quantized from (None for any other model)."""
        return self.session.scalar(select(Model.quantized_from_id).where(Model.id == model_id))

    def quantized_children(self, model_id: int) -> list[int]:
        """The 4-bit bases quantized from `model_id`, finalized or not."""
        return list(self.session.scalars(select(Model.id).where(
            Model.quantized_from_id == model_id).order_by(Model.id)))

    def delete(self, model: Model) -> None:
        self.session.delete(model)
        self.session.flush()


def id_query(ref: str) -> Select[int] | None:
    """The statement that finds the id of the model an id or name refers to; None for an
    id that cannot exist."""
    if is_id(ref):
        model_id = parse_id(ref)
        return select(Model.id).where(Model.id == model_id) if model_id else None
    return select(Model.id).where(Model.name == ref)
