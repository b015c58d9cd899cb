"""Pages of models: the base models, a base's lineage, a fine-tune and its compress form."""

from __future__ import annotations

import secrets
from typing import Literal

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse
from sqlalchemy.orm import Session

from registry.jobs import service as jobs
from registry.models.service import get_model
from registry.tables import AdapterKind, ModelKind
from registry.ui import views
from registry.ui.access import CompressAction, ViewerDep, read, write
from registry.ui.compress_form import compress_request
from registry.ui.render import page, redirect

router = APIRouter(prefix="/ui/models", include_in_schema=False)


@router.get("")
async def base_models(request: Request, viewer: ViewerDep,
                      page_token: str | None = None) -> HTMLResponse:
    settings = request.app.state.settings
    rows, next_token = await read(
        request, lambda s: views.base_models(s, settings, page_token))
    return page(request, "models.html", viewer, rows=rows, next_page_token=next_token)


@router.get("/{ref}")
async def model(request: Request, ref: str, viewer: ViewerDep,
                kind: Literal["lora", "bitdelta", ""] = "", alias: str = "",
                page_token: str | None = None) -> HTMLResponse:
    """A base shows its lineage; a fine-tune its compress form and jobs."""
    settings = request.app.state.settings
    model_kind = await read(request, lambda s: get_model(s, ref).kind)
    if model_kind is ModelKind.FINETUNE:
        view = await read(request, lambda s: views.finetune(s, settings, ref))
        return page(request, "finetune.html", viewer, view=view,
                    idempotency_key=secrets.token_urlsafe(16),
                    terminal=[s.value for s in jobs.TERMINAL])
    adapter_kind = AdapterKind(kind) if kind else None

    def gather(session: Session) -> views.Lineage:
        return views.lineage(session, settings, ref, adapter_kind, alias or None, page_token)

    lineage = await read(request, gather)
    return page(request, "lineage.html", viewer, lineage=lineage,
                filters={"kind": kind, "alias": alias})


@router.post("/{ref}/compress")
async def compress(request: Request, ref: str, viewer: CompressAction) -> RedirectResponse:
    form = await request.form()
    fields = {k: v for k, v in form.items() if isinstance(v, str)}
    checked = [v for v in form.getlist("evaluate") if isinstance(v, str)]
    settings = request.app.state.settings
    method, body = compress_request(fields, checked, max_depth=settings.MAX_JSON_DEPTH)
    key = fields.get("idempotency_key") or None

    def enqueue(session: Session) -> int:
        job, _ = jobs.enqueue(session, settings, request.app.state.store, ref,
                              jobs.parse_method(method), body,
                              token_id=viewer.token_id, idempotency_key=key)
        return job.id

    job_id = await write(request, enqueue)
    return redirect(f"/ui/jobs/{job_id}")
