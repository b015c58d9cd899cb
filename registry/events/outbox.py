"""`record_event`: an event written in the same transaction as the change it tells of.

Services call it where the change happens; the rows are inserted just before that
transaction commits (a `before_commit` hook), so a change that rolls back leaves no
event, and an event never exists without its change.

Ordering (docs/architecture.md, "Events"): a follower moves its cursor past every id it
has seen, so ids must become visible in id order. On PostgreSQL a sequence hands out ids
at insert, and two transactions can commit in the other order: a follower that read 6
before 5 committed would skip 5 for ever. So the insert takes one transaction-scoped
advisory lock first and holds it to commit: event-writing commits take turns, for the
instant between their last statement and their commit (the hook runs after everything
else the transaction did, so it never waits on a row lock while holding this one).
SQLite has one writer at a time, so its ids commit in order already. The same
transaction sends a NOTIFY, delivered at commit, that wakes long-polls (feed.py). Its
payload carries the new events' keys (id, type, base, name), so the feed's watcher
learns them without reading the database once per commit; when they do not fit in a
NOTIFY, the newest id alone (the watcher then reads them).
"""

from __future__ import annotations

import functools
import json
import threading
from collections.abc import Callable, Sequence

from sqlalchemy import ScalarSelect, event, func, select, text
from sqlalchemy.orm import Session, SessionTransaction

from registry.events.schemas import EVENT_DATA, EventType, Payload
from registry.tables import Event, EventHorizon, utcnow

NOTIFY_CHANNEL = "deltahub_events"
# The advisory lock that orders event commits (any fixed 64-bit key of our own).
ORDER_LOCK_KEY = 0x64656C7461687562  # "deltahub"
_PENDING = "deltahub.events.pending"
# PostgreSQL refuses a NOTIFY payload of 8000 bytes or more; keys past this go unsaid.
_NOTIFY_MAX_BYTES = 7000
_WROTE = "deltahub.events.wrote"
# Called (in the committing thread) after a transaction that wrote events commits: this
# process's webhook dispatchers wake at once instead of at their next poll.
_on_commit: list[Callable[[], None]] = []
_on_commit_lock = threading.Lock()


def add_commit_listener(listener: Callable[[], None]) -> None:
    """Call `listener` (quick, non-blocking) whenever events commit in this process."""
    with _on_commit_lock:
        _on_commit.append(listener)


def remove_commit_listener(listener: Callable[[], None]) -> None:
    with _on_commit_lock:
        if listener in _on_commit:
            _on_commit.remove(listener)


@functools.cache  # built once: a statement that holds it is then cached by SQLAlchemy
def newest_change() -> ScalarSelect[int]:
    """The newest event id (or, all events pruned, the highest pruned one): it grows with
    every committed change that writes an event, and never goes back, so it names a
    version of everything events record (registry/infra/conditional.py)."""
    return select(func.coalesce(
        select(func.max(Event.id)).scalar_subquery(),
        select(EventHorizon.pruned_through).where(EventHorizon.id == 1).scalar_subquery(),
        0)).scalar_subquery()


def record_event(session: Session, type: EventType, data: Payload) -> None:
    """Write `data` as a `type` event when this session's transaction commits.

    Call it outside any savepoint that may still roll back (`begin_nested`): the event
    is held by the session, not by the savepoint.
    """
    expected = EVENT_DATA[type]
    if not isinstance(data, expected):
        raise TypeError(f"a {type} event carries {expected.__name__}, not "
                        f"{data.__class__.__name__}")
    pending: list[Event] = session.info.setdefault(_PENDING, [])
    pending.append(Event(type=type.value, base=getattr(data, "base", None),
                         name=getattr(data, "name", None), data=data.model_dump(mode="json")))


@event.listens_for(Session, "before_commit")
def _write_pending(session: Session) -> None:
    pending: list[Event] | None = session.info.pop(_PENDING, None)
    if not pending:
        return
    postgres = session.get_bind().dialect.name == "postgresql"
    session.flush()  # the change's own row locks first, before the ordering lock
    if postgres:
        session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": ORDER_LOCK_KEY})
    now = utcnow()
    for row in pending:
        row.created_at = now
    session.add_all(pending)
    session.flush()
    session.info[_WROTE] = True
    if postgres:
        session.execute(text("SELECT pg_notify(:channel, :payload)"),
                        {"channel": NOTIFY_CHANNEL, "payload": notify_payload(pending)})


def notify_payload(rows: Sequence[Event]) -> str:
    """The NOTIFY's text: `[[id, type, base, name], ...]` in id order, or the newest id
    alone when that would not fit (feed.py reads the keys then)."""
    keys = json.dumps([[r.id, r.type, r.base, r.name] for r in rows], separators=(",", ":"))
    return keys if len(keys.encode()) <= _NOTIFY_MAX_BYTES else str(rows[-1].id)


@event.listens_for(Session, "after_commit")
def _announce(session: Session) -> None:
    if session.info.pop(_WROTE, False):
        with _on_commit_lock:
            listeners = list(_on_commit)
        for listener in listeners:
            listener()


@event.listens_for(Session, "after_transaction_end")
def _drop_pending(session: Session, transaction: SessionTransaction) -> None:
    # The outermost transaction ended without committing them (a rollback): they go too.
    if transaction.parent is None:
        session.info.pop(_PENDING, None)
        session.info.pop(_WROTE, None)
