"""Dispatcher threads: claim a webhook, send its due deliveries in order, record each.

`deltahub worker` and `deltahub serve` (with embedded workers) each run
WEBHOOK_DISPATCHERS of them. Each serves one webhook at a time, and every attempt is
bounded (registry/webhooks/sender.py), so a slow or hostile receiver holds one thread
for at most a timeout per attempt while the others serve other webhooks; the API never
waits on a receiver.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections.abc import Callable

from registry.infra.database import Database
from registry.settings import Settings
from registry.webhooks import queue, signing
from registry.webhooks.sender import send

log = logging.getLogger("deltahub.webhooks")

_BATCH = 100  # deliveries read per claim


class Dispatcher:
    def __init__(self, database: Database, settings: Settings, name: str) -> None:
        self.database, self.settings, self.name = database, settings, name
        self.stopping = threading.Event()
        # Tests: called after a send, before its record (raise to die there).
        self.after_send: Callable[[queue.Due], None] | None = None

    def run(self) -> None:
        """Dispatch until `stop()`; sleeps WEBHOOK_POLL_SECONDS when nothing is due."""
        while not self.stopping.is_set():
            try:
                worked = self.run_once()
            except Exception:  # outlive a database outage
                log.exception("webhook dispatcher %s: claiming failed; retrying", self.name)
                worked = False
            if not worked:
                self.stopping.wait(self.settings.WEBHOOK_POLL_SECONDS)

    def stop(self) -> None:
        self.stopping.set()

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
        self.dispatchers = [Dispatcher(database, settings, f"{name}-d{i}")
                            for i in range(settings.WEBHOOK_DISPATCHERS)]
        self.threads = [threading.Thread(target=d.run, name=f"webhooks-{i}", daemon=True)
                        for i, d in enumerate(self.dispatchers)]

    def start(self) -> None:
        for thread in self.threads:
            thread.start()

    def stop(self, timeout_s: float = 5.0) -> None:
        for dispatcher in self.dispatchers:
            dispatcher.stop()
        deadline = time.monotonic() + timeout_s
        for thread in self.threads:
            # An attempt in flight ends within its timeout; one not recorded by then is
            # sent again by whoever claims the webhook after the lease (same webhook-id).
            thread.join(timeout=max(0.0, deadline - time.monotonic()))
