"""HTTP for adapters: push (create, upload files, finalize), list, get, pull, alias, delete."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request, Response, status
from fastapi.responses import JSONResponse, StreamingResponse
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from registry.adapters import service
from registry.adapters.schemas import AdapterCreate, AdapterOut
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
from registry.models.repository import ModelRepository
from registry.names import check_filename
from registry.schemas import FileOut, PageOut
from registry.tables import Adapter, AdapterFile, AdapterKind
from registry.uploads.flow import store_upload
from registry.uploads.pipeline import UploadResult
from registry.uploads.records import record_file
from registry.uploads.rules import adapter_file_rule

router = APIRouter(prefix="/adapters", tags=["adapters"])


def _outs(session: Session, adapters: list[Adapter]) -> list[AdapterOut]:
    ids = {a.base_id for a in adapters} | {a.source_model_id for a in adapters
                                           if a.source_model_id}
    names = ModelRepository(session).names_of(ids)
    return [AdapterOut.of(a, names) for a in adapters]


@router.post("", status_code=status.HTTP_201_CREATED)
def create_adapter(body: AdapterCreate, session: SessionDep, _: PushToken) -> AdapterOut:
    """Start a push: then upload files to `/adapters/{id}/files/...` and finalize."""
    adapter = service.create_adapter(session, body.name, body.base, AdapterKind(body.kind),
                                     body.source_model)
    return _outs(session, [service.get_adapter(session, str(adapter.id))])[0]


@router.get("")
def list_adapters(
    session: SessionDep, settings: SettingsDep, _: ReadToken,
    base: str | None = None, kind: Literal["lora", "bitdelta"] | None = None,
    name: str | None = None, alias: str | None = None,
    limit: Annotated[int | None, Query(description="page size (capped)")] = None,
    page_token: str | None = None,
) -> PageOut[AdapterOut]:
    page = service.list_adapters(session, settings, base=base,
                                 kind=AdapterKind(kind) if kind else None, name=name,
                                 alias=alias, limit=limit, page_token=page_token)
    return PageOut(items=_outs(session, page.items), next_page_token=page.next_page_token)


@router.get("/{ref}")
def get_adapter(ref: str, session: SessionDep, _: ReadToken) -> AdapterOut:
    return _outs(session, [service.get_adapter(session, ref)])[0]


@router.put("/{ref}/files/{filename:path}", status_code=status.HTTP_201_CREATED)
async def upload_adapter_file(ref: str, filename: str, request: Request, store: StoreDep,
                              factory: SessionFactoryDep, settings: SettingsDep,
                              _: PushToken) -> FileOut:
    check_filename(filename)

    def check_pending() -> tuple[int, AdapterKind]:
        with unit_of_work(factory) as session:
            adapter = service.pending_adapter(session, ref)
            return adapter.id, adapter.kind

    adapter_id, kind = await run_in_threadpool(check_pending)
    rule = adapter_file_rule(kind, filename, settings)

    def record(session: Session, result: UploadResult) -> AdapterFile:
        service.pending_adapter(session, str(adapter_id))  # still pending, under a row lock
        return record_file(session, AdapterFile, "adapter_id", adapter_id, filename, result)

    result = await store_upload(request, store, factory, filename, rule, record)
    return FileOut(filename=filename, sha256=result.sha256, size=result.size)


@router.post("/{ref}/finalize", responses={200: {"model": AdapterOut}, 201: {"model": AdapterOut}})
def finalize_adapter(ref: str, session: SessionDep, store: StoreDep,
                     _: PushToken) -> JSONResponse:
    """201 with a new version, or 200 with the existing version of identical content."""
    adapter, created = service.finalize_adapter(session, store, ref)
    body = _outs(session, [adapter])[0]
    return JSONResponse(body.model_dump(mode="json"),
                        status_code=status.HTTP_201_CREATED if created else status.HTTP_200_OK)


@router.get("/{ref}/files/{filename:path}")
def download_adapter_file(ref: str, filename: str, session: SessionDep, store: StoreDep,
                          _: ReadToken) -> StreamingResponse:
    adapter = service.get_adapter(session, ref)
    return file_response(store, adapter.files, filename,
                         f"adapter {adapter.name}@{adapter.version}")


@router.put("/{ref}/aliases/{alias}")
def set_alias(ref: str, alias: str, session: SessionDep, _: PushToken) -> AdapterOut:
    return _outs(session, [service.set_alias(session, ref, alias)])[0]


@router.delete("/{ref}", status_code=status.HTTP_204_NO_CONTENT)
def delete_adapter(ref: str, session: SessionDep, _: AdminToken) -> Response:
    service.delete_adapter(session, ref)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
