"""The write protocol for one uploaded file, shared by models and adapters.

stream to a staging key (hashing and validating on the way) → verify the sha256 →
commit to `blobs/sha256/<hex>` → one short DB transaction records the rows. No
transaction is open while the body streams. If recording fails, the committed blob
is unreferenced and garbage collection removes it after the grace period.
"""

from __future__ import annotations

from collections.abc import Callable

from fastapi import Request
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from registry.auth.service import check_not_revoked
from registry.database import Database
from registry.storage.base import BlobStore
from registry.tables import Token
from registry.uploads.pipeline import UploadPipeline, UploadResult
from registry.uploads.receive import check_declared_length, receive_upload
from registry.uploads.rules import FileRule

SHA256_HEADER = "x-content-sha256"


async def store_upload(
    request: Request, store: BlobStore, database: Database, filename: str, rule: FileRule,
    record: Callable[[Session, UploadResult], object], *, token: Token,
    idle_timeout_s: float | None = None,
) -> UploadResult:
    check_declared_length(request, rule.max_bytes, filename)
    expected = request.headers.get(SHA256_HEADER)
    pipeline = await run_in_threadpool(UploadPipeline, store, filename, rule, expected)
    result = await receive_upload(request, pipeline, idle_timeout_s=idle_timeout_s)
    try:
        await run_in_threadpool(store.commit, result.staged, result.sha256)
    except BaseException:
        await run_in_threadpool(store.discard, result.staged)
        raise

    def recording(session: Session) -> None:
        # The upload may have taken minutes: a token revoked meanwhile records nothing.
        check_not_revoked(session, token.id)
        record(session, result)

    await database.write(recording)
    return result
