"""Liveness and readiness: is the process up, can it reach its database and store?"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable

import anyio
import anyio.to_thread
from fastapi import FastAPI
from fastapi.responses import JSONResponse

from registry.infra.database import Database
from registry.storage.base import BlobStore

# A readiness probe must answer quickly even when a dependency hangs.
PROBE_TIMEOUT_SECONDS = 5.0


def add_health(app: FastAPI) -> None:
    @app.get("/healthz", tags=["health"])
    def healthz() -> dict[str, str | int]:
        """The process is up; `pid` names it (`deltahub serve --workers N` runs several)."""
        return {"status": "ok", "pid": os.getpid()}

    @app.get("/readyz", tags=["health"])
    async def readyz() -> JSONResponse:
        """The database answers and the object store accepts writes."""
        database: Database = app.state.database
        store: BlobStore = app.state.store
        checks = {"database": await _probe(database.ping),
                  "storage": await _probe(lambda: anyio.to_thread.run_sync(
                      store.check, abandon_on_cancel=True))}
        ready = all(v == "ok" for v in checks.values())
        headers = None if ready else {"Retry-After": "5"}
        return JSONResponse({"status": "ok" if ready else "unavailable", "checks": checks},
                            status_code=200 if ready else 503, headers=headers)


async def _probe(check: Callable[[], Awaitable[object]]) -> str:
    try:
        with anyio.fail_after(PROBE_TIMEOUT_SECONDS):
            await check()
    except TimeoutError:
        return f"error: no answer within {PROBE_TIMEOUT_SECONDS:g} s"
    except Exception as exc:  # any failure means not ready; say which
        detail = getattr(exc, "detail", None) or str(exc) or type(exc).__name__
        return f"error: {detail}"
    return "ok"
