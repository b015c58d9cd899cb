"""A long-poll sleeps through events it does not follow: no wake-up, no read."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest
from fastapi import FastAPI

from registry.events import feed as feed_module
from registry.events.feed import EventFeed
from registry.events.outbox import notify_payload, record_event
from registry.events.payloads import AliasData, TokenData
from registry.events.repository import EventKey, EventRepository
from registry.events.schemas import EventsPage, EventType
from registry.events.service import FeedQuery, read_page_checked
from registry.infra.database import Database
from registry.tables import Event


def _revoke(database: Database, count: int) -> int:
    """`count` token.revoked events, one commit each; the last one's id."""
    for i in range(count):
        with database.writing() as session:
            record_event(session, EventType.TOKEN_REVOKED, TokenData(id=i + 1, name="t"))
    with database.reading() as session:
        return EventRepository(session).last_id()


def _alias_set(database: Database) -> None:
    with database.writing() as session:
        record_event(session, EventType.ALIAS_SET, AliasData(
            name="a", alias="prod", base="b", adapter_id=1, version=1,
            previous_version=None, path="/adapters/a:prod"))


async def _until(check: Callable[[], object], what: str) -> None:
    for _ in range(3000):  # at most ~30 s: a bound, not a timing
        if check():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"{what} did not happen")


def test_a_follower_sleeps_through_events_it_does_not_follow(
        app: FastAPI, monkeypatch: pytest.MonkeyPatch) -> None:
    database: Database = app.state.database
    wakes: list[object] = []
    wake = feed_module._Waiter.wake

    def counted(self: feed_module._Waiter) -> None:
        wakes.append(self)
        wake(self)

    monkeypatch.setattr(feed_module._Waiter, "wake", counted)
    query = FeedQuery(after=0, types=(EventType.ALIAS_SET.value,), base=None, name=None,
                      limit=10)
    reads: list[int] = []

    async def read() -> tuple[EventsPage, int]:
        answer = await database.read(lambda s: read_page_checked(s, query))
        reads.append(answer[1])
        return answer

    async def scenario() -> EventsPage:
        feed = EventFeed(database, poll_s=0.05)
        follower = asyncio.create_task(feed.follow(
            read, lambda page: bool(page.items), 60, matches=query.matcher()))
        watch = feed._watch_here()
        await _until(lambda: reads and watch.logged_from is not None
                     and (feed.sqlite or watch.listening), "the watcher to start")
        wakes.clear()  # the watcher's start wakes everyone once, on purpose
        reads.clear()
        last = await asyncio.to_thread(_revoke, database, 5)
        await _until(lambda: watch.seen_through >= last, "the watcher to see the events")
        assert (wakes, reads) == ([], [])  # slept through them: nothing read
        await asyncio.to_thread(_alias_set, database)
        page = await asyncio.wait_for(follower, 30)
        feed.close()
        return page

    page = asyncio.run(scenario())
    assert [e.type for e in page.items] == ["alias.set"]
    assert len(wakes) == 1  # woken once, by the event it follows


def test_a_notify_carries_the_keys_or_the_newest_id_when_they_do_not_fit() -> None:
    rows = [Event(id=7, type="alias.set", base="b", name="a"),
            Event(id=8, type="token.revoked", base=None, name="t")]
    assert feed_module._keys_in(notify_payload(rows)) == [
        EventKey(7, "alias.set", "b", "a"), EventKey(8, "token.revoked", None, "t")]
    many = [Event(id=i, type="alias.set", base="b" * 128, name="n" * 128)
            for i in range(1, 60)]
    assert notify_payload(many) == "59"  # over PostgreSQL's limit: the watcher reads
    assert feed_module._keys_in("59") is None
    assert feed_module._keys_in("[not json") is None
