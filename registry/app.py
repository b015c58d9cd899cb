"""The FastAPI application: routers, error rendering, health checks."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from fastapi import FastAPI
from prometheus_client import Gauge

from registry.adapters.endpoints import router as adapters_router
from registry.auth.endpoints import router as tokens_router
from registry.datasets.endpoints import router as datasets_router
from registry.events.endpoints import router as events_router
from registry.events.feed import EventFeed
from registry.infra.bodylimit import BodyLimitMiddleware
from registry.infra.conditional import AnswerCache
from registry.infra.control_chars import PathNameMiddleware
from registry.infra.database import Database
from registry.infra.error_handlers import add_error_handlers
from registry.infra.health import add_health
from registry.infra.metrics import install_metrics
from registry.infra.openapi import install_openapi
from registry.jobs.embedded import embedded_workers as _embedded_workers
from registry.jobs.endpoints import router as jobs_router
from registry.models.endpoints import router as models_router
from registry.settings import Settings, get_settings
from registry.storage.base import BlobStore
from registry.storage.factory import make_blob_store
from registry.ui import install_ui
from registry.webhooks.endpoints import router as webhooks_router
from registry.webhooks.metrics import WebhooksCollector


def create_app(settings: Settings | None = None, store: BlobStore | None = None,
               database: Database | None = None) -> FastAPI:
    settings = settings or get_settings()
    app = FastAPI(
        title="deltahub",
        summary="Adapter registry and delta compression for fine-tuned LLMs.",
        version="0.1.0",
        lifespan=_lifespan,
    )
    app.state.settings = settings
    app.state.database = database or Database.from_settings(settings)
    app.state.store = store or make_blob_store(settings)
    app.state.event_feed = EventFeed(app.state.database, settings.EVENTS_POLL_SECONDS)
    app.state.answers = AnswerCache(settings.ANSWER_CACHE_BYTES)
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.MAX_REQUEST_BYTES)
    app.add_middleware(PathNameMiddleware)  # before routing: see registry/infra/control_chars.py
    for router in (models_router, adapters_router, jobs_router, tokens_router,
                   datasets_router, events_router, webhooks_router):
        app.include_router(router)
    add_error_handlers(app, settings)
    add_health(app)
    metrics = install_metrics(app, settings, app.state.database)  # outermost: sees all
    feed: EventFeed = app.state.event_feed
    Gauge("deltahub_event_followers", "Long-polls of GET /events waiting right now",
          registry=metrics.registry).set_function(lambda: feed.waiting)
    metrics.registry.register(WebhooksCollector(app.state.database))
    install_ui(app)
    install_openapi(app, settings)
    return app


@contextlib.asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    feed: EventFeed = app.state.event_feed
    feed.open()
    try:
        async with _embedded_workers(app):
            yield
    finally:
        feed.close()  # long-polls answer now rather than hold the shutdown up
