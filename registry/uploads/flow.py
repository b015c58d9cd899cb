"""The write protocol for one file, shared by models, adapters, data sets and job output.

stream to a staging key (hashing and validating on the way) → verify the sha256 →
commit to `blobs/sha256/<hex>` → one short DB transaction records the rows. No
transaction is open while the bytes stream. If recording fails, the committed blob
is unreferenced and garbage collection removes it after the grace period.

An upload to an owner that another run of the same push finalized, with these very
bytes under this name, is answered as done (`Uploaded.new` False): identical pushes
racing each other all succeed (docs/architecture.md, "Drafts").

`store_stream` takes any async byte source; `store_request` is the HTTP caller.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass
from pathlib import Path

from fastapi import Request
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from registry.auth.service import check_not_revoked
from registry.blobs.repository import BlobRepository
from registry.errors import NotPending
from registry.infra.database import Database
from registry.storage.base import BlobStore
from registry.tables import AdapterFile, DatasetFile, ModelFile
from registry.uploads.pipeline import UploadPipeline, UploadResult
from registry.uploads.receive import check_declared_length, receive_upload
from registry.uploads.rules import FileRule

SHA256_HEADER = "x-content-sha256"
_FILE_CHUNK_BYTES = 8 * 2**20


@dataclass(frozen=True)
class Uploaded:
    """What an upload left: the file's bytes, and whether this request recorded them
    (False: the finalized owner held them already)."""

    sha256: str
    size: int
    new: bool = True


@dataclass(frozen=True)
class UploadTarget:
    """Whose file an upload becomes, the rule its bytes must pass, and how to re-check
    at record time that the owner still takes files (it may have been finalized or
    deleted while the bytes streamed)."""

    filename: str
    row_type: type[ModelFile] | type[AdapterFile] | type[DatasetFile]
    owner_column: str
    owner_id: int
    rule: FileRule
    recheck: Callable[[Session], object]
    # Set when the owner is finalized and holds `filename` with the sha256 the client
    # declared: the upload is answered from it, and its body is not read.
    held: Uploaded | None = None


async def store_request(request: Request, store: BlobStore, database: Database,
                        target: UploadTarget, *, token_id: int,
                        idle_timeout_s: float | None = None) -> Uploaded:
    """An HTTP body through the write protocol (Content-Length checked before reading)."""
    if target.held is not None:
        return target.held
    check_declared_length(request, target.rule.max_bytes, target.filename)
    return await store_stream(request.stream(), store, database, target, token_id=token_id,
                              expected_sha256=request.headers.get(SHA256_HEADER),
                              idle_timeout_s=idle_timeout_s)


async def store_stream(chunks: AsyncGenerator[bytes, None], store: BlobStore,
                       database: Database, target: UploadTarget, *, token_id: int | None,
                       expected_sha256: str | None = None,
                       idle_timeout_s: float | None = None) -> Uploaded:
    """Stage, validate, commit and record one file; all of it or nothing visible."""
    pipeline = await run_in_threadpool(UploadPipeline, store, target.filename, target.rule,
                                       expected_sha256)
    result = await receive_upload(chunks, pipeline, idle_timeout_s=idle_timeout_s)
    await run_in_threadpool(commit_staged, store, result)

    def record(session: Session) -> Uploaded:
        if token_id is not None:
            # The upload may have taken minutes: a token revoked meanwhile records nothing.
            check_not_revoked(session, token_id)
        blobs = BlobRepository(session)
        try:
            target.recheck(session)
        except NotPending:  # finalized while the bytes streamed: by a run of this push?
            if not blobs.holds(target.row_type, target.owner_column, target.owner_id,
                               target.filename, result.sha256):
                raise
            return Uploaded(result.sha256, result.size, new=False)
        blobs.attach(target.row_type, target.owner_column, target.owner_id,
                     target.filename, result.sha256, result.size, result.header)
        return Uploaded(result.sha256, result.size)

    return await database.write(record)


def store_file(store: BlobStore, path: Path, rule: FileRule) -> UploadResult:
    """A local file through the same stage → validate → commit steps (the worker's output).

    Recording it is the caller's: a job registers all its files in the one transaction
    that ends the job.
    """
    pipeline = UploadPipeline(store, path.name, rule)
    try:
        with path.open("rb") as f:
            while chunk := f.read(_FILE_CHUNK_BYTES):
                pipeline.feed(chunk)
    except BaseException:
        pipeline.abort()
        raise
    result = pipeline.finish()
    commit_staged(store, result)
    return result


def commit_staged(store: BlobStore, result: UploadResult) -> None:
    """Make the staged object the blob `result.sha256`, or leave nothing staged."""
    try:
        store.commit(result.staged, result.sha256)
    except BaseException:
        store.discard(result.staged)
        raise
