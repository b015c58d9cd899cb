"""The FastAPI application: routers, error rendering, health checks."""

from __future__ import annotations

from fastapi import FastAPI

from registry.adapters.endpoints import router as adapters_router
from registry.auth.endpoints import router as tokens_router
from registry.bodylimit import BodyLimitMiddleware
from registry.database import Database
from registry.datasets.endpoints import router as datasets_router
from registry.handlers import add_error_handlers
from registry.health import add_health
from registry.jobs.embedded import embedded_workers as _embedded_workers
from registry.jobs.endpoints import router as jobs_router
from registry.metrics import install_metrics
from registry.models.endpoints import router as models_router
from registry.openapi import install_openapi
from registry.paths import PathNameMiddleware
from registry.settings import Settings, get_settings
from registry.storage.base import BlobStore
from registry.storage.factory import make_blob_store
from registry.ui import install_ui


def create_app(settings: Settings | None = None, store: BlobStore | None = None,
               database: Database | None = None) -> FastAPI:
    settings = settings or get_settings()
    app = FastAPI(
        title="deltahub",
        summary="Adapter registry and delta compression for fine-tuned LLMs.",
        version="0.1.0",
        lifespan=_embedded_workers,
    )
    app.state.settings = settings
    app.state.database = database or Database.from_settings(settings)
    app.state.store = store or make_blob_store(settings)
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.MAX_REQUEST_BYTES)
    app.add_middleware(PathNameMiddleware)  # before routing: see registry/paths.py
    for router in (models_router, adapters_router, jobs_router, tokens_router,
                   datasets_router):
        app.include_router(router)
    add_error_handlers(app, settings)
    add_health(app)
    install_metrics(app, settings, app.state.database)  # outermost: sees every answer
    install_ui(app)
    install_openapi(app, settings)
    return app
