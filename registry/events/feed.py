"""Long-polling `GET /events?wait=`: answer as soon as a matching event commits.

A waiting request holds no database connection and no thread: it reads once, and when
nothing matched it awaits a wake-up on the event loop. One watcher per server process
(per event loop) reads each new event's key (id, type, base, name) once and wakes every
waiter whose query one of them matches: on PostgreSQL when the outbox's NOTIFY
(registry/events/outbox.py) arrives on its one LISTEN connection, on SQLite by a shared
look every EVENTS_POLL_SECONDS. A waiter is woken, and reads the database again, only when
a new key matches its query: followers of events that do not come cost one in-memory
match per commit, no wake-up (each woken coroutine costs a task switch and a timer; at
100 followers and 10 commits a second that was most of their CPU). The watcher starts
with the first waiter and stops after a quiet minute. `close()` (server shutdown) answers
every waiter at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import threading
import weakref
from collections import deque
from collections.abc import Awaitable, Callable, Iterator
from typing import TypeVar

import psycopg
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

from registry.events.outbox import NOTIFY_CHANNEL
from registry.events.repository import EventKey, EventRepository
from registry.infra.database import Database
from registry.infra.engines import is_sqlite

log = logging.getLogger("deltahub.events")
T = TypeVar("T")

# A watcher with no waiter for this long stops (the next waiter starts it again).
_IDLE_STOP_SECONDS = 60.0
# With the LISTEN connection down, waiters read again this often instead.
_FALLBACK_POLL_SECONDS = 1.0
_RECONNECT_SECONDS = 1.0
_IDLE_CHECK_SECONDS = 5.0
_GONE_CHECK_SECONDS = 1.0
# New events' keys kept for waiters to match against; past this, waiters read again.
_KEY_LOG = 4096
_KEY_BATCH = 1000


Matcher = Callable[[EventKey], bool]


class _Waiter:
    """One long-poll asleep: what it asks for (None: anything), and its wake-up."""

    __slots__ = ("matches", "woken")

    def __init__(self, matches: Matcher | None) -> None:
        self.matches = matches
        self.woken: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def wake(self) -> None:
        if not self.woken.done():
            self.woken.set_result(None)


class _LoopWatch:
    """The wake-ups of one event loop: a generation counter (moved by every new event,
    so a waiter can tell that something committed between its read and its sleep), the
    sleeping waiters, and the watcher task."""

    def __init__(self, feed: EventFeed) -> None:
        self.feed = feed
        self.generation = 0
        self.waiting = 0
        self.listening = False  # PostgreSQL: whether a LISTEN is in place right now
        self.closed = False
        self._asleep: set[_Waiter] = set()
        self._task: asyncio.Task[None] | None = None
        # Every event with logged_from < id <= seen_through has its key in `keys`
        # (None: not tracking, e.g. the LISTEN connection is down).
        self.keys: deque[EventKey] = deque(maxlen=_KEY_LOG)
        self.logged_from: int | None = None
        self.seen_through = 0

    def bump(self) -> None:
        """Wake every waiter (the feed closed, the key log restarted or broke)."""
        self.generation += 1
        for waiter in self._asleep:
            waiter.wake()

    def arrived(self, keys: list[EventKey]) -> None:
        """New events: wake the waiters that one of them matches."""
        self.generation += 1
        for waiter in self._asleep:
            if waiter.matches is None or any(waiter.matches(key) for key in keys):
                waiter.wake()

    def close(self) -> None:
        self.closed = True
        self.bump()
        if self._task is not None:
            self._task.cancel()

    @contextlib.contextmanager
    def joined(self) -> Iterator[None]:
        self.waiting += 1
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._watch(), name="deltahub-events-watch")
        try:
            yield
        finally:
            self.waiting -= 1

    async def changed_since(self, generation: int, timeout_s: float,
                            matches: Matcher | None) -> bool:
        """Wait up to `timeout_s`; whether to look again: the generation had moved past
        `generation`, an event that `matches` arrived, the feed closed, or (LISTEN down)
        a fallback interval passed."""
        if self.generation != generation or self.closed:
            return True
        fallback = not self.feed.sqlite and not self.listening
        if fallback:
            timeout_s = min(timeout_s, _FALLBACK_POLL_SECONDS)
        waiter = _Waiter(matches)
        self._asleep.add(waiter)
        try:
            async with asyncio.timeout(timeout_s):
                await waiter.woken
            return True
        except TimeoutError:
            return fallback
        finally:
            self._asleep.discard(waiter)

    def nothing_for(self, checked: int, matches: Matcher) -> int | None:
        """For a waiter whose read took events up to `checked` into account: the id it
        may move `checked` to when no new event matches, else None (read again)."""
        if self.logged_from is None or self.logged_from > checked:
            return None
        for key in reversed(self.keys):  # newest first: only those after `checked`
            if key.id <= checked:
                break
            if matches(key):
                return None
        return max(checked, self.seen_through)

    async def _start_log(self) -> None:
        last = await self.feed.database.read(lambda s: EventRepository(s).last_id())
        self.keys.clear()
        self.logged_from = self.seen_through = last

    async def _catch_up(self) -> list[EventKey]:
        """Read the keys of events committed since the last look; those keys."""
        added: list[EventKey] = []
        while True:
            keys = await self.feed.database.read(
                functools.partial(_keys_after, after=self.seen_through))
            added += self._log(keys)
            if len(keys) < _KEY_BATCH:
                return added

    def _log(self, keys: list[EventKey]) -> list[EventKey]:
        """Add the keys after `seen_through` (in id order) to the log; those added."""
        new = [key for key in keys if key.id > self.seen_through]
        for key in new:
            if len(self.keys) == self.keys.maxlen:
                self.logged_from = self.keys[0].id  # the oldest falls out
            self.keys.append(key)
            self.seen_through = key.id
        return new

    async def _notified(self, payload: str) -> list[EventKey]:
        """The new keys a NOTIFY brings: from its payload when it carries them (no read:
        every event-writing commit since the LISTEN sends one, in commit order, which is
        id order), else read from the database."""
        keys = _keys_in(payload)
        return self._log(keys) if keys is not None else await self._catch_up()

    async def _watch(self) -> None:
        try:
            await (self._poll() if self.feed.sqlite else self._listen())
        except asyncio.CancelledError:
            raise
        except Exception:  # a watcher must never take waiters down with it
            log.exception("event watcher failed; long-polls fall back to reading again")
            self.logged_from = None
            self.bump()

    async def _poll(self) -> None:
        await self._start_log()
        self.bump()  # an event may have committed between a waiter's read and the log's start
        idle = 0.0
        while idle < _IDLE_STOP_SECONDS:
            await asyncio.sleep(self.feed.poll_s)
            idle = 0.0 if self.waiting else idle + self.feed.poll_s
            if self.waiting and (keys := await self._catch_up()):
                self.arrived(keys)

    async def _listen(self) -> None:
        while not self.closed:
            try:
                if await self._listen_once():
                    return  # idle: stopped on purpose
            except (psycopg.Error, OSError) as exc:
                log.warning("event LISTEN connection failed (%s); retrying", exc)
            finally:
                self.listening = False
                self.logged_from = None  # events may commit unseen until LISTEN is back
            self.bump()  # waiters read again rather than trust a lost wake-up
            await asyncio.sleep(_RECONNECT_SECONDS)

    async def _listen_once(self) -> bool:
        """LISTEN until idle (True), or until the connection fails (raises)."""
        conn = await psycopg.AsyncConnection.connect(self.feed.listen_url, autocommit=True,
                                                     connect_timeout=5)
        async with conn:
            await conn.execute(f"LISTEN {NOTIFY_CHANNEL}")
            await self._start_log()  # after the LISTEN: no commit falls between the two
            self.listening = True
            self.bump()  # an event may have committed before the LISTEN took hold
            idle = 0.0
            while idle < _IDLE_STOP_SECONDS:
                async for note in conn.notifies(timeout=_IDLE_CHECK_SECONDS):
                    if keys := await self._notified(note.payload):
                        self.arrived(keys)  # at once: each waiter whose query matches
                idle = 0.0 if self.waiting else idle + _IDLE_CHECK_SECONDS
        return True


def _keys_after(session: Session, after: int) -> list[EventKey]:
    return EventRepository(session).keys_after(after, _KEY_BATCH)


def _keys_in(payload: str) -> list[EventKey] | None:
    """The keys in a NOTIFY's payload (registry/events/outbox.py `notify_payload`); None
    when it carries only an id, or is not ours."""
    if not payload.startswith("["):
        return None
    try:
        return [EventKey(int(i), str(t), b, n) for i, t, b, n in json.loads(payload)]
    except (ValueError, TypeError):
        return None


class EventFeed:
    """The app's long-poll hub (app.state.event_feed)."""

    def __init__(self, database: Database, poll_s: float) -> None:
        self.database = database
        self.poll_s = poll_s
        self.sqlite = is_sqlite(database.url)
        self.listen_url = "" if self.sqlite else make_url(database.url).set(
            drivername="postgresql").render_as_string(hide_password=False)
        self._watches: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _LoopWatch] = (
            weakref.WeakKeyDictionary())
        self._lock = threading.Lock()
        self.closed = False

    @property
    def waiting(self) -> int:
        """Long-polls waiting right now, in every event loop of this process."""
        with self._lock:
            return sum(w.waiting for w in self._watches.values())

    async def follow(self, read: Callable[[], Awaitable[tuple[T, int]]],
                     found: Callable[[T], bool], wait_s: float,
                     gone: Callable[[], Awaitable[bool]] | None = None,
                     matches: Matcher | None = None) -> T:
        """`read()` until `found` says it found something, for up to `wait_s`; its last
        answer. `read` also gives the newest event id it took into account; after a
        wake-up, a waiter with `matches` reads again only if a newer event matches (None:
        on every wake-up). The generation is taken before each read, so an event
        committed between the read and the wait still wakes this one. `gone()` says
        whether the client went away (checked every second or so: it then stops waiting).
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait_s
        watch = self._watch_here()
        with watch.joined():
            while True:
                generation = watch.generation
                page, checked = await read()
                if found(page) or watch.closed:
                    return page
                while True:
                    remaining = deadline - loop.time()
                    if remaining <= 0:
                        return page
                    if await watch.changed_since(generation,
                                                 min(remaining, _GONE_CHECK_SECONDS),
                                                 matches):
                        # No await from here to the check: the log is as of `now`.
                        now = watch.generation
                        moved = (watch.nothing_for(checked, matches)
                                 if matches is not None and not watch.closed else None)
                        if moved is None:
                            break
                        checked, generation = moved, now
                        continue
                    if gone is not None and await gone():
                        return page

    def open(self) -> None:
        """Take waiters again (a new serving of the app after a `close`)."""
        with self._lock:
            self.closed = False

    def close(self) -> None:
        """Answer every waiter now and stop the watchers (from any thread)."""
        with self._lock:
            self.closed = True
            watches = list(self._watches.items())
        for loop, watch in watches:
            with contextlib.suppress(RuntimeError):  # that loop has already ended
                loop.call_soon_threadsafe(watch.close)

    def _watch_here(self) -> _LoopWatch:
        loop = asyncio.get_running_loop()
        with self._lock:
            watch = self._watches.get(loop)
            if watch is None:
                watch = self._watches[loop] = _LoopWatch(self)
                watch.closed = self.closed
            return watch
