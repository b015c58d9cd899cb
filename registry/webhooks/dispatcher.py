"""Dispatcher threads: claim a webhook, send its due deliveries in order, record each.

`deltahub worker` and `deltahub serve` (with embedded workers) each run
WEBHOOK_DISPATCHERS of them. Each serves one webhook at a time, and every attempt is
bounded (registry/webhooks/sender.py), so a slow or hostile receiver holds one thread
for at most a timeout per attempt while the others serve other webhooks; the API never
waits on a receiver. Idle threads wake when events commit (in this process, or on
PostgreSQL in any, through the outbox's NOTIFY), else every WEBHOOK_POLL_SECONDS.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections.abc import Callable

import psycopg
from sqlalchemy.engine import make_url

from registry.events.outbox import NOTIFY_CHANNEL, add_commit_listener, remove_commit_listener
from registry.infra.database import Database
from registry.infra.engines import is_sqlite
from registry.settings import Settings
from registry.webhooks import queue, signing
from registry.webhooks.sender import send

log = logging.getLogger("deltahub.webhooks")

_BATCH = 100  # deliveries read per claim
_RELISTEN_SECONDS = 1.0


class Wakeup:
    """A generation counter idle dispatchers wait on: a poke between a thread's look for
    work and its wait is never lost (it waits only while the generation is unchanged)."""

    def __init__(self) -> None:
        self._changed = threading.Condition()
        self._generation = 0

    def generation(self) -> int:
        with self._changed:
            return self._generation

    def poke(self) -> None:
        with self._changed:
            self._generation += 1
            self._changed.notify_all()

    def wait(self, since: int, timeout_s: float) -> None:
        with self._changed:
            self._changed.wait_for(lambda: self._generation != since, timeout_s)


class Dispatcher:
    def __init__(self, database: Database, settings: Settings, name: str,
                 wakeup: Wakeup | None = None) -> None:
        self.database, self.settings, self.name = database, settings, name
        self.stopping = threading.Event()
        self.wakeup = wakeup or Wakeup()
        # Tests: called after a send, before its record (raise to die there).
        self.after_send: Callable[[queue.Due], None] | None = None

    def run(self) -> None:
        """Dispatch until `stop()`; when nothing is due, wait for a wake-up (events
        committed) or WEBHOOK_POLL_SECONDS (retries coming due, other processes)."""
        while not self.stopping.is_set():
            generation = self.wakeup.generation()
            try:
                worked = self.run_once()
            except Exception:  # outlive a database outage
                log.exception("webhook dispatcher %s: claiming failed; retrying", self.name)
                worked = False
            if not worked and not self.stopping.is_set():
                self.wakeup.wait(generation, self.settings.WEBHOOK_POLL_SECONDS)

    def stop(self) -> None:
        self.stopping.set()
        self.wakeup.poke()

    def run_once(self) -> bool:
        """Serve one webhook's due deliveries; False when none was due."""
        with self.database.reading() as session:
            if not queue.has_work(session):
                return False  # the usual case: no write transaction at all
        owner = f"{self.name}/{uuid.uuid4().hex[:8]}"[:128]
        with self.database.writing() as session:
            claimed = queue.claim(session, owner, self.settings)
        if claimed is None:
            return False
        try:
            self._serve(claimed)
        except queue.LeaseLost:
            log.warning("webhook %d: lease lost; another dispatcher resends", claimed.id)
            return True
        with self.database.writing() as session:
            queue.release(session, claimed)
        return True

    def _serve(self, claimed: queue.ClaimedWebhook) -> None:
        with self.database.reading() as session:
            batch = queue.due(session, claimed, _BATCH)
        for due in batch:
            if self.stopping.is_set():
                return
            body = json.dumps(due.payload, separators=(",", ":")).encode()
            headers = signing.headers(claimed.secrets, due.message_id, int(time.time()), body)
            outcome = send(claimed.url, headers, body, self.settings)
            if self.after_send is not None:
                self.after_send(due)
            with self.database.writing() as session:
                go_on = queue.record(session, claimed, due, outcome, self.settings)
            if not outcome.delivered:
                log.info("webhook %d: %s attempt failed: %s", claimed.id, due.message_id,
                         outcome.error)
            if not go_on:
                return


class Dispatchers:
    """WEBHOOK_DISPATCHERS dispatcher threads of one process."""

    def __init__(self, database: Database, settings: Settings, name: str) -> None:
        self.wakeup = Wakeup()
        self.dispatchers = [Dispatcher(database, settings, f"{name}-d{i}", self.wakeup)
                            for i in range(settings.WEBHOOK_DISPATCHERS)]
        self.threads = [threading.Thread(target=d.run, name=f"webhooks-{i}", daemon=True)
                        for i, d in enumerate(self.dispatchers)]
        self._stopping = threading.Event()
        self._listen_url = None if is_sqlite(database.url) else make_url(database.url).set(
            drivername="postgresql").render_as_string(hide_password=False)
        if self._listen_url is not None and self.dispatchers:
            self.threads.append(threading.Thread(target=self._listen, name="webhooks-listen",
                                                 daemon=True))

    def start(self) -> None:
        if self.dispatchers:
            add_commit_listener(self.wakeup.poke)
        for thread in self.threads:
            thread.start()

    def stop(self, timeout_s: float = 5.0) -> None:
        remove_commit_listener(self.wakeup.poke)
        self._stopping.set()
        for dispatcher in self.dispatchers:
            dispatcher.stop()
        deadline = time.monotonic() + timeout_s
        for thread in self.threads:
            # An attempt in flight ends within its timeout; one not recorded by then is
            # sent again by whoever claims the webhook after the lease (same webhook-id).
            thread.join(timeout=max(0.0, deadline - time.monotonic()))

    def _listen(self) -> None:
        """PostgreSQL: wake the dispatchers on the outbox's NOTIFY from any process."""
        assert self._listen_url is not None
        while not self._stopping.is_set():
            try:
                with psycopg.connect(self._listen_url, autocommit=True,
                                     connect_timeout=5) as conn:
                    conn.execute(f"LISTEN {NOTIFY_CHANNEL}")
                    self.wakeup.poke()  # an event may have committed before the LISTEN
                    while not self._stopping.is_set():
                        for _ in conn.notifies(timeout=_RELISTEN_SECONDS):
                            self.wakeup.poke()
            except (psycopg.Error, OSError) as exc:
                log.warning("webhook LISTEN connection failed (%s); polling meanwhile", exc)
                self._stopping.wait(_RELISTEN_SECONDS)
