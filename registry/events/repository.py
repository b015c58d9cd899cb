"""SQL for the event feed and its retention."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import delete, func, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from registry.tables import Event, EventHorizon

_HORIZON_ROW = 1


@dataclass(frozen=True)
class EventKey:
    """An event's id and the columns the feed filters on."""

    id: int
    type: str
    base: str | None
    name: str | None


class EventRepository:
    def __init__(self, session: Session) -> None:
        self.session = session

    def after(self, after_id: int, *, types: Collection[str], base: str | None,
              name: str | None, limit: int) -> list[Event]:
        """Up to `limit` events after `after_id` that match, oldest first."""
        query = select(Event).where(Event.id > after_id)
        if types:
            query = query.where(Event.type.in_(types))
        if base is not None:
            query = query.where(Event.base == base)
        if name is not None:
            query = query.where(Event.name == name)
        return list(self.session.scalars(query.order_by(Event.id).limit(limit)))

    def keys_after(self, after_id: int, limit: int) -> list[EventKey]:
        """What the feed filters on, for up to `limit` events after `after_id`, in order."""
        rows = self.session.execute(
            select(Event.id, Event.type, Event.base, Event.name)
            .where(Event.id > after_id).order_by(Event.id).limit(limit))
        return [EventKey(*row) for row in rows]

    def last_id(self) -> int:
        return int(self.session.scalar(select(func.max(Event.id))) or 0)

    def pruned_through(self) -> int:
        row = self.session.get(EventHorizon, _HORIZON_ROW)
        return row.pruned_through if row is not None else 0

    def prune(self, created_before: datetime, at_most: int | None = None) -> int:
        """Delete events older than `created_before`, and none after `at_most`; how many.
        Ids commit in order (registry/events/outbox.py), so everything up to the newest
        old one goes."""
        through = self.session.scalar(select(func.max(Event.id)).where(
            Event.created_at < created_before))
        if through is not None and at_most is not None:
            through = min(through, at_most)
        if through is None or through <= 0:
            return 0
        row = self._locked_horizon()
        deleted = self.session.execute(delete(Event).where(Event.id <= through))
        row.pruned_through = max(row.pruned_through, through)
        self.session.flush()
        return int(getattr(deleted, "rowcount", 0) or 0)

    def _locked_horizon(self) -> EventHorizon:
        """The horizon's one row, locked for this transaction. The migration creates it;
        a database made from the models may lack it, and two gc runs creating it at once
        must not collide (a plain INSERT: one IntegrityError), so: insert it unless there,
        then lock whichever row won. On PostgreSQL the second INSERT waits for the first
        one's transaction, then does nothing; SQLite has one writer at a time."""
        dialect = self.session.get_bind().dialect.name
        insert = pg_insert if dialect == "postgresql" else sqlite_insert
        self.session.execute(insert(EventHorizon).values(id=_HORIZON_ROW, pruned_through=0)
                             .on_conflict_do_nothing(index_elements=["id"]))
        row = self.session.get(EventHorizon, _HORIZON_ROW, with_for_update=True,
                               populate_existing=True)
        assert row is not None  # inserted above, or by a transaction that committed
        return row
