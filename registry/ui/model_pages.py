"""Pages of models: the base models, a base's lineage, a fine-tune and its compress form."""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from typing import Literal

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse
from sqlalchemy.orm import Session

from registry.jobs import quality_params
from registry.jobs import service as jobs
from registry.models.service import get_model
from registry.tables import AdapterKind, ModelKind
from registry.ui import views
from registry.ui.access import CompressAction, ViewerDep, read, write
from registry.ui.compress_form import compress_request
from registry.ui.render import PageError, page, redirect
from registry.ui.sessions import Viewer

router = APIRouter(prefix="/ui/models", include_in_schema=False)


@dataclass(frozen=True)
class FilledForm:
    """The compress form as the user sent it, and why it was refused (none: a new form)."""

    values: dict[str, str] = field(default_factory=dict)
    checked: list[str] = field(default_factory=list)
    error: PageError | None = None
    error_field: str | None = None  # the form field the error is about, if one


@router.get("")
async def base_models(request: Request, viewer: ViewerDep,
                      page_token: str | None = None) -> HTMLResponse:
    settings = request.app.state.settings
    rows, next_token = await read(
        request, lambda s: views.base_models(s, settings, page_token))
    return page(request, "models.html", viewer, rows=rows, next_page_token=next_token)


@router.get("/{ref}")
async def model(request: Request, ref: str, viewer: ViewerDep,
                kind: Literal["lora", "bitdelta", "peft", ""] = "", alias: str = "",
                page_token: str | None = None) -> HTMLResponse:
    """A base shows its lineage; a fine-tune its compress form and jobs."""
    settings = request.app.state.settings
    model_kind = await read(request, lambda s: get_model(s, ref).kind)
    if model_kind is ModelKind.FINETUNE:
        return await _finetune_page(request, viewer, ref)
    adapter_kind = AdapterKind(kind) if kind else None

    def gather(session: Session) -> views.Lineage:
        return views.lineage(session, settings, ref, adapter_kind, alias or None, page_token)

    lineage = await read(request, gather)
    return page(request, "lineage.html", viewer, lineage=lineage,
                filters={"kind": kind, "alias": alias})


async def _finetune_page(request: Request, viewer: Viewer, ref: str,
                         form: FilledForm | None = None, status: int = 200) -> HTMLResponse:
    """The fine-tune's page; after a refused form, with what was entered and why."""
    settings = request.app.state.settings

    def gather(session: Session) -> tuple[views.FinetuneView, bool]:
        view = views.finetune(session, settings, ref)
        return view, quality_params.has_tokenizer(session, get_model(session, ref))

    view, tokenizer = await read(request, gather)
    return page(request, "finetune.html", viewer, status, view=view, has_tokenizer=tokenizer,
                form=form or FilledForm(), idempotency_key=secrets.token_urlsafe(16),
                terminal=[s.value for s in jobs.TERMINAL])


@router.post("/{ref}/compress", response_model=None)
async def compress(request: Request, ref: str,
                   viewer: CompressAction) -> RedirectResponse | HTMLResponse:
    form = await request.form()
    fields = {k: v for k, v in form.items() if isinstance(v, str)}
    checked = [v for v in form.getlist("evaluate") if isinstance(v, str)]
    settings = request.app.state.settings
    key = fields.get("idempotency_key") or None
    try:
        method, body = compress_request(fields, checked, max_depth=settings.MAX_JSON_DEPTH)

        def enqueue(session: Session) -> int:
            job, _ = jobs.enqueue(session, settings, request.app.state.store, ref,
                                  jobs.parse_method(method), body,
                                  token_id=viewer.token_id, idempotency_key=key)
            return job.id

        job_id = await write(request, enqueue)
    except PageError as refused:
        if refused.status != 422 or not await _is_finetune(request, ref):
            raise
        filled = FilledForm(fields, checked, refused, getattr(refused, "field", None))
        return await _finetune_page(request, viewer, ref, filled, status=422)
    return redirect(f"/ui/jobs/{job_id}")


async def _is_finetune(request: Request, ref: str) -> bool:
    try:
        kind = await read(request, lambda s: get_model(s, ref).kind)
    except PageError:
        return False
    return kind is ModelKind.FINETUNE

