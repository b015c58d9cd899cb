"""SQL for data sets and their files."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Select, func, select
from sqlalchemy.orm import Session, selectinload

from registry.infra.listing import newest_first
from registry.models.repository import candidate_names, lock_name
from registry.tables import Dataset, Status


class DatasetRepository:
    def __init__(self, session: Session) -> None:
        self.session = session

    def _query(self) -> Select[Dataset]:
        return select(Dataset).options(selectinload(Dataset.files))

    def by_name(self, name: str, lock: bool = False) -> Dataset | None:
        """A data set by name; `lock` takes a row lock (PostgreSQL)."""
        query = self._query().where(Dataset.name == name)
        if lock:
            query = query.with_for_update(of=Dataset)
        return self.session.scalars(query).first()

    def lock_name(self, name: str) -> None:
        """Serialise the pushes that start or replace a draft of `name` (`lock_name`)."""
        lock_name(self.session, f"dataset:{name}")

    def candidate_names(self, name: str) -> list[str]:
        """Names `name` may misspell, from bounded reads (see `candidate_names`)."""
        return candidate_names(self.session, Dataset.name, name, [], Dataset.id)

    def add(self, dataset: Dataset) -> Dataset:
        self.session.add(dataset)
        self.session.flush()
        return dataset

    def page(self, status: Status | None, after_id: int | None, limit: int) -> list[Dataset]:
        return newest_first(self.session, self._query(), Dataset.id,
                            equal={Dataset.status: status}, after_id=after_id, limit=limit)

    def stale_drafts(self, touched_before: datetime, limit: int) -> list[Dataset]:
        """Up to `limit` pending drafts no push touched since `touched_before`, locked;
        one a push holds locked right now is skipped (PostgreSQL)."""
        touched = func.coalesce(Dataset.touched_at, Dataset.created_at)
        return list(self.session.scalars(
            self._query().where(Dataset.status == Status.PENDING, touched < touched_before)
            .order_by(Dataset.id).limit(limit)
            .with_for_update(of=Dataset, skip_locked=True)))

    def delete(self, dataset: Dataset) -> None:
        self.session.delete(dataset)
        self.session.flush()
