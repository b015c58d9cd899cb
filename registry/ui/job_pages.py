"""Compression jobs: the list, one job, the progress the page polls, and cancel."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse
from sqlalchemy.orm import Session

from registry.errors import InvalidRequest, Unprocessable
from registry.jobs import service as jobs
from registry.jobs.schemas import JobOut
from registry.jobs.views import job_views
from registry.names import MAX_ID
from registry.tables import JobStatus
from registry.ui import readable, views
from registry.ui.access import CompressAction, ScriptViewerDep, ViewerDep, read, write
from registry.ui.render import json_document, page, redirect, when

router = APIRouter(prefix="/ui/jobs", include_in_schema=False)
JobId = Annotated[int, Path(ge=1, le=MAX_ID)]
MAX_POLLED = 100  # jobs one progress poll may ask about
_JOB_ID = re.compile(r"[0-9]{1,19}")  # ASCII digits only: str.isdigit takes "²" too


def _when(moment: datetime | None) -> str | None:
    return None if moment is None else when(moment)  # as the page prints it


def progress_of(job: JobOut) -> dict[str, Any]:
    """What the page's script updates: status, bar, stage, message, error, result, and
    the job page's attempt, start and end."""
    adapter = job.adapter
    return {"id": job.id, "status": job.status, "fraction": job.progress.fraction,
            "stage": job.progress.stage, "message": job.progress.message,
            "cancel_requested": job.cancel_requested,
            "error": job.error.model_dump() if job.error else None,
            "adapter": adapter.id if adapter else None,
            "finished": JobStatus(job.status) in jobs.TERMINAL,
            "attempt": job.attempt, "max_attempts": job.max_attempts,
            "started_at": _when(job.started_at), "finished_at": _when(job.finished_at),
            "adapter_label": f"{adapter.name}@{adapter.version}" if adapter else None}


def polled_ids(ids: str) -> list[int]:
    """`ids`: comma-separated job ids (1 to MAX_ID), at most MAX_POLLED of them."""
    parts = [part.strip() for part in ids.split(",")] if ids.strip() else []
    if len(parts) > MAX_POLLED:
        raise Unprocessable(f"poll at most {MAX_POLLED} jobs at once", name="TooManyJobs")
    if not all(_JOB_ID.fullmatch(part) and 0 < int(part) <= MAX_ID for part in parts):
        raise InvalidRequest(f"ids must be job ids (1 to {MAX_ID}) separated by commas, "
                             "e.g. ids=12,13")
    return [int(part) for part in parts]


@router.get("/progress")
async def progress(request: Request, viewer: ScriptViewerDep,
                   ids: Annotated[str, Query(max_length=2000)] = "") -> JSONResponse:
    """The polled jobs' progress, as JSON for the page's script (cookie session).

    Every error here is JSON too (`{"error", "detail"}`): 401 for a dead session, 422
    for bad ids. Read straight from the database, not through `read`, which makes pages.
    """
    wanted = polled_ids(ids)
    found = await request.app.state.database.read(lambda s: views.job_views(s, wanted))
    return JSONResponse({"jobs": [progress_of(j) for j in found]},
                        headers={"Cache-Control": "no-store",
                                 "X-Content-Type-Options": "nosniff"})


@router.get("")
async def job_list(request: Request, viewer: ViewerDep,
                   status: Literal["queued", "running", "succeeded", "failed", "cancelled",
                                   ""] = "",
                   page_token: str | None = None) -> HTMLResponse:
    settings = request.app.state.settings
    wanted = JobStatus(status) if status else None

    def gather(session: Session) -> tuple[list[JobOut], str | None]:
        return views.job_page(session, settings, wanted, page_token)

    found, next_token = await read(request, gather)
    return page(request, "jobs.html", viewer, jobs=found, next_page_token=next_token,
                filters={"status": status}, terminal=[s.value for s in jobs.TERMINAL])


@router.get("/{job_id}")
async def job_detail(request: Request, job_id: JobId, viewer: ViewerDep) -> HTMLResponse:
    found = await read(request, lambda s: job_views(s, [jobs.get_job(s, job_id)]))
    return page(request, "job.html", viewer, job=found[0],
                settings=readable.job_settings(found[0].params),
                terminal=[s.value for s in jobs.TERMINAL])


@router.get("/{job_id}/job.json")
async def job_json(request: Request, job_id: JobId, viewer: ViewerDep) -> JSONResponse:
    """The job as `GET /jobs/{id}` answers, for the page's "JSON" link."""
    found = await read(request, lambda s: job_views(s, [jobs.get_job(s, job_id)]))
    return json_document(found[0].model_dump(mode="json"))


@router.post("/{job_id}/cancel")
async def cancel(request: Request, job_id: JobId, viewer: CompressAction) -> RedirectResponse:
    await write(request, lambda s: jobs.cancel_job(s, job_id))
    return redirect(f"/ui/jobs/{job_id}")


