"""HTTP for models: translate requests to service calls and results to responses."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request, Response, status
from fastapi.responses import StreamingResponse
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from registry.db import unit_of_work
from registry.deps import (
    AdminToken,
    PushToken,
    ReadToken,
    SessionDep,
    SessionFactoryDep,
    SettingsDep,
    StoreDep,
)
from registry.downloads import file_response
from registry.models import service
from registry.models.repository import ModelRepository
from registry.models.schemas import ModelCreate, ModelOut
from registry.schemas import FileOut, PageOut
from registry.tables import Model, ModelFile, ModelKind
from registry.uploads.flow import store_upload
from registry.uploads.pipeline import UploadResult
from registry.uploads.records import record_file
from registry.uploads.rules import model_file_rule

router = APIRouter(prefix="/models", tags=["models"])


def _out(session: Session, model: Model) -> ModelOut:
    return ModelOut.of(model, ModelRepository(session).name_of(model.base_id))


@router.post("", status_code=status.HTTP_201_CREATED)
def create_model(body: ModelCreate, session: SessionDep, _: PushToken) -> ModelOut:
    model = service.create_model(session, body.name, ModelKind(body.kind), body.base)
    return _out(session, service.get_model(session, str(model.id)))


@router.get("")
def list_models(
    session: SessionDep, settings: SettingsDep, _: ReadToken,
    kind: Literal["base", "finetune"] | None = None, base: str | None = None,
    limit: Annotated[int | None, Query(description="page size (capped)")] = None,
    page_token: str | None = None,
) -> PageOut[ModelOut]:
    page = service.list_models(session, settings, ModelKind(kind) if kind else None, base,
                               limit, page_token)
    names = ModelRepository(session).names_of({m.base_id for m in page.items if m.base_id})
    items = [ModelOut.of(m, names.get(m.base_id) if m.base_id else None) for m in page.items]
    return PageOut(items=items, next_page_token=page.next_page_token)


@router.get("/{model}")
def get_model(model: str, session: SessionDep, _: ReadToken) -> ModelOut:
    return _out(session, service.get_model(session, model))


@router.put("/{model}/files/{filename:path}", status_code=status.HTTP_201_CREATED)
async def upload_model_file(model: str, filename: str, request: Request, store: StoreDep,
                            factory: SessionFactoryDep, settings: SettingsDep,
                            _: PushToken) -> FileOut:
    rule = model_file_rule(filename, settings)

    def check_pending() -> int:
        with unit_of_work(factory) as session:
            return service.pending_model(session, model).id

    model_id = await run_in_threadpool(check_pending)

    def record(session: Session, result: UploadResult) -> ModelFile:
        service.pending_model(session, str(model_id))  # still pending, under a row lock
        return record_file(session, ModelFile, "model_id", model_id, filename, result)

    result = await store_upload(request, store, factory, filename, rule, record)
    return FileOut(filename=filename, sha256=result.sha256, size=result.size)


@router.post("/{model}/finalize")
def finalize_model(model: str, session: SessionDep, store: StoreDep, _: PushToken) -> ModelOut:
    return _out(session, service.finalize_model(session, store, model))


@router.delete("/{model}", status_code=status.HTTP_204_NO_CONTENT)
def delete_model(model: str, session: SessionDep, _: AdminToken) -> Response:
    service.delete_model(session, model)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/{model}/files/{filename:path}")
def download_model_file(model: str, filename: str, session: SessionDep, store: StoreDep,
                        _: ReadToken) -> StreamingResponse:
    found = service.get_model(session, model)
    return file_response(store, found.files, filename, f"model {found.name!r}")
