"""HTTP for the event feed: `GET /events`, long-polling with `wait`."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request, Response

from registry.errors import ServerStopping
from registry.events import service
from registry.events.feed import EventFeed
from registry.events.schemas import TYPES_PATTERN, EventsPage
from registry.infra.conditional import json_answer
from registry.infra.deps import Reader, SettingsDep
from registry.names import MAX_ID

router = APIRouter(tags=["events"])


@router.get("/events", response_model=EventsPage)
async def list_events(
    request: Request, settings: SettingsDep, reader: Reader,
    after: Annotated[int, Query(ge=0, le=MAX_ID, description=(
        "the `cursor` of the last answer; 0 (the default) starts at the oldest event "
        "kept"))] = 0,
    types: Annotated[str | None, Query(max_length=1024, description=(
        "comma-separated event types, e.g. `adapter.registered,alias.set`"),
        json_schema_extra={"pattern": TYPES_PATTERN})] = None,
    base: Annotated[str | None, Query(description="only events about this base model's "
                                                  "adapters, fine-tunes and jobs (its name "
                                                  "or id)")] = None,
    name: Annotated[str | None, Query(description="only events about this name (a "
                                                  "model, adapter, data set or token)")] = None,
    limit: Annotated[int | None, Query(description="page size (capped)")] = None,
    wait: Annotated[float, Query(ge=0, description=(
        "seconds (at most `DELTAHUB_EVENTS_MAX_WAIT_SECONDS`, 30 by default) to wait for "
        "a matching event when none is there yet; the answer comes as soon as one "
        "commits"))] = 0,
) -> Response:
    """Events after `after`, oldest first, with the `cursor` to pass next (the same
    `after` when none came). 410 (`CursorExpired`) when events after `after` were pruned
    by retention: resynchronise, then follow from the cursor the error names."""
    query = service.feed_query(settings, after, types, base, name, limit, wait)
    feed: EventFeed = request.app.state.event_feed
    # Each read checks the token again: a long-poll outliving a revocation ends with 401.
    page = await feed.follow(
        lambda: reader.read_at_change(
            lambda session, newest: service.read_page_checked(session, query, newest)),
        lambda page: bool(page.items), wait, request.is_disconnected, query.matcher())
    if feed.closed and not page.items and wait > 0:
        # An empty answer now would send a follower straight back (in a loop, for the
        # whole grace period): a 503 makes it wait Retry-After seconds first.
        raise ServerStopping("the server is shutting down; follow again after "
                             "Retry-After seconds (from the same cursor)")
    return json_answer(request, page)
