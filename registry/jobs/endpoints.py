"""HTTP for compression jobs: start one from a fine-tune, look at jobs, cancel one."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Body, Depends, Header, Path, Query, Response, status
from fastapi.responses import JSONResponse
from sqlalchemy.orm import Session

from registry.auth.tokens import Scope
from registry.infra.deps import DatabaseDep, Reader, RequireScope, SettingsDep, StoreDep
from registry.infra.schemas import PageOut
from registry.jobs import service
from registry.jobs.schemas import IDEMPOTENCY_KEY_PATTERN, CompressRequest, JobOut
from registry.jobs.views import job_views
from registry.names import MAX_ID
from registry.tables import JobStatus, Token

router = APIRouter(tags=["jobs"])
CompressToken = Annotated[Token, Depends(RequireScope(Scope.COMPRESS))]
JobId = Annotated[int, Path(ge=1, le=MAX_ID)]


def _view(session: Session, job_id: int) -> JobOut:
    return job_views(session, [service.get_job(session, job_id)])[0]


@router.post("/models/{model}/compress", status_code=status.HTTP_202_ACCEPTED,
             responses={200: {"model": JobOut}, 202: {"model": JobOut}})
async def compress_model(
    model: str, db: DatabaseDep, settings: SettingsDep, store: StoreDep,
    token: CompressToken,
    method: Annotated[Literal["bitdelta", "lora"], Query(description="the codec")],
    request: Annotated[CompressRequest | None, Body()] = None,
    idempotency_key: Annotated[str | None, Header(
        pattern=IDEMPOTENCY_KEY_PATTERN, min_length=1, max_length=128,
        description="1-128 printable ASCII characters, e.g. a UUID; this token's retry of "
                    "the same request with the same key returns the same job (200), the "
                    "same key with another request is refused (422)")] = None,
) -> JSONResponse:
    """Queue a compression of the fine-tune `model`: 202 with the job, or 200 when an
    `Idempotency-Key` retry finds the job it made before. 429 (`TooManyQueuedJobs`, with
    `Retry-After`) when the token already has its limit of jobs queued or running."""
    def enqueue(session: Session) -> tuple[JobOut, bool]:
        job, created = service.enqueue(
            session, settings, store, model, service.parse_method(method),
            request or CompressRequest(), token_id=token.id, idempotency_key=idempotency_key)
        return _view(session, job.id), created

    body, created = await db.write(enqueue)
    return JSONResponse(body.model_dump(mode="json"),
                        status_code=status.HTTP_202_ACCEPTED if created else status.HTTP_200_OK,
                        headers={"Location": f"/jobs/{body.id}"})


@router.get("/jobs/{job_id}", response_model=JobOut)
async def get_job(job_id: JobId, reader: Reader) -> Response:
    return await reader.json(lambda session: _view(session, job_id))


@router.get("/jobs", response_model=PageOut[JobOut])
async def list_jobs(
    settings: SettingsDep, reader: Reader,
    status: Literal["queued", "running", "succeeded", "failed", "cancelled"] | None = None,
    model: str | None = None, method: Literal["bitdelta", "lora"] | None = None,
    limit: Annotated[int | None, Query(description="page size (capped)")] = None,
    page_token: str | None = None,
) -> Response:
    """Newest first."""
    def page(session: Session) -> PageOut[JobOut]:
        found = service.list_jobs(
            session, settings, status=JobStatus(status) if status else None, model=model,
            method=service.parse_method(method) if method else None, limit=limit,
            page_token=page_token)
        return PageOut(items=job_views(session, found.items),
                       next_page_token=found.next_page_token)

    return await reader.json(page)


@router.post("/jobs/{job_id}/cancel")
async def cancel_job(job_id: JobId, db: DatabaseDep, _: CompressToken) -> JobOut:
    """A queued job is cancelled at once; a running one stops at its next progress point
    and leaves nothing behind."""
    def cancel(session: Session) -> JobOut:
        service.cancel_job(session, job_id)
        return _view(session, job_id)

    return await db.write(cancel)
