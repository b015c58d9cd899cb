"""Rules of the feed: which events a query asks for, and whether its cursor is too old."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import NamedTuple

from pydantic import TypeAdapter
from sqlalchemy.orm import Session

from registry.errors import CursorAhead, CursorExpired, InvalidRequest
from registry.events.repository import EventKey, EventRepository
from registry.events.schemas import EventOut, EventsPage, EventType
from registry.infra.pagination import check_limit
from registry.models.repository import ModelRepository
from registry.names import check_name, is_id, parse_id
from registry.settings import Settings
from registry.tables import Event

_EVENT = TypeAdapter[EventOut](EventOut)


@dataclass(frozen=True)
class FeedQuery:
    after: int
    types: tuple[str, ...]
    base: str | None
    name: str | None
    limit: int

    def matcher(self) -> Callable[[EventKey], bool] | None:
        """Whether an event is one this query asks for, from its key alone; None when
        that needs the database (a base given by id: events name their base)."""
        if self.base is not None and is_id(self.base):
            return None
        types, base, name = frozenset(self.types), self.base, self.name
        return lambda key: ((not types or key.type in types)
                            and (base is None or key.base == base)
                            and (name is None or key.name == name))


def feed_query(settings: Settings, after: int, types: str | None, base: str | None,
               name: str | None, limit: int | None, wait_s: float = 0) -> FeedQuery:
    """The query, checked: 422 for an unknown type, a bad name, a limit or a wait out of
    range."""
    if base is not None and not is_id(base):
        check_name(base, "base model name")
    if name is not None:
        check_name(name, "name")
    if wait_s > settings.EVENTS_MAX_WAIT_SECONDS:
        raise InvalidRequest(f"wait: at most {settings.EVENTS_MAX_WAIT_SECONDS:g} seconds, "
                             f"got {wait_s:g}; ask again when the answer comes")
    return FeedQuery(after, parse_types(types), base, name,
                     check_limit(limit, settings.DEFAULT_PAGE_SIZE, settings.MAX_PAGE_SIZE,
                                 "pass the answer's cursor as `after` for the next page"))


def parse_types(text: str | None) -> tuple[str, ...]:
    if text is None:
        return ()
    wanted = tuple(t.strip() for t in text.split(",") if t.strip())
    known = {t.value for t in EventType}
    unknown = [t for t in wanted if t not in known]
    if unknown or not wanted:
        raise InvalidRequest(f"types: unknown event type(s) {', '.join(map(repr, unknown))}; "
                             f"pass a comma-separated list of: {', '.join(sorted(known))}"
                             if unknown else "types: empty; pass a comma-separated list of "
                             "event types, e.g. adapter.registered,alias.set, or leave it out")
    return wanted


def read_page(session: Session, query: FeedQuery) -> EventsPage:
    """The events after the cursor, oldest first; 410 when some were pruned."""
    repo = EventRepository(session)
    base = query.base
    if base is not None and is_id(base):  # events name their base; an id means its name
        model_id = parse_id(base) or 0
        base = ModelRepository(session).names_of({model_id}).get(model_id, base)
    pruned = repo.pruned_through()
    if query.after < pruned:
        raise CursorExpired(
            f"events up to {pruned} were pruned by retention, so some after {query.after} "
            f"are gone; resynchronise (list what you follow) and continue with after={pruned}")
    rows = repo.after(query.after, types=query.types, base=base, name=query.name,
                      limit=query.limit)
    return EventsPage(items=[event_out(row) for row in rows],
                      cursor=rows[-1].id if rows else query.after)


def read_page_checked(session: Session, query: FeedQuery,
                      newest: int | None = None) -> tuple[EventsPage, int]:
    """`read_page`, and the newest event id read before it (`newest`, when the caller
    read it already, with the token: `newest_change`): every event up to it was visible
    to the page's read (ids commit in order), so a long-poll that found nothing need only
    look at events after it."""
    if newest is None:
        newest = EventRepository(session).last_id()  # first: the page sees all up to it
    if query.after > newest:
        # Ids are never reused and a cursor is an id this feed gave out, so one past the
        # newest comes from another database (or one reset since): following it would
        # skip every event up to it, silently.
        raise CursorAhead(
            f"after={query.after} is past the newest event ({newest}): that cursor is not "
            f"from this registry's feed (a reset or another database?); resynchronise "
            f"(list what you follow) and continue with after={newest}")
    return read_page(session, query), newest


def event_out(row: Event) -> EventOut:
    return _EVENT.validate_python({"id": row.id, "type": row.type,
                                   "created_at": row.created_at, "data": row.data})


class Pruned(NamedTuple):
    events: int
    deliveries: int  # webhook deliveries (with their attempts) of the pruned events


def prune_events(session: Session, settings: Settings, now: datetime | None = None) -> Pruned:
    """Delete events older than the retention period. Events an enabled webhook
    has yet to fan out or deliver are kept, however old. Then the webhook deliveries of
    the pruned events, in batches (registry/gc/deliveries.py): this commits, so call it
    in a transaction of its own (as `deltahub gc` does)."""
    from registry.gc.deliveries import prune_deliveries  # webhooks build on the feed
    from registry.webhooks.queue import undelivered_floor

    cutoff = (now or datetime.now(UTC)) - timedelta(days=settings.EVENT_RETENTION_DAYS)
    repo = EventRepository(session)
    pruned = repo.prune(cutoff, undelivered_floor(session))
    session.commit()  # the events and the horizon, before the log's batches
    return Pruned(pruned, prune_deliveries(session, repo.pruned_through(), cutoff))
