"""Long-polling `GET /events?wait=`: answer as soon as a matching event commits.

A waiting request holds no database connection and no thread: it reads once, and when
nothing matched it awaits a wake-up on the event loop, then reads again. One watcher per
server process (per event loop) wakes every waiter: on PostgreSQL one connection that
LISTENs to the outbox's NOTIFY (registry/events/outbox.py), on SQLite a shared check of
the newest id every EVENTS_POLL_SECONDS. The watcher starts with the first waiter and
stops after a quiet minute. `close()` (server shutdown) answers every waiter at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import weakref
from collections.abc import Awaitable, Callable, Iterator
from typing import TypeVar

import psycopg
from sqlalchemy.engine import make_url

from registry.events.outbox import NOTIFY_CHANNEL
from registry.events.repository import EventRepository
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


class _LoopWatch:
    """The wake-ups of one event loop: a generation counter and its watcher task."""

    def __init__(self, feed: EventFeed) -> None:
        self.feed = feed
        self.generation = 0
        self.waiting = 0
        self.listening = False  # PostgreSQL: whether a LISTEN is in place right now
        self.closed = False
        self._changed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def bump(self) -> None:
        self.generation += 1
        self._changed.set()
        self._changed = asyncio.Event()

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

    async def changed_since(self, generation: int, timeout_s: float) -> bool:
        """Wait up to `timeout_s`; whether to read again: the generation moved past
        `generation`, the feed closed, or (LISTEN down) a fallback interval passed."""
        if self.generation != generation or self.closed:
            return True
        fallback = not self.feed.sqlite and not self.listening
        if fallback:
            timeout_s = min(timeout_s, _FALLBACK_POLL_SECONDS)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._changed.wait(), timeout_s)
            return True
        return fallback

    async def _watch(self) -> None:
        try:
            await (self._poll() if self.feed.sqlite else self._listen())
        except asyncio.CancelledError:
            raise
        except Exception:  # a watcher must never take waiters down with it
            log.exception("event watcher failed; long-polls fall back to reading again")
            self.bump()

    async def _poll(self) -> None:
        last = await self.feed.database.read(lambda s: EventRepository(s).last_id())
        self.bump()  # an event may have committed between a waiter's read and `last`
        idle = 0.0
        while idle < _IDLE_STOP_SECONDS:
            await asyncio.sleep(self.feed.poll_s)
            idle = 0.0 if self.waiting else idle + self.feed.poll_s
            if not self.waiting:
                continue
            newest = await self.feed.database.read(lambda s: EventRepository(s).last_id())
            if newest != last:
                last = newest
                self.bump()

    async def _listen(self) -> None:
        while not self.closed:
            try:
                if await self._listen_once():
                    return  # idle: stopped on purpose
            except (psycopg.Error, OSError) as exc:
                log.warning("event LISTEN connection failed (%s); retrying", exc)
            finally:
                self.listening = False
            self.bump()  # waiters read again rather than trust a lost wake-up
            await asyncio.sleep(_RECONNECT_SECONDS)

    async def _listen_once(self) -> bool:
        """LISTEN until idle (True), or until the connection fails (raises)."""
        conn = await psycopg.AsyncConnection.connect(self.feed.listen_url, autocommit=True,
                                                     connect_timeout=5)
        async with conn:
            await conn.execute(f"LISTEN {NOTIFY_CHANNEL}")
            self.listening = True
            self.bump()  # an event may have committed before the LISTEN took hold
            idle = 0.0
            while idle < _IDLE_STOP_SECONDS:
                async for _ in conn.notifies(timeout=_IDLE_CHECK_SECONDS):
                    self.bump()  # at once: each waiter reads again and answers
                idle = 0.0 if self.waiting else idle + _IDLE_CHECK_SECONDS
        return True


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

    async def follow(self, read: Callable[[], Awaitable[T]], found: Callable[[T], bool],
                     wait_s: float, gone: Callable[[], Awaitable[bool]] | None = None) -> T:
        """`read()` until `found` says it found something, for up to `wait_s`; its last
        answer. The generation is taken before each read, so an event committed between
        the read and the wait still wakes this one. `gone()` says whether the client
        went away (checked every second or so: it then stops waiting).
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait_s
        watch = self._watch_here()
        with watch.joined():
            while True:
                generation = watch.generation
                page = await read()
                if found(page) or watch.closed:
                    return page
                while True:
                    remaining = deadline - loop.time()
                    if remaining <= 0:
                        return page
                    if await watch.changed_since(generation,
                                                 min(remaining, _GONE_CHECK_SECONDS)):
                        break
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
