"""Web pages of the registry, served by the API's own app under `/ui`.

Server-rendered (Jinja2); two small scripts: jobs.js polls job progress, compress.js
shows the compress form's fieldsets for the chosen method. Page handlers call the
same services as the API (no SQL here), in the same `db.read` / `db.write` turns.
docs/architecture.md, "Web pages", describes sessions, CSRF and the plot cache.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import quote

from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles

from registry.ui.adapter_pages import router as adapter_router
from registry.ui.auth_pages import router as auth_router
from registry.ui.dataset_pages import router as dataset_router
from registry.ui.job_pages import router as job_router
from registry.ui.model_pages import router as model_router
from registry.ui.plot_cache import PlotCache
from registry.ui.render import STATIC_DIR, PageError, SignInRequired, error_page, redirect
from registry.ui.sessions import SessionKeys
from registry.ui.webhook_pages import router as webhook_router


def install_ui(app: FastAPI) -> None:
    app.state.ui_keys = SessionKeys(app.state.settings)
    settings = app.state.settings
    app.state.plot_cache = PlotCache(
        renders=settings.MAX_PLOT_RENDERS, retry_after_seconds=settings.RETRY_AFTER_SECONDS,
        folder=Path(settings.WORK_DIR) / "plots" if settings.PLOT_CACHE_ON_DISK else None)
    app.mount("/ui/static", StaticFiles(directory=STATIC_DIR), name="ui-static")
    for router in (auth_router, model_router, adapter_router, job_router, dataset_router,
                   webhook_router):
        app.include_router(router)

    @app.get("/", include_in_schema=False)
    async def home() -> RedirectResponse:
        return redirect("/ui")

    @app.get("/favicon.ico", include_in_schema=False)
    async def favicon() -> FileResponse:
        # Browsers ask for it whatever the page links; an SVG answers them all.
        return FileResponse(STATIC_DIR / "favicon.svg", media_type="image/svg+xml",
                            headers={"Cache-Control": "public, max-age=86400"})

    @app.exception_handler(PageError)
    async def page_error(request: Request, exc: PageError) -> HTMLResponse:
        return error_page(request, exc, getattr(request.state, "viewer", None))

    @app.exception_handler(SignInRequired)
    async def sign_in(request: Request, _: SignInRequired) -> RedirectResponse:
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        return redirect(f"/ui/signin?next={quote(target, safe='')}")
