"""HTTP for adapters: push (create, upload files, finalize), list, get, pull, alias, delete.

Each handler hands one function to `db.read` / `db.write`: the whole transaction runs
in one worker thread and commits there, before the response is sent.
"""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request, Response, status
from fastapi.responses import JSONResponse, StreamingResponse
from sqlalchemy.orm import Session

from registry.adapters import service
from registry.adapters.schemas import AdapterCreate, AdapterOut
from registry.adapters.views import adapter_out, row_outs
from registry.infra.deps import DatabaseDep, PushToken, Reader, SettingsDep, StoreDep
from registry.infra.downloads import StoredFile, file_response, find_file
from registry.infra.schemas import FileOut, PageOut, created_or_existing
from registry.models import quantized
from registry.models.schemas import FinalizeRequest
from registry.models.service import model_id
from registry.names import check_name
from registry.tables import AdapterKind, Status
from registry.uploads.flow import store_request

router = APIRouter(prefix="/adapters", tags=["adapters"])


@router.post("", status_code=status.HTTP_201_CREATED,
             responses={200: {"model": AdapterOut}, 201: {"model": AdapterOut}})
async def create_adapter(body: AdapterCreate, db: DatabaseDep, settings: SettingsDep,
                         token: PushToken) -> JSONResponse:
    """Start a push: 201 with a new draft, or 200 with this token's own pending draft
    started for the same declared `files` (with the files already uploaded), resumed.
    Then upload files to `/adapters/{id}/files/...` and finalize."""
    def create(session: Session) -> tuple[AdapterOut, bool]:
        adapter, created = service.start_push(session, settings, body.name, body.base,
                                              AdapterKind(body.kind), body.source, token.id,
                                              body.files)
        return adapter_out(session, service.adapter_by_id(session, adapter.id)), created

    out, created = await db.write(create)
    return created_or_existing(out, created)


@router.get("", response_model=PageOut[AdapterOut])
async def list_adapters(
    settings: SettingsDep, reader: Reader,
    base: str | None = None, kind: Literal["lora", "bitdelta", "peft"] | None = None,
    peft_type: Annotated[str | None, Query(
        max_length=64, description="adapter_config.json's peft_type (LORA, IA3, ...)")] = None,
    name: str | None = None, alias: str | None = None,
    limit: Annotated[int | None, Query(description="page size (capped)")] = None,
    page_token: str | None = None,
    sort: Annotated[Literal["newest", "gain_kept"], Query(
        description="newest first (default), or by gain kept (quality.gain_kept, measured "
                    "by a job's evaluate step on its first data set, and only where the "
                    "fine-tune improved that set), highest first, unmeasured last")] = "newest",
    compatible: Annotated[bool, Query(
        description="with `base`: also the adapters registered against the base it was "
                    "quantized from, or against its 4-bit bases (each item's "
                    "`compatible_via` says which)")] = False,
) -> Response:
    """Each item's `quality` is a summary; the adapter's own route has it all.

    The `ETag` changes with every registry change that writes an event; send it back as
    `If-None-Match` to get a 304 for the cost of the token check."""
    def page(session: Session) -> PageOut[AdapterOut]:
        found = service.list_adapters(session, settings, base=base,
                                      kind=AdapterKind(kind) if kind else None, name=name,
                                      alias=alias, limit=limit, page_token=page_token,
                                      sort=sort, compatible=compatible,
                                      peft_type=peft_type)
        relations = (quantized.family(session, model_id(session, base))
                     if compatible and base is not None else None)
        return PageOut(items=row_outs(found.items, summary=True, relations=relations),
                       next_page_token=found.next_page_token)

    return await reader.json_of_changes(page)


@router.get("/{ref}", response_model=AdapterOut)
async def get_adapter(ref: str, reader: Reader) -> Response:
    """The `ETag` of a finalized version changes with every registry change that writes
    an event (as a listing's); a draft's with its content."""
    return await reader.json_of_changes(
        lambda session: row_outs([service.get_adapter_row(session, ref)])[0],
        keyed=lambda out: out.status == Status.READY)


@router.put("/{ref}/files/{filename:path}", status_code=status.HTTP_201_CREATED)
async def upload_adapter_file(ref: str, filename: str, request: Request, store: StoreDep,
                              db: DatabaseDep, settings: SettingsDep,
                              token: PushToken) -> FileOut:
    target = await db.write(  # a write: it touches the draft
        lambda session: service.upload_target(session, ref, filename, settings))
    result = await store_request(request, store, db, target, token_id=token.id,
                                 idle_timeout_s=settings.UPLOAD_IDLE_TIMEOUT_SECONDS)
    return FileOut(filename=filename, sha256=result.sha256, size=result.size)


@router.post("/{ref}/finalize", responses={200: {"model": AdapterOut}, 201: {"model": AdapterOut}})
async def finalize_adapter(ref: str, db: DatabaseDep, store: StoreDep, settings: SettingsDep,
                           _: PushToken, body: FinalizeRequest | None = None) -> JSONResponse:
    """201 with a new version, or 200 with the existing version of identical content."""
    expected = body.files if body is not None else None

    def finalize(session: Session) -> tuple[AdapterOut, bool]:
        draft = service.get_adapter(session, ref)
        adapter, created = service.finalize_adapter(session, store, settings, draft.id,
                                                    expected)
        return adapter_out(session, adapter), created

    out, created = await db.write(finalize)
    return created_or_existing(out, created)


@router.get("/{ref}/files/{filename:path}")
async def download_adapter_file(ref: str, filename: str, store: StoreDep,
                                reader: Reader) -> StreamingResponse:
    def locate(session: Session) -> StoredFile:
        adapter = service.get_adapter(session, ref)
        return find_file(adapter.files, filename, f"adapter {adapter.name}@{adapter.version}")

    return await file_response(store, await reader.read(locate))


@router.put("/{ref}/aliases/{alias}")
async def set_alias(ref: str, alias: str, db: DatabaseDep, _: PushToken) -> AdapterOut:
    check_name(alias, "alias")  # the request's own mistake first, before any lookup
    return await db.write(
        lambda session: adapter_out(session, service.set_alias(
            session, service.get_adapter(session, ref), alias)))


@router.delete("/{ref}/aliases/{alias}", status_code=status.HTTP_204_NO_CONTENT)
async def remove_alias(ref: str, alias: str, db: DatabaseDep, _: PushToken) -> Response:
    """Remove an alias of the adapter name `ref` names (`latest` cannot be removed)."""
    await db.write(lambda session: service.remove_alias(session, ref, alias))
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.delete("/{ref}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_adapter(ref: str, db: DatabaseDep, token: PushToken) -> Response:
    """A finalized version: `admin`. A pending draft (by its id): any token with `push`."""
    await db.write(lambda session: service.delete_adapter(
        session, service.get_adapter(session, ref).id, token.scopes))
    return Response(status_code=status.HTTP_204_NO_CONTENT)
