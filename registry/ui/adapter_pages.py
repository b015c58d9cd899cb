"""An adapter version's page, its quality pictures, and its actions (aliases, delete)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import APIRouter, Form, Path, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from compress.errors import CodecError
from compress.filenames import REPORT_FILE
from compress.tensorio import strictjson
from registry.adapters import service as adapters
from registry.adapters.schemas import AdapterOut
from registry.errors import PlotsBusy
from registry.names import MAX_ID
from registry.ui import plots, quality, readable
from registry.ui.access import AdminAction, PushAction, ViewerDep, read, write
from registry.ui.plot_cache import PlotCache
from registry.ui.render import PageError, json_document, page, redirect
from registry.ui.usage import snippets
from registry.ui.views import adapter_outs

router = APIRouter(prefix="/ui/adapters", include_in_schema=False)
AdapterId = Annotated[int, Path(ge=1, le=MAX_ID)]


@dataclass(frozen=True)
class QualitySource:
    """An adapter, and where its codec report is (None: none was pushed with it)."""

    adapter: AdapterOut
    report_sha256: str | None
    report_size: int


def _source(session: Session, adapter_id: int) -> QualitySource:
    found = adapters.adapter_by_id(session, adapter_id)
    out = adapter_outs(session, [found], summary=False)[0]
    report = next((f for f in out.files if f.filename == REPORT_FILE), None)
    return QualitySource(out, report.sha256 if report else None, report.size if report else 0)


async def _figures(request: Request, source: QualitySource) -> plots.Figures:
    """What the plots draw from: the quality and the pushed report, if readable."""
    report: object = None
    limit = request.app.state.settings.MAX_REPORT_BYTES
    if source.report_sha256 is not None and source.report_size <= limit:
        raw = await run_in_threadpool(request.app.state.store.read_bytes, source.report_sha256)
        try:
            report = strictjson.loads(raw, REPORT_FILE)
        except CodecError:
            report = None  # shown without pictures rather than not at all
    # A report stored before reports were checked may hold numbers no float holds.
    return plots.Figures.of(source.adapter.quality, strictjson.within_bounds(report))


@router.get("/{adapter_id}")
async def adapter_page(request: Request, adapter_id: AdapterId,
                       viewer: ViewerDep) -> HTMLResponse:
    source = await read(request, lambda s: _source(s, adapter_id))
    figures = await _figures(request, source)
    server = str(request.base_url).rstrip("/")
    found = source.adapter.quality
    job = quality.job_params(source.adapter.kind, source.adapter.params)
    return page(request, "adapter.html", viewer, adapter=source.adapter,
                settings=readable.adapter_settings(source.adapter.params),
                job_id=source.adapter.params.get("job"),
                job_settings=readable.job_settings(job) if job else [],
                figures=readable.figures(found), made_with=readable.made_with(found),
                plots=plots.available(figures), snippets=snippets(source.adapter, server),
                quality=found, evaluation=quality.evaluation(found),
                distillation=quality.distillation(found, source.adapter.kind,
                                                  source.adapter.params),
                gain_kept_meaning=quality.GAIN_KEPT_MEANING,
                evaluation_bound=quality.evaluation_bound(found))


@router.get("/{adapter_id}/adapter.json")
async def adapter_json(request: Request, adapter_id: AdapterId,
                       viewer: ViewerDep) -> JSONResponse:
    """The adapter as `GET /adapters/{id}` answers, for the page's "JSON" link (the API
    takes a token, a page's link has the session)."""
    source = await read(request, lambda s: _source(s, adapter_id))
    return json_document(source.adapter.model_dump(mode="json"))


@router.get("/{adapter_id}/plots/{kind}.svg")
async def plot(request: Request, adapter_id: AdapterId, kind: str,
               viewer: ViewerDep) -> Response:
    if kind not in plots.PLOTS:
        raise PageError(404, "NotFound", f"no plot {kind!r}; plots: {', '.join(plots.PLOTS)}")
    source = await read(request, lambda s: _source(s, adapter_id))
    key = plots.content_key(source.adapter.quality, source.report_sha256, kind)
    headers = {"ETag": f'"{key}"', "Cache-Control": "private, max-age=86400",
               "X-Content-Type-Options": "nosniff"}
    if request.headers.get("if-none-match") == f'"{key}"':
        return Response(status_code=304, headers=headers)
    cache: PlotCache = request.app.state.plot_cache

    async def draw() -> bytes:
        figures = await _figures(request, source)
        if kind not in dict(plots.available(figures)):
            raise PageError(404, "NotFound", f"this adapter's report has no data for {kind!r}")
        return await run_in_threadpool(cache.bounded,
                                       lambda: plots.render_svg(kind, figures))

    try:
        svg = await cache.picture(key, draw)
    except PlotsBusy as exc:
        raise PageError.of(exc) from exc
    # Opened on its own, the picture runs nothing and loads nothing (it holds neither).
    headers["Content-Security-Policy"] = "default-src 'none'; style-src 'unsafe-inline'"
    return Response(svg, media_type=plots.MEDIA_TYPE, headers=headers)


@router.post("/{adapter_id}/aliases")
async def move_alias(request: Request, adapter_id: AdapterId, viewer: PushAction,
                     alias: Annotated[str, Form()]) -> RedirectResponse:
    """Point `alias` of this adapter's name at this version (moving it if it exists)."""
    await write(request, lambda s: adapters.set_alias(s, adapters.adapter_by_id(s, adapter_id),
                                                      alias.strip()))
    return redirect(f"/ui/adapters/{adapter_id}")


@router.post("/{adapter_id}/delete")
async def delete(request: Request, adapter_id: AdapterId,
                 viewer: AdminAction) -> RedirectResponse:
    def remove(session: Session) -> str:
        base = _source(session, adapter_id).adapter.base
        adapters.delete_adapter(session, adapter_id, viewer.scopes)
        return base

    base = await write(request, remove)
    return redirect(f"/ui/models/{base}")
