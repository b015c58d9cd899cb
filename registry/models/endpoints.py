"""HTTP for models: translate requests to service calls and results to responses.

Each handler hands one function to `db.read` / `db.write`: the whole transaction runs
in one worker thread and commits there, before the response is sent.
"""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request, Response, status
from fastapi.responses import JSONResponse, StreamingResponse
from sqlalchemy.orm import Session

from registry.infra.deps import DatabaseDep, PushToken, Reader, SettingsDep, StoreDep
from registry.infra.downloads import StoredFile, file_response, find_file
from registry.infra.schemas import FileOut, PageOut, created_or_existing
from registry.models import service
from registry.models.schemas import FinalizeRequest, ModelCreate, ModelOut
from registry.models.views import model_out, model_outs
from registry.tables import ModelKind
from registry.uploads.flow import SHA256_HEADER, store_request

router = APIRouter(prefix="/models", tags=["models"])


@router.post("", status_code=status.HTTP_201_CREATED,
             responses={200: {"model": ModelOut}, 201: {"model": ModelOut}})
async def create_model(body: ModelCreate, db: DatabaseDep, settings: SettingsDep,
                       token: PushToken) -> JSONResponse:
    """Start a push: 201 with a new draft, or 200 with this token's own pending draft of
    the name (its `files` already uploaded), resumed. Then upload files and finalize."""
    def create(session: Session) -> tuple[ModelOut, bool]:
        model, created = service.start_push(session, settings, body.name,
                                            ModelKind(body.kind), body.base, token.id,
                                            body.files, body.quantized_from)
        return model_out(session, service.model_by_id(session, model.id)), created

    out, created = await db.write(create)
    return created_or_existing(out, created)


@router.get("", response_model=PageOut[ModelOut])
async def list_models(
    settings: SettingsDep, reader: Reader,
    kind: Literal["base", "finetune"] | None = None, base: str | None = None,
    limit: Annotated[int | None, Query(description="page size (capped)")] = None,
    page_token: str | None = None,
) -> Response:
    def page(session: Session) -> PageOut[ModelOut]:
        found = service.list_models(session, settings, ModelKind(kind) if kind else None,
                                    base, limit, page_token)
        return PageOut(items=model_outs(session, found.items),
                       next_page_token=found.next_page_token)

    return await reader.json(page)


@router.get("/{model}", response_model=ModelOut)
async def get_model(model: str, reader: Reader) -> Response:
    return await reader.json(
        lambda session: model_out(session, service.get_model(session, model)))


@router.put("/{model}/files/{filename:path}", status_code=status.HTTP_201_CREATED,
            responses={200: {"model": FileOut}, 201: {"model": FileOut}})
async def upload_model_file(model: str, filename: str, request: Request, store: StoreDep,
                            db: DatabaseDep, settings: SettingsDep,
                            token: PushToken) -> JSONResponse:
    """A file of a draft; a finalized model takes only a tokenizer file it lacks."""
    target = await db.write(  # a write: it touches the draft
        lambda session: service.upload_target(session, model, filename, settings,
                                              request.headers.get(SHA256_HEADER)))
    result = await store_request(request, store, db, target, token_id=token.id,
                                 idle_timeout_s=settings.UPLOAD_IDLE_TIMEOUT_SECONDS)
    # 200: another run of this push finalized the draft with these bytes already.
    return created_or_existing(FileOut(filename=filename, sha256=result.sha256,
                                       size=result.size), result.new)


@router.post("/{model}/finalize")
async def finalize_model(model: str, db: DatabaseDep, store: StoreDep, _: PushToken,
                         body: FinalizeRequest | None = None) -> ModelOut:
    expected = body.files if body is not None else None
    return await db.write(lambda session: model_out(
        session, service.finalize_model(session, store, model, expected)))


@router.delete("/{model}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_model(model: str, db: DatabaseDep, token: PushToken) -> Response:
    """A pending draft: any token with `push`. A finalized model: `admin`."""
    await db.write(lambda session: service.delete_model(session, model, token.scopes))
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/{model}/files/{filename:path}")
async def download_model_file(model: str, filename: str, store: StoreDep,
                              reader: Reader) -> StreamingResponse:
    def locate(session: Session) -> StoredFile:
        found = service.get_model(session, model)
        return find_file(found.files, filename, f"model {found.name!r}")

    return await file_response(store, await reader.read(locate))
