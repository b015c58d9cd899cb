"""HTTP for data sets: translate requests to service calls and results to responses.

As for models, each handler hands one function to `db.read` / `db.write`, so a whole
transaction runs (and commits) in one worker thread before the response is sent.
"""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request, Response, status
from fastapi.responses import JSONResponse, StreamingResponse
from sqlalchemy.orm import Session

from registry.datasets import service
from registry.datasets.schemas import DatasetCreate, DatasetOut
from registry.infra.deps import DatabaseDep, PushToken, Reader, SettingsDep, StoreDep
from registry.infra.downloads import StoredFile, file_response, find_file
from registry.infra.schemas import FileOut, PageOut, created_or_existing
from registry.models.schemas import FinalizeRequest
from registry.tables import Dataset, Status
from registry.uploads.flow import SHA256_HEADER, store_request

router = APIRouter(prefix="/datasets", tags=["datasets"])


def _out(dataset: Dataset) -> DatasetOut:
    return DatasetOut.of(dataset, service.needs_tokenizer(dataset))


@router.post("", status_code=status.HTTP_201_CREATED,
             responses={200: {"model": DatasetOut}, 201: {"model": DatasetOut}})
async def create_dataset(body: DatasetCreate, db: DatabaseDep, settings: SettingsDep,
                         token: PushToken) -> JSONResponse:
    """Start a push: 201 with a new draft, or 200 with this token's own pending draft of
    the name (its `files` already uploaded), resumed, or with the finalized data set
    when `files` are exactly its files. Then upload files and finalize."""
    def create(session: Session) -> tuple[DatasetOut, bool]:
        dataset, created = service.start_push(session, settings, body.name,
                                              body.description, token.id, body.files)
        return _out(service.get_dataset(session, dataset.name)), created

    out, created = await db.write(create)
    return created_or_existing(out, created)


@router.get("", response_model=PageOut[DatasetOut])
async def list_datasets(
    settings: SettingsDep, reader: Reader,
    state: Annotated[Literal["pending", "ready"] | None, Query(
        alias="status", description="only drafts (pending) or finalized (ready)")] = None,
    limit: Annotated[int | None, Query(description="page size (capped)")] = None,
    page_token: str | None = None,
) -> Response:
    def page(session: Session) -> PageOut[DatasetOut]:
        found = service.list_datasets(session, settings, Status(state) if state else None,
                                      limit, page_token)
        return PageOut(items=[_out(d) for d in found.items],
                       next_page_token=found.next_page_token)

    return await reader.json(page)


@router.get("/{name}", response_model=DatasetOut)
async def get_dataset(name: str, reader: Reader) -> Response:
    return await reader.json(lambda session: _out(service.get_dataset(session, name)))


@router.put("/{name}/files/{filename:path}", status_code=status.HTTP_201_CREATED,
            responses={200: {"model": FileOut}, 201: {"model": FileOut}})
async def upload_dataset_file(name: str, filename: str, request: Request, store: StoreDep,
                              db: DatabaseDep, settings: SettingsDep,
                              token: PushToken) -> JSONResponse:
    """Upload one file: UTF-8 .txt, .jsonl with a string "text" per line, or .safetensors
    token ids (an integer `input_ids` [n, seq]); checked whole before anything is kept."""
    target = await db.write(  # a write: it touches the draft
        lambda session: service.upload_target(session, name, filename, settings,
                                              request.headers.get(SHA256_HEADER)))
    result = await store_request(request, store, db, target, token_id=token.id,
                                 idle_timeout_s=settings.UPLOAD_IDLE_TIMEOUT_SECONDS)
    # 200: another run of this push finalized the draft with these bytes already.
    return created_or_existing(FileOut(filename=filename, sha256=result.sha256,
                                       size=result.size), result.new)


@router.post("/{name}/finalize")
async def finalize_dataset(name: str, db: DatabaseDep, _: PushToken,
                           body: FinalizeRequest | None = None) -> DatasetOut:
    expected = body.files if body is not None else None
    return await db.write(
        lambda session: _out(service.finalize_dataset(session, name, expected)))


@router.delete("/{name}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_dataset(name: str, db: DatabaseDep, token: PushToken) -> Response:
    """A pending draft: any token with `push`. A finalized data set: `admin`."""
    await db.write(lambda session: service.delete_dataset(session, name, token.scopes))
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/{name}/files/{filename:path}")
async def download_dataset_file(name: str, filename: str, store: StoreDep,
                                reader: Reader) -> StreamingResponse:
    def locate(session: Session) -> StoredFile:
        found = service.get_dataset(session, name)
        return find_file(found.files, filename, f"data set {found.name!r}")

    return await file_response(store, await reader.read(locate))
