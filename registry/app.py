"""The FastAPI application: routers, error rendering, health checks."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy import Engine, text
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException

from compress.errors import CodecError
from registry.adapters.endpoints import router as adapters_router
from registry.auth.endpoints import router as tokens_router
from registry.bodylimit import BodyLimitMiddleware
from registry.db import make_engine, make_session_factory
from registry.errors import APIError, from_codec_error
from registry.models.endpoints import router as models_router
from registry.settings import Settings, get_settings
from registry.storage.base import BlobStore, StorageError
from registry.storage.factory import make_blob_store

log = logging.getLogger("deltahub")

_HTTP_NAMES = {401: "Unauthorized", 404: "NotFound", 405: "MethodNotAllowed",
               413: "PayloadTooLarge"}


def create_app(settings: Settings | None = None, store: BlobStore | None = None,
               engine: Engine | None = None) -> FastAPI:
    settings = settings or get_settings()
    app = FastAPI(
        title="deltahub",
        summary="Adapter registry and delta compression for fine-tuned LLMs.",
        version="0.1.0",
    )
    app.state.settings = settings
    app.state.engine = engine or make_engine(settings.DATABASE_URL)
    app.state.session_factory = make_session_factory(app.state.engine)
    app.state.store = store or make_blob_store(settings)
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.MAX_REQUEST_BYTES)
    for router in (models_router, adapters_router, tokens_router):
        app.include_router(router)
    _add_error_handlers(app)
    _add_health(app)
    return app


def _error(status: int, name: str, detail: str, **extra: Any) -> JSONResponse:
    return JSONResponse({"error": name, "detail": detail, **extra}, status_code=status)


def _add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(APIError)
    async def api_error(_: Request, exc: APIError) -> JSONResponse:
        return JSONResponse(exc.body(), status_code=exc.status_code, headers=exc.headers())

    @app.exception_handler(CodecError)
    async def codec_error(_: Request, exc: CodecError) -> JSONResponse:
        error = from_codec_error(exc)
        return JSONResponse(error.body(), status_code=error.status_code)

    @app.exception_handler(RequestValidationError)
    async def validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        parts = []
        for err in exc.errors():
            where = ".".join(str(p) for p in err.get("loc", ()))
            parts.append(f"{where}: {err.get('msg', 'invalid')}")
        return _error(422, "ValidationError", "; ".join(parts) or "invalid request")

    @app.exception_handler(HTTPException)
    async def http_error(_: Request, exc: HTTPException) -> JSONResponse:
        name = _HTTP_NAMES.get(exc.status_code, "HTTPError")
        return _error(exc.status_code, name, str(exc.detail))

    @app.exception_handler(StorageError)
    async def storage_error(_: Request, exc: StorageError) -> JSONResponse:
        log.error("storage failure: %s", exc)
        return _error(503, "StorageUnavailable",
                      f"object storage failed ({exc}); nothing was stored, retry later")


def _add_health(app: FastAPI) -> None:
    @app.get("/healthz", tags=["health"])
    def healthz() -> dict[str, str]:
        """The process is up."""
        return {"status": "ok"}

    @app.get("/readyz", tags=["health"])
    async def readyz() -> JSONResponse:
        """The database and the object store are reachable."""
        checks: dict[str, str] = {}
        try:
            await run_in_threadpool(_ping_database, app.state.engine)
            checks["database"] = "ok"
        except Exception as exc:  # any failure means not ready
            checks["database"] = f"error: {exc}"
        try:
            await run_in_threadpool(app.state.store.check)
            checks["storage"] = "ok"
        except Exception as exc:
            checks["storage"] = f"error: {exc}"
        ready = all(v == "ok" for v in checks.values())
        return JSONResponse({"status": "ok" if ready else "unavailable", "checks": checks},
                            status_code=200 if ready else 503)


def _ping_database(engine: Engine) -> None:
    with engine.connect() as conn:
        conn.execute(text("SELECT 1"))
