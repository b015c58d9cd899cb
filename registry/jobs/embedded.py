"""The embedded shape: `deltahub serve` runs EMBEDDED_WORKERS worker threads beside the API,
and (with any) WEBHOOK_DISPATCHERS webhook dispatchers, so one machine does the whole job
with no other process to start.

With one API process they run inside it (the app's lifespan); with `--workers N` above one
they run in one job process of their own (registry/cli/supervisor.py), so that N API
processes do not mean N times the jobs' threads.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import AsyncIterator, Iterator

from fastapi import FastAPI

from registry.infra.database import Database
from registry.jobs.worker import Worker, worker_name
from registry.settings import Settings
from registry.storage.base import BlobStore
from registry.webhooks.dispatcher import Dispatchers


@contextlib.asynccontextmanager
async def embedded_workers(app: FastAPI) -> AsyncIterator[None]:
    with running_workers(app.state.database, app.state.store, app.state.settings):
        yield


@contextlib.contextmanager
def running_workers(database: Database, store: BlobStore, settings: Settings
                    ) -> Iterator[int]:
    """EMBEDDED_WORKERS job threads and their dispatchers until the block ends; how many."""
    workers = [Worker(database, store, settings) for _ in range(settings.EMBEDDED_WORKERS)]
    threads = [threading.Thread(target=w.run, name=f"worker-{i}", daemon=True)
               for i, w in enumerate(workers)]
    for thread in threads:
        thread.start()
    # Webhook deliveries go with the embedded workers: none when jobs are left to others.
    dispatchers = Dispatchers(database, settings, worker_name()) if workers else None
    if dispatchers is not None:
        dispatchers.start()
    try:
        yield len(workers)
    finally:
        if dispatchers is not None:
            dispatchers.stop()
        for worker in workers:
            worker.stop()
        for thread in threads:
            # A job in flight stops at its next progress point only if cancelled; on
            # shutdown it is left to lease expiry and another worker, not waited for.
            thread.join(timeout=5)
